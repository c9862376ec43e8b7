"""A bare aiohttp app on uvloop, run as its own process the way the gateway runs (producer.gateway main()): one
JSON handler on the gateway's OpenAI route that parses the request body and returns a fixed small
chat.completion. `make bench-peers` drives it with the gateway's load to set the gateway's CPU per request
beside what the HTTP hop alone costs.

    python -m bench.bare_aiohttp --port 8181
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web

BODY = {
    "id": "chatcmpl-bare",
    "object": "chat.completion",
    "created": 0,
    "model": "standin-1",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "A fixed answer."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
}


async def completions(request: web.Request) -> web.Response:
    await request.json()
    return web.json_response(BODY, headers={"x-dejavu-tier": "bare"})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_aiohttp", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # As the gateway: uvloop, no access log.
    web.run_app(make_app(), loop=uvloop.new_event_loop(), host=args.host, port=args.port, access_log=None,
                print=None)  # fmt: skip


if __name__ == "__main__":
    main()
