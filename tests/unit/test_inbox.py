"""The reply inbox hands a streamed ask each delta once, even when a redelivered task streams it again, and says
when its listener is stuck."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from producer import inbox as inbox_module
from producer.inbox import ReplyInbox
from schemas.messages import ChatDelta, ChatReply, ReplyEvent


def delta(seq: int, text: str) -> bytes:
    return ChatDelta(request_id="r1", seq=seq, delta={"content": text}).model_dump_json().encode()


def test_a_redelivered_streams_deltas_reach_the_caller_once() -> None:
    async def run() -> list[ReplyEvent]:
        # A Redis nobody listens on: the listener's pops fail and retry; this test feeds the inbox itself.
        inbox = ReplyInbox(aioredis.Redis(port=9, socket_connect_timeout=0.1))
        queue = inbox.expect_stream("r1")
        first_run, second_run = [delta(0, "Gout "), delta(1, "is")], [delta(0, "Gout "), delta(1, "is"), delta(2, " x")]
        for raw in [*first_run, *second_run, ChatReply(request_id="r1", answer="Gout is x").model_dump_json().encode()]:
            inbox._deliver(raw)
        events = [queue.get_nowait() for _ in range(queue.qsize())]
        await inbox.aclose()
        return events

    events = asyncio.run(run())
    texts = [e.delta["content"] for e in events if isinstance(e, ChatDelta)]
    assert texts == ["Gout ", "is", " x"] and isinstance(events[-1], ChatReply)


def test_a_listener_whose_pop_does_not_come_back_is_reported_stuck() -> None:
    async def run() -> tuple[str | None, str | None]:
        inbox = ReplyInbox(aioredis.Redis(port=9, socket_connect_timeout=0.1))
        inbox.expect("r2")
        fresh = inbox.stuck()
        inbox._popping_since = time.monotonic() - inbox_module.LISTEN_S - inbox_module.STUCK_S - 1
        stale = inbox.stuck()
        await inbox.aclose()
        return fresh, stale

    fresh, stale = asyncio.run(run())
    assert fresh is None and stale is not None and "reply listener" in stale
