"""A Python client: enqueue a chat request on the `lookup` queue and wait on its reply list.

It needs only the broker URL; it sends the task by name, so it never imports the worker's code.
Safe to share across threads: Celery's producer pool and redis-py's connection pool are.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Unpack, cast

import redis
from redis.retry import Retry

from producer.base import (
    PING_TIMEOUT_S,
    REPLY_GRACE_S,
    RETRIES,
    RETRY_BACKOFF,
    FeedbackOptions,
    ForgetCall,
    ForgetOptions,
    ReplyTimeout,
    RequestBuilder,
    block_waits,
    check_enqueued,
    forget_message,
    lookup_message,
    make_celery,
    redis_options,
    reply_wait_s,
)
from producer.lua import ENQUEUE_BOUNDED
from producer.settings import ProducerSettings, get_settings
from schemas.keys import LOOKUP_QUEUE, WRITEBACK_QUEUE, reply_key
from schemas.messages import ChatReply, ChatRequest, ForgetReply, ReplyEvent, parse_reply_event
from schemas.requests import RequestOptions
from schemas.taskwire import ping

__all__ = ["REPLY_GRACE_S", "Client", "ReplyTimeout"]


class Client(RequestBuilder):
    def __init__(self, settings: ProducerSettings | None = None) -> None:
        self.settings = settings or get_settings()
        pool = redis.BlockingConnectionPool.from_url(
            self.settings.redis_url, retry=Retry(RETRY_BACKOFF, RETRIES), **redis_options(self.settings)
        )
        self.redis = redis.Redis.from_pool(pool)  # owns the pool: close() closes it
        self._enqueue = self.redis.register_script(ENQUEUE_BOUNDED)
        self.celery = make_celery(self.settings)

    def send(self, request: ChatRequest) -> str:
        """Enqueue a validated request; returns its id."""
        result = self._enqueue(
            keys=[LOOKUP_QUEUE],
            args=[self.settings.max_queue_depth, lookup_message(request), self.settings.max_queue_bytes],
        )
        check_enqueued(int(result), self.settings)
        return request.request_id

    def submit(self, question: str | None = None, **options: Unpack[RequestOptions]) -> str:
        """Fire and forget: enqueue and return the request id; read the reply later with `get_reply`."""
        return self.send(self.request(question, **options))

    def get_reply(self, request_id: str, timeout: float) -> ChatReply:
        """The reply to a sent request; ReplyTimeout if none arrives within `timeout` seconds."""
        return ChatReply.model_validate_json(self._pop(request_id, timeout, LOOKUP_QUEUE))

    def _pop(self, request_id: str, timeout: float, queue: str) -> bytes:
        key, raw = reply_key(request_id), None
        for wait in block_waits(timeout):
            # BLPOP's timeout 0 means "forever": the last look is a non-blocking one.
            if wait <= 0:
                raw = cast("bytes | None", self.redis.lpop(key))
                break
            popped = cast("tuple[bytes, bytes] | None", self.redis.blpop([key], timeout=wait))
            if popped is not None:
                raw = popped[1]
                break
        if raw is None:
            raise self._timed_out(request_id, timeout, queue)
        return raw

    def ask(self, question: str | None = None, **options: Unpack[RequestOptions]) -> ChatReply:
        """Enqueue and wait for the reply (or its typed error)."""
        request = self.request(question, **options)
        self.send(request)
        return self.get_reply(request.request_id, reply_wait_s(request))

    def ask_stream(self, question: str | None = None, **options: Unpack[RequestOptions]) -> Iterator[ReplyEvent]:
        """Ask with the answer streamed: a miss yields ChatDeltas as the LLM writes them, then the ChatReply (the
        whole answer, or an error if the stream broke); a hit yields its ChatReply alone."""
        options["stream"] = True
        request = self.request(question, **options)
        self.send(request)
        while True:
            event = parse_reply_event(self._pop(request.request_id, reply_wait_s(request), LOOKUP_QUEUE))
            yield event
            if isinstance(event, ChatReply):
                return

    def forget(self, entry_id: str | None = None, **options: Unpack[ForgetOptions]) -> ForgetReply:
        """Remove entries from every tier and wait for the counts: one entry id (only of `tenant`, if given), the
        entry of `question` in the scope of tenant/model/system, or with `all_entries=True` every entry of `tenant`."""
        return self.run_forget(self.forget_call(entry_id, **options))

    def feedback(self, entry: str | ChatReply, **options: Unpack[FeedbackOptions]) -> ForgetReply:
        """Mark an answer bad: remove its entry everywhere and never store that question/answer pair again."""
        return self.run_forget(self.feedback_call(entry, **options))

    def run_forget(self, call: ForgetCall) -> ForgetReply:
        """Send a forget to the workers (writeback queue) and wait for its reply."""
        request, wait_s = call
        self.redis.lpush(WRITEBACK_QUEUE, forget_message(request))
        return ForgetReply.model_validate_json(self._pop(request.request_id, wait_s, WRITEBACK_QUEUE))

    def workers(self, timeout: float = 1.0) -> list[str]:
        """Names of the worker nodes that answer a ping now."""
        return ping(self.celery, timeout)

    def wait_for_workers(self, count: int = 1, timeout: float = 120.0) -> list[str]:
        """Block until `count` worker nodes answer (they load the model before consuming)."""
        end = time.monotonic() + timeout
        found: list[str] = []
        while time.monotonic() < end:
            found = self.workers()
            if len(found) >= count:
                return found
            time.sleep(0.5)
        raise TimeoutError(f"fewer than {count} worker(s) answered a ping within {timeout:.0f}s (found {found})")

    def _timed_out(self, request_id: str, timeout: float, queue: str) -> ReplyTimeout:
        depth: int | None
        workers: list[str] | None
        try:
            depth = int(self.redis.llen(queue))
        except redis.RedisError:
            depth = None
        try:
            workers = self.workers(PING_TIMEOUT_S)
        except Exception:  # the diagnosis must not hide the timeout it explains
            workers = None
        return ReplyTimeout(request_id, timeout, depth, workers, queue)

    def close(self) -> None:
        self.redis.close()
        self.celery.close()
