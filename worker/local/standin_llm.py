"""A stand-in for an LLM that speaks the OpenAI chat-completions API, for offline runs and tests.

It answers deterministically (same question, same answer) after a realistic delay, and every
answer says it comes from a stand-in. Markers in the question inject faults for tests:
`[[standin:status=500]]` answers that HTTP status, `[[standin:sleep=5]]` waits 5 s first,
`[[standin:malformed]]` returns a body that is not a chat completion.
`GET /standin/calls?q=TEXT` tells how many times a question was asked (tests count LLM calls);
`GET /standin/concurrency` the calls in flight and the most seen at once since the last read.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import time
from collections import Counter
from typing import Any

from aiohttp import web

MARKER = re.compile(r"\[\[standin:(\w+)(?:=([\w.]+))?\]\]")
CALLS: web.AppKey[Counter[str]] = web.AppKey("calls", Counter)
DELAY: web.AppKey[float] = web.AppKey("delay", float)
# [calls in flight, most in flight at once since the last GET /standin/concurrency]
IN_FLIGHT: web.AppKey[list[int]] = web.AppKey("in_flight", list)


def standin_answer(question: str) -> str:
    """The answer for a question; a checker can recompute it to tell a right answer from a wrong one."""
    tag = hashlib.sha256(question.encode("utf-8")).hexdigest()[:12]
    return f"[stand-in LLM, not a real model] answer {tag} to: {question}"


async def chat_completions(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        messages = body["messages"]
        question = str(messages[-1]["content"])
    except (ValueError, KeyError, IndexError, TypeError):
        return web.json_response({"error": {"message": "expected {model, messages: [...]}"}}, status=400)
    request.app[CALLS][question] += 1
    flight = request.app[IN_FLIGHT]
    flight[0] += 1
    flight[1] = max(flight)
    try:
        return await _answer(request, body, question)
    finally:
        flight[0] -= 1


async def _answer(request: web.Request, body: dict[str, Any], question: str) -> web.Response:
    faults = dict(MARKER.findall(question))
    # Deterministic per question: a base delay with +-25% spread, like a real model's varying length.
    spread = int(hashlib.sha256(question.encode()).hexdigest()[:4], 16) / 0xFFFF - 0.5
    await asyncio.sleep(float(faults.get("sleep") or request.app[DELAY] * (1 + spread / 2)))
    if "status" in faults:
        return web.json_response({"error": {"message": "stand-in fault"}}, status=int(faults["status"]))
    if "malformed" in faults:
        return web.json_response({"unexpected": True})
    answer = standin_answer(question)
    return web.json_response(_completion(body.get("model", "standin-1"), answer, question))


def _completion(model: str, answer: str, question: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin-" + hashlib.sha256(question.encode()).hexdigest()[:16],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(question.split()), "completion_tokens": len(answer.split()),
                  "total_tokens": len(question.split()) + len(answer.split())},
    }  # fmt: skip


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


def make_app(delay_s: float) -> web.Application:
    app = web.Application()
    app[CALLS] = Counter()
    app[DELAY] = delay_s
    app[IN_FLIGHT] = [0, 0]
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/standin/calls", calls)
    app.router.add_get("/standin/concurrency", concurrency)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--delay-ms", type=float, default=800.0)
    args = parser.parse_args()
    web.run_app(make_app(args.delay_ms / 1000), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
