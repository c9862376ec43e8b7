"""Serving: the stand-in's HTTP app, its answers as a `chat.completion` or a server-sent event stream, and its pace.

POST /v1/chat/completions answers in OpenAI's shapes: a `chat.completion`, or with `stream: true` server-sent
events, `data: {chat.completion.chunk}` each, the first delta {"role": "assistant", "content": ""}, one token a
chunk, the last delta {} with the finish_reason, then `data: [DONE]`. With `stream_options: {"include_usage":
true}` every chunk has "usage": null and one more chunk before [DONE] has no choices and the usage.

Pacing: the first token comes --first-token-ms after the request, the next ones --token-ms apart (default 0), and
a non-streamed answer comes when its last token would. Without --first-token-ms the first token (and so with
--token-ms 0 the whole answer, as before streams) takes --delay-ms, ±25 % spread per question.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from worker.local.standin.answer import Reply, compose
from worker.local.standin.controls import Stream, add_controls, checkpoint, counted, drop, faults, tracked
from worker.local.standin.request import Ask, BadRequest, parse

FINGERPRINT = "standin"


@dataclass(frozen=True)
class Pacing:
    """When the tokens come: the command line's flags, in seconds."""

    delay_s: float
    first_token_s: float | None
    token_s: float
    min_tokens: int

    def first_token(self, question: str, sleep: str | None) -> float:
        if sleep:
            return float(sleep)
        if self.first_token_s is not None:
            return self.first_token_s
        # A base delay with +-25% spread per question, like a real model's varying length.
        spread = int(hashlib.sha256(question.encode()).hexdigest()[:4], 16) / 0xFFFF - 0.5
        return self.delay_s * (1 + spread / 2)


PACING: web.AppKey[Pacing] = web.AppKey("pacing", Pacing)


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> web.Response:
    kind = "server_error" if status >= 500 else "requests" if status == 429 else "invalid_request_error"
    error = {"message": message, "type": kind, "param": param, "code": code}
    return web.json_response({"error": error}, status=status)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    try:
        ask = parse(await request.json())
    except BadRequest as exc:
        return _error(400, str(exc), exc.param, exc.code)
    except ValueError:
        return _error(400, "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.")
    with counted(request.app, ask.question):
        return await _answer(request, ask)


async def _answer(request: web.Request, ask: Ask) -> web.StreamResponse:
    marks = faults(ask.question)
    pacing = request.app[PACING]
    reply = compose(ask, pacing.min_tokens)
    await asyncio.sleep(pacing.first_token(ask.question, marks.get("sleep")))
    if "status" in marks:
        return _error(int(marks["status"]), "stand-in fault")
    if ask.stream:
        return await _stream(request, ask, reply, marks)
    await asyncio.sleep(pacing.token_s * (len(reply.pieces) - 1))
    if "malformed" in marks:
        return web.json_response({"unexpected": True})
    if "drop-after" in marks:
        drop(request)
        return web.Response()  # never sent: the connection is closed
    return web.json_response({
        "id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": ask.body["model"],
        "choices": [{"index": 0, **_shaped(marks.get("as"), reply)}],
        "usage": reply.usage(), "service_tier": "default", "system_fingerprint": FINGERPRINT,
    })  # fmt: skip


def _shaped(shape: str | None, reply: Reply) -> dict[str, Any]:
    """A choice's message and finish_reason; `[[standin:as=...]]` makes it a refusal, a tool call whose arguments
    are not JSON, or an answer cut short (length, content_filter)."""
    message, finish = reply.message(), reply.finish_reason
    if shape == "refusal":
        message, finish = {**message, "content": None, "refusal": "I can't help with that."}, "stop"
    elif shape == "bad_args":
        call = {"id": "call_bad", "type": "function", "function": {"name": "lookup", "arguments": "{not json"}}
        message, finish = {**message, "content": None, "tool_calls": [call]}, "tool_calls"
    elif shape is not None:
        finish = shape
    return {"message": message, "logprobs": None, "finish_reason": finish}


def _completion_id() -> str:
    return "chatcmpl-standin-" + uuid.uuid4().hex


async def _stream(request: web.Request, ask: Ask, reply: Reply, marks: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache"})  # fmt: skip
    await response.prepare(request)
    stream = Stream(_completion_id(), ask.question, len(reply.pieces))
    with tracked(request.app, stream) as ending, contextlib.suppress(ConnectionResetError):
        ending[0] = await _send(response, ask, reply, stream, marks, request.app[PACING].token_s)
    if ending[0] == "dropped":
        drop(request)
    return response


async def _send(
    response: web.StreamResponse, ask: Ask, reply: Reply, stream: Stream, marks: dict[str, str], token_s: float
) -> str:
    """Sends the stream's events; how it ended ("finished" or "dropped")."""
    if "malformed" in marks:
        await response.write(_event({"unexpected": True}) + b"data: [DONE]\n\n")
        return "finished"
    base: dict[str, Any] = {
        "id": stream.id, "object": "chat.completion.chunk", "created": int(time.time()), "model": ask.body["model"],
        "service_tier": "default", "system_fingerprint": FINGERPRINT,
    }  # fmt: skip
    if ask.include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _event({**base, "choices": [choice]})

    first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    if reply.call:
        call_id, name = reply.call
        first.update(content=None, tool_calls=[{"index": 0, "id": call_id, "type": "function",
                                                "function": {"name": name, "arguments": ""}}])  # fmt: skip
    await response.write(chunk(first))
    for piece in reply.pieces:
        if await checkpoint(stream, marks):
            return "dropped"
        if stream.tokens_sent:
            await asyncio.sleep(token_s)
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]} if reply.call else {"content": piece}
        await response.write(chunk(delta))
        stream.tokens_sent += 1
    if await checkpoint(stream, marks):
        return "dropped"
    await response.write(chunk({}, reply.finish_reason))
    if ask.include_usage:
        await response.write(_event({**base, "choices": [], "usage": reply.usage()}))
    await response.write(b"data: [DONE]\n\n")
    return "finished"


def _event(data: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def _say_standin(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Standin-LLM"] = "not a real model"
    response.headers["x-request-id"] = "req_standin_" + uuid.uuid4().hex


def make_app(
    delay_s: float = 0.8, first_token_s: float | None = None, token_s: float = 0.0, min_tokens: int = 0
) -> web.Application:
    """The stand-in; the arguments are the command line's flags, in seconds (see the module's docstring)."""
    app = web.Application()
    app[PACING] = Pacing(delay_s, first_token_s, token_s, min_tokens)
    app.on_response_prepare.append(_say_standin)
    app.router.add_post("/v1/chat/completions", chat_completions)
    add_controls(app)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m worker.local.standin",
        description="A stand-in for an LLM that speaks OpenAI's chat-completions API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    spread = "the first token's delay, +-25%% per question, unless --first-token-ms is given"
    parser.add_argument("--delay-ms", type=float, default=800.0, help=spread)
    parser.add_argument("--first-token-ms", type=float, help="the first token's delay, the same for every question")
    parser.add_argument("--token-ms", type=float, default=0.0, help="the pace of the tokens after the first")
    parser.add_argument("--tokens", type=int, default=0, help="pad answers to at least this many tokens")
    args = parser.parse_args()
    first_token_s = None if args.first_token_ms is None else args.first_token_ms / 1000
    app = make_app(args.delay_ms / 1000, first_token_s, args.token_ms / 1000, args.tokens)
    # A client that goes away cancels its call, as it stops a real model's generation: streams count as
    # "abandoned" at once and calls in flight go down.
    web.run_app(app, host=args.host, port=args.port, print=None, handler_cancellation=True)
