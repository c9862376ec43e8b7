"""A streamed chat completion: server-sent events of `chat.completion.chunk`s, as OpenAI sends them."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from aiohttp import web
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from producer.base import ReplyTimeout
from producer.gateway.errors import TIMED_OUT, GatewayError, failed, queued
from producer.gateway.headers import REQUEST_ID_HEADER, TIER_HEADER, cache_headers
from producer.gateway.limits import Admission, served
from producer.gateway.state import CLIENT, REQUEST_ID, SETTINGS
from producer.openai_compat import Chunks
from schemas.cache import Scope, entry_id, question_hash
from schemas.messages import ChatDelta, ChatReply, ReplyEvent, Tier

log = logging.getLogger(__name__)


async def stream_completion(request: web.Request, admission: Admission, chunks: Chunks) -> web.StreamResponse:
    """A hit, or an error before anything was sent, is answered whole, with the status an unstreamed request gets;
    a miss is relayed delta by delta while the LLM writes it. A stream that breaks after it began ends with an
    error event, which OpenAI's SDKs raise. A caller that goes away mid-stream is logged as such, and nothing more
    is written to it."""
    chat = admission.chat
    events = request.app[CLIENT].stream_request(chat)
    try:
        first = await queued(anext(events))
        if isinstance(first, ChatReply):
            admission.check(first)
            if not first.ok:
                raise failed(first)
            await served(request, admission, first)
            stream = await open_stream(request, cache_headers(first))
            for chunk in chunks.whole(first):
                await send_event(stream, chunk)
            return await close_stream(stream)
        # The entry the answer will be stored as is known before the answer: it names the scope and the question.
        scope = Scope.of(chat, request.app[SETTINGS].scope_includes_history)
        headers = {"x-dejavu-request-id": chat.request_id, TIER_HEADER: Tier.LLM.value,
                   "x-dejavu-entry": entry_id(scope, question_hash(chat.question))}  # fmt: skip
        stream = await open_stream(request, headers)
        await send_event(stream, chunks.start())
        await send_event(stream, chunks.delta(first))
        await _relay(request, admission, chunks, events, stream)
        return await close_stream(stream)
    except ConnectionResetError:
        log.info("request %s: the client disconnected mid-stream", chat.request_id)
        return web.StreamResponse()  # never sent: the middleware only records it
    finally:
        if isinstance(events, AsyncGenerator):  # the inbox stops waiting for it now, not at garbage collection
            await events.aclose()


async def _relay(
    request: web.Request, admission: Admission, chunks: Chunks, events: AsyncIterator[ReplyEvent],
    stream: web.StreamResponse,
) -> None:  # fmt: skip
    """The rest of a streamed miss, after its first delta; ConnectionResetError when the caller went away."""
    try:
        async for event in events:
            if isinstance(event, ChatDelta):
                await send_event(stream, chunks.delta(event))
            elif event.ok:
                await served(request, admission, event)
                for chunk in chunks.end(event):
                    await send_event(stream, chunk)
            else:
                await send_event(stream, failed(event).payload())
    except GatewayError as exc:
        await send_event(stream, exc.payload())
    except ConnectionResetError:
        raise
    except (ReplyTimeout, RedisError, OSError, OperationalError) as exc:
        log.warning("request %s: the stream broke off: %r", admission.chat.request_id, exc)
        await send_event(stream, GatewayError(504, "timeout", TIMED_OUT).payload())


async def open_stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    headers = {**headers, REQUEST_ID_HEADER: request[REQUEST_ID], "Content-Type": "text/event-stream",
               "Cache-Control": "no-cache"}  # fmt: skip
    stream = web.StreamResponse(headers=headers)
    await stream.prepare(request)
    return stream


async def send_event(stream: web.StreamResponse, data: dict[str, Any]) -> None:
    await stream.write(f"data: {json.dumps(data)}\n\n".encode())


async def close_stream(stream: web.StreamResponse) -> web.StreamResponse:
    await stream.write(b"data: [DONE]\n\n")
    await stream.write_eof()
    return stream
