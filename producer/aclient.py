"""The Python client's verbs, for event loops (the HTTP gateway, async services); `producer.client.Client` runs
these same verbs for synchronous callers.

`ask` waits on the client's reply inbox (producer.inbox), shared by all its asks; `get_reply` pops a
submitted request's own reply list with BLPOP. Neither blocks the loop. One instance per process is meant
to be shared by every task: its pools and its inbox are safe for that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from types import TracebackType
from typing import TypeVar, Unpack, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.exceptions import RedisError

from producer.base import (
    PING_TIMEOUT_S,
    RETRIES,
    RETRY_BACKOFF,
    FeedbackOptions,
    ForgetCall,
    ForgetOptions,
    ReplyTimeout,
    RequestBuilder,
    Response,
    block_waits,
    check_enqueued,
    enqueue_args,
    forget_message,
    lookup_message,
    make_celery,
    ping,
    redis_options,
    reply_wait_s,
)
from producer.inbox import ReplyInbox
from producer.resend import Resender
from producer.settings import ProducerSettings, get_settings
from schemas.enqueue import ENQUEUE_SCRIPT
from schemas.keys import LOOKUP_QUEUE, WRITEBACK_QUEUE, reply_key
from schemas.messages import ChatReply, ChatRequest, ForgetReply, ReplyEvent
from schemas.requests import RequestOptions

E = TypeVar("E")


class AsyncClient(RequestBuilder):
    def __init__(self, settings: ProducerSettings | None = None) -> None:
        self.settings = settings or get_settings()
        pool = aioredis.BlockingConnectionPool.from_url(
            self.settings.redis_url, retry=Retry(RETRY_BACKOFF, RETRIES), **redis_options(self.settings)
        )
        self.redis = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
        self._enqueue = self.redis.register_script(ENQUEUE_SCRIPT)
        self.inbox = ReplyInbox(self.redis)
        # Sends again what the queue lost (producer.resend): a request is never lost at the queue's edges.
        self.resender = Resender(self.redis, self.settings.resend_after_s)
        self.celery = make_celery(self.settings)

    async def send(self, request: ChatRequest) -> str:
        """Enqueue a validated request; returns its id."""
        message = lookup_message(request)
        keys, args = enqueue_args(request, message, self.settings)
        check_enqueued(await self._enqueue(keys=keys, args=args), self.settings)
        self.resender.watch(request.request_id, message, request.reply_to, request.deadline)
        return request.request_id

    async def submit(self, question: str | None = None, **options: Unpack[RequestOptions]) -> str:
        """Fire and forget: enqueue and return the request id; read the reply later with `get_reply`."""
        return await self.send(self.request(question, **options))

    # The timeout is BLPOP's own, enforced by Redis, not a cancel scope: hence noqa ASYNC109 here and below.
    async def get_reply(self, request_id: str, timeout: float) -> ChatReply:  # noqa: ASYNC109
        """The reply to a sent request; ReplyTimeout if none arrives within `timeout` seconds."""
        raw = await self._pop(request_id, timeout, LOOKUP_QUEUE)
        self.resender.done(request_id)
        return ChatReply.model_validate_json(raw)

    async def _pop(self, request_id: str, timeout: float, queue: str) -> bytes:  # noqa: ASYNC109
        key, raw = reply_key(request_id), None
        for wait in block_waits(timeout):
            # BLPOP's timeout 0 means "forever": the last look is a non-blocking one.
            if wait <= 0:
                raw = cast("bytes | None", await self.redis.lpop(key))
                break
            popped = cast("tuple[bytes, bytes] | None", await self.redis.blpop([key], timeout=wait))
            if popped is not None:
                raw = popped[1]
                break
        if raw is None:
            raise await self._timed_out(request_id, timeout, queue)
        return raw

    async def ask(self, question: str | None = None, **options: Unpack[RequestOptions]) -> ChatReply:
        """Enqueue and wait for the reply (or its typed error)."""
        request = self.request(question, **options)
        return await self.ask_request(request)

    async def ask_request(self, request: ChatRequest) -> ChatReply:
        """Send an already built request and wait for its reply, which comes to this client's inbox."""
        rid = request.request_id
        # The inbox key is a valid reply_to by construction: no need to validate the request again.
        request = request.model_copy(update={"reply_to": self.inbox.key})
        reply = self.inbox.expect(rid)
        try:
            await self.send(request)
            return await self._wait(request, reply)
        finally:
            self.inbox.discard(rid)
            self.resender.done(rid)

    async def ask_stream(
        self, question: str | None = None, **options: Unpack[RequestOptions]
    ) -> AsyncGenerator[ReplyEvent]:
        """Ask with the answer streamed: a miss yields ChatDeltas as the LLM writes them, then the ChatReply (the
        whole answer, or an error if the stream broke); a hit yields its ChatReply alone."""
        options["stream"] = True
        request = self.request(question, **options)
        async for event in self.stream_request(request):
            yield event

    async def stream_request(self, request: ChatRequest) -> AsyncIterator[ReplyEvent]:
        """Send an already built request (`stream` set) and yield its events as they come to the inbox."""
        rid = request.request_id
        request = request.model_copy(update={"reply_to": self.inbox.key})
        events = self.inbox.expect_stream(rid)
        try:
            await self.send(request)
            while True:
                event = await self._wait(request, events.get())
                yield event
                if isinstance(event, ChatReply):
                    return
        finally:
            self.inbox.discard(rid)
            self.resender.done(rid)

    async def _wait(self, request: ChatRequest, event: Awaitable[E]) -> E:
        """The one place a sent request's reply (or next streamed event) is awaited: until its deadline and grace."""
        wait_s = reply_wait_s(request)
        try:
            async with asyncio.timeout(wait_s):
                return await event
        except TimeoutError:
            raise await self._timed_out(request.request_id, wait_s, LOOKUP_QUEUE) from None

    async def lookup(self, question: str | None = None, **options: Unpack[RequestOptions]) -> ChatReply:
        """Look the question up without ever asking the LLM: a reply with `hit` true (the cached answer, its tier,
        similarity, entry id and the usage it saved) or false (a miss, at once). Same options as `ask`."""
        return await self.ask_request(self.lookup_request(question, **options))

    async def store(
        self, question: str | None = None, *, response: Response, **options: Unpack[RequestOptions]
    ) -> ChatReply:
        """Store an answer got from another model as the answer to this request: `response` is its text, a
        StoredAnswer, or the provider's chat.completion. The reply names the entry id once the write-back is
        queued; ValueError, with nothing sent, for an empty, cut-short or refused answer or a malformed request."""
        return await self.ask_request(self.store_request(question, response=response, **options))

    async def forget(self, entry_id: str | None = None, **options: Unpack[ForgetOptions]) -> ForgetReply:
        """Remove entries from every tier and wait for the counts: one entry id (only of `tenant`, if given), the
        entry of `question` in the scope of tenant/model/system, or with `all_entries=True` every entry of `tenant`."""
        return await self.run_forget(self.forget_call(entry_id, **options))

    async def feedback(self, entry: str | ChatReply, **options: Unpack[FeedbackOptions]) -> ForgetReply:
        """Mark an answer bad: remove its entry everywhere and never store that question/answer pair again."""
        return await self.run_forget(self.feedback_call(entry, **options))

    async def run_forget(self, call: ForgetCall) -> ForgetReply:
        """Send a forget to the workers (writeback queue) and wait for its reply."""
        request, wait_s = call
        await self.redis.lpush(WRITEBACK_QUEUE, forget_message(request))
        return ForgetReply.model_validate_json(await self._pop(request.request_id, wait_s, WRITEBACK_QUEUE))

    async def workers(self, timeout: float = 1.0, limit: int | None = None) -> list[str]:  # noqa: ASYNC109
        """Names of the worker nodes that answer a ping now; with `limit`, stop waiting once that many answered."""
        return await asyncio.to_thread(ping, self.celery, timeout, limit)

    async def wait_for_workers(self, count: int = 1, timeout: float = 120.0) -> list[str]:  # noqa: ASYNC109
        """Wait until `count` worker nodes answer (they load the model before consuming)."""
        end = time.monotonic() + timeout
        found: list[str] = []
        while time.monotonic() < end:
            found = await self.workers()
            if len(found) >= count:
                return found
            await asyncio.sleep(0.5)
        raise TimeoutError(f"fewer than {count} worker(s) answered a ping within {timeout:.0f}s (found {found})")

    async def _timed_out(self, request_id: str, timeout: float, queue: str) -> ReplyTimeout:  # noqa: ASYNC109
        depth: int | None
        workers: list[str] | None
        try:
            depth = int(await self.redis.llen(queue))
        except RedisError:
            depth = None
        try:
            workers = await self.workers(PING_TIMEOUT_S)
        except Exception:  # the diagnosis must not hide the timeout it explains
            workers = None
        return ReplyTimeout(request_id, timeout, depth, workers, queue)

    async def aclose(self) -> None:
        await self.resender.aclose()
        await self.inbox.aclose()
        await self.redis.aclose()
        await asyncio.to_thread(self.celery.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
