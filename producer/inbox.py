"""One reply list for all of a process's waiting `ask` calls, read by one connection.

Waiting on a reply list per request (BLPOP) holds a pooled connection for every request in flight and costs
a Redis command each. An `AsyncClient` serves many concurrent asks (the gateway is one), so its asks name one
list instead, this inbox, as their `reply_to`. One listener pops whatever replies are there, up to
`BATCH` at a time, and hands each to the ask waiting for its request id. A reply that nobody waits for any
more (its ask timed out or was cancelled) is dropped, so it never reaches a later call. Workers give the
list the reply TTL on every push, so the inbox of a process that died expires.

`submit` does not use it: a fire-and-forget reply stays on its own list for whoever reads it later.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import cast

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from schemas.keys import reply_key
from schemas.messages import ChatDelta, ChatReply, ReplyEvent, parse_reply_event

log = logging.getLogger(__name__)

# Replies popped per command; under load one pop serves many waiting asks.
BATCH = 256
# How long one pop blocks; the listener stops after a pop that found nothing and nobody waiting.
LISTEN_S = 1.0
# Pause after a failed pop (Redis restarting), before trying again.
RETRY_S = 0.5
# A listener whose pop has not come back this long past LISTEN_S is stuck (/healthz says degraded).
STUCK_S = 2.0


class ReplyInbox:
    def __init__(self, redis: aioredis.Redis) -> None:
        # Keeps one connection of the shared pool while it listens, so a pop does not go through the pool.
        self.redis = redis.client()
        self.key = reply_key(f"inbox-{uuid.uuid4().hex}")
        self._waiting: dict[str, asyncio.Future[ChatReply]] = {}
        # Streamed asks: every event (deltas, then the reply) in order.
        self._streams: dict[str, asyncio.Queue[ReplyEvent]] = {}
        self._listener: asyncio.Task[None] | None = None
        # When the listener last started a pop; and per streamed ask, the next delta `seq` it expects: a task
        # redelivered after its worker died streams again from seq 0, and what the caller saw is not sent twice.
        self._popping_since = time.monotonic()
        self._next_seq: dict[str, int] = {}

    def expect(self, request_id: str) -> asyncio.Future[ChatReply]:
        """Register before sending: the reply can be popped while the send is still being awaited."""
        future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self._start()
        return future

    def expect_stream(self, request_id: str) -> asyncio.Queue[ReplyEvent]:
        """Like `expect`, for a streamed ask: its deltas and then its reply arrive on the queue."""
        queue: asyncio.Queue[ReplyEvent] = asyncio.Queue()
        self._streams[request_id] = queue
        self._start()
        return queue

    def _start(self) -> None:
        if self._listener is None or self._listener.done():
            self._popping_since = time.monotonic()
            self._listener = asyncio.create_task(self._listen(), name=f"dejavu reply inbox {self.key}")

    def discard(self, request_id: str) -> None:
        """Stop waiting: a reply that comes later is dropped."""
        self._waiting.pop(request_id, None)
        self._streams.pop(request_id, None)
        self._next_seq.pop(request_id, None)

    def stuck(self) -> str | None:
        """Why replies are not being delivered, when asks wait and the listener's pop has not come back in time."""
        if not (self._waiting or self._streams) or self._listener is None or self._listener.done():
            return None
        waited = time.monotonic() - self._popping_since
        if waited < LISTEN_S + STUCK_S:
            return None
        return f"the gateway's reply listener has waited {waited:.0f}s on one pop: replies are not being delivered"

    async def _listen(self) -> None:
        while True:
            self._popping_since = time.monotonic()
            try:
                popped = await self.redis.blmpop(LISTEN_S, 1, self.key, direction="LEFT", count=BATCH)
            except RedisError as exc:
                # Waiting asks keep their own deadlines; replies pushed meanwhile stay on the list.
                log.warning("reply inbox %s: pop failed (%s); retrying in %.1fs", self.key, exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            if popped is None:
                if not self._waiting and not self._streams:
                    return
                continue
            for raw in cast("list[bytes]", popped[1]):
                self._deliver(raw)
            # Let the asks just answered write their responses before this loop sends its next pop.
            await asyncio.sleep(0)

    def _deliver(self, raw: bytes) -> None:
        try:
            event = parse_reply_event(raw)
        except ValidationError as exc:
            log.error("reply inbox %s: dropped a reply that does not validate: %s", self.key, exc)
            return
        stream = self._streams.get(event.request_id)
        if stream is not None:
            if isinstance(event, ChatDelta):
                if event.seq < self._next_seq.get(event.request_id, 0):
                    return  # sent before by a run of the task that did not finish
                self._next_seq[event.request_id] = event.seq + 1
            stream.put_nowait(event)
            return
        future = self._waiting.pop(event.request_id, None)
        if isinstance(event, ChatReply) and future is not None and not future.done():
            future.set_result(event)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self.redis.aclose(close_connection_pool=False)
