"""The Python client for synchronous callers: the verbs of `producer.aclient.AsyncClient`, each call run to its end
on the client's own event loop thread, so every verb is written once.

It needs only the broker URL; it sends tasks by name, so it never imports the worker's code. Safe to share across
threads: every call goes to the one loop, where the async client serves many at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar, Unpack

from celery import Celery

from producer import base
from producer.aclient import AsyncClient
from producer.base import REPLY_GRACE_S, ReplyTimeout
from producer.settings import ProducerSettings, get_settings
from schemas.messages import ChatReply, ChatRequest, ForgetReply, ReplyEvent
from schemas.requests import RequestOptions

__all__ = ["REPLY_GRACE_S", "Client", "ReplyTimeout"]

T = TypeVar("T")


class Client(base.RequestBuilder):
    def __init__(self, settings: ProducerSettings | None = None) -> None:
        self.settings = settings or get_settings()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dejavu-client", daemon=True)
        self._thread.start()
        self._async = self._run(_open(self.settings))

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        """Run one async verb on the client's loop and wait for its result (or its exception)."""
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    @property
    def celery(self) -> Celery:
        return self._async.celery

    def ask_request(self, request: ChatRequest) -> ChatReply:
        """Send an already built request (an ask, lookup-only or store request) and block for its reply."""
        return self._run(self._async.ask_request(request))

    def send(self, request: ChatRequest) -> str:
        """Enqueue a validated request (an ask, lookup-only or store request); returns its id."""
        return self._run(self._async.send(request))

    def submit(self, question: str | None = None, **options: Unpack[RequestOptions]) -> str:
        """Enqueue without waiting; the reply stays on the request's own list for `get_reply`."""
        return self._run(self._async.submit(question, **options))

    def get_reply(self, request_id: str, timeout: float) -> ChatReply:
        """The reply to a submitted request; ReplyTimeout if none arrives within `timeout` seconds."""
        return self._run(self._async.get_reply(request_id, timeout))

    def ask(self, question: str | None = None, **options: Unpack[RequestOptions]) -> ChatReply:
        """Ask and block until the reply (or its typed error); see AsyncClient.ask."""
        return self._run(self._async.ask(question, **options))

    def ask_stream(self, question: str | None = None, **options: Unpack[RequestOptions]) -> Iterator[ReplyEvent]:
        """Iterate a streamed ask's events (a miss's ChatDeltas, then the ChatReply); see AsyncClient.ask_stream."""
        events = self._async.ask_stream(question, **options)
        try:
            while (event := self._run(_next(events))) is not None:
                yield event
        finally:
            self._run(events.aclose())

    def lookup(self, question: str | None = None, **options: Unpack[RequestOptions]) -> ChatReply:
        """Look up without the LLM and block for the hit or miss; see AsyncClient.lookup."""
        return self._run(self._async.lookup(question, **options))

    def store(
        self, question: str | None = None, *, response: base.Response, **options: Unpack[RequestOptions]
    ) -> ChatReply:
        """Store the caller's own answer and block for the entry id; see AsyncClient.store."""
        return self._run(self._async.store(question, response=response, **options))

    def forget(self, entry_id: str | None = None, **options: Unpack[base.ForgetOptions]) -> ForgetReply:
        """Remove entries from every tier and block for the counts; see AsyncClient.forget."""
        return self._run(self._async.forget(entry_id, **options))

    def feedback(self, entry: str | ChatReply, **options: Unpack[base.FeedbackOptions]) -> ForgetReply:
        """Mark an answer bad and block until it is removed and blocklisted; see AsyncClient.feedback."""
        return self._run(self._async.feedback(entry, **options))

    def run_forget(self, call: base.ForgetCall) -> ForgetReply:
        return self._run(self._async.run_forget(call))

    def workers(self, timeout: float = 1.0) -> list[str]:
        """Names of the worker nodes that answer a ping now."""
        return self._run(self._async.workers(timeout))

    def wait_for_workers(self, count: int = 1, timeout: float = 120.0) -> list[str]:
        """Block until `count` worker nodes answer (they load the model before consuming)."""
        return self._run(self._async.wait_for_workers(count, timeout))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _open(settings: ProducerSettings) -> AsyncClient:
    # Made on the loop that will run it: its pools and inbox belong to that loop.
    return AsyncClient(settings)


async def _next(events: AsyncIterator[ReplyEvent]) -> ReplyEvent | None:
    return await anext(events, None)
