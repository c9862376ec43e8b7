"""Test controls: fault markers in the question, and the /standin/* endpoints that let tests see and steer the calls.

Markers in the question inject faults: `[[standin:status=500]]` answers that HTTP status with an error body,
`[[standin:sleep=5]]` makes the first token wait 5 s, `[[standin:malformed]]` answers a body (or a stream chunk)
that is no chat completion, `[[standin:drop-after=3]]` closes the connection after 3 tokens of a stream (without
[DONE] nor the end of the chunked body; not streamed: instead of the answer), `[[standin:hold-after=2]]` pauses
a stream after 2 tokens until POST /standin/release, and (not streamed) `[[standin:as=refusal]]`,
`as=bad_args` (a tool call whose arguments are not JSON), `as=length` or `as=content_filter` shape the answer.

`GET /standin/calls?q=TEXT` tells how many times a question was asked (tests count LLM calls);
`GET /standin/concurrency` the calls in flight and the most seen at once since the last read;
`GET /standin/streams` the streams in progress ("in_progress": id as in their chunks, question, tokens_sent,
tokens_total, held) and how many "finished", were "dropped" by a marker or "abandoned" by their client;
`POST /standin/release[?id=ID]` lets the streams in progress (or one) go on past their hold-after marker.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MARKER = re.compile(r"\[\[standin:([\w-]+)(?:=([\w.]+))?\]\]")
ENDINGS = ("finished", "dropped", "abandoned")


def faults(question: str) -> dict[str, str]:
    """The markers in a question, by name (value "" when a marker has none)."""
    return dict(MARKER.findall(question))


@dataclass
class Stream:
    """A stream in progress, as GET /standin/streams reports it."""

    id: str
    question: str
    tokens_total: int
    tokens_sent: int = 0
    held: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def report(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "tokens_sent": self.tokens_sent,
                "tokens_total": self.tokens_total, "held": self.held}  # fmt: skip


CALLS: web.AppKey[Counter[str]] = web.AppKey("calls", Counter)
# [calls in flight, most in flight at once since the last GET /standin/concurrency]
IN_FLIGHT: web.AppKey[list[int]] = web.AppKey("in_flight", list)
STREAMS: web.AppKey[dict[str, Stream]] = web.AppKey("streams", dict)
ENDED: web.AppKey[Counter[str]] = web.AppKey("ended", Counter)


@contextmanager
def counted(app: web.Application, question: str) -> Iterator[None]:
    """Counts a call to the question, and keeps it among the calls in flight while it runs."""
    app[CALLS][question] += 1
    flight = app[IN_FLIGHT]
    flight[0] += 1
    flight[1] = max(flight)
    try:
        yield
    finally:
        flight[0] -= 1


@contextmanager
def tracked(app: web.Application, stream: Stream) -> Iterator[list[str]]:
    """Lists the stream as in progress while it runs; the caller sets the one-item list to how it ended."""
    app[STREAMS][stream.id] = stream
    ending = ["abandoned"]  # stays so when the client goes away
    try:
        yield ending
    finally:
        del app[STREAMS][stream.id]
        app[ENDED][ending[0]] += 1


async def checkpoint(stream: Stream, marks: dict[str, str]) -> bool:
    """Holds the stream here if a hold-after marker says so; whether a drop-after marker ends it here."""
    if "hold-after" in marks and int(marks["hold-after"]) == stream.tokens_sent:
        stream.held = True
        await stream.release.wait()
        stream.held = False
    return "drop-after" in marks and int(marks["drop-after"]) == stream.tokens_sent


def drop(request: web.Request) -> None:
    # Closing the transport ends the connection without the rest of the body: aiohttp's final write then fails.
    if request.transport is not None:
        request.transport.close()


async def calls(request: web.Request) -> web.Response:
    counter = request.app[CALLS]
    question = request.query.get("q")
    count = counter[question] if question is not None else sum(counter.values())
    return web.json_response({"calls": count})


async def concurrency(request: web.Request) -> web.Response:
    flight = request.app[IN_FLIGHT]
    now, peak = flight
    flight[1] = now
    return web.json_response({"in_flight": now, "peak": peak})


async def streams(request: web.Request) -> web.Response:
    ended = request.app[ENDED]
    in_progress = [s.report() for s in request.app[STREAMS].values()]
    return web.json_response({"in_progress": in_progress, **{ending: ended[ending] for ending in ENDINGS}})


async def release(request: web.Request) -> web.Response:
    wanted = request.query.get("id")
    chosen = [s for s in request.app[STREAMS].values() if wanted in (None, s.id)]
    for stream in chosen:
        stream.release.set()
    return web.json_response({"released": len(chosen)})


def add_controls(app: web.Application) -> None:
    """The counters and the /standin/* routes, on the stand-in's app."""
    app[CALLS] = Counter()
    app[IN_FLIGHT] = [0, 0]
    app[STREAMS] = {}
    app[ENDED] = Counter()
    app.router.add_get("/standin/calls", calls)
    app.router.add_get("/standin/concurrency", concurrency)
    app.router.add_get("/standin/streams", streams)
    app.router.add_post("/standin/release", release)
