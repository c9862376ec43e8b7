"""The /v1 routes: OpenAI's chat completions, the native ask, and feedback on a cached answer."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from producer.aclient import AsyncClient
from producer.gateway.auth import tenant_of
from producer.gateway.bodies import (
    AskBody,
    FeedbackBody,
    cache_control,
    check_deadline,
    describe,
    guarded,
    header_deadline,
    parse,
    read_json,
)
from producer.gateway.errors import GatewayError, failed, queued
from producer.gateway.headers import cache_headers
from producer.gateway.limits import admitted, served
from producer.gateway.sse import stream_completion
from producer.gateway.state import CLIENT, REQUEST_ID
from producer.openai_compat import Chunks, CompletionBody, check_params, completion
from producer.settings import TenantKey
from schemas.messages import ChatReply, ChatRequest


def build(client: AsyncClient, tenant: str, **fields: Any) -> ChatRequest:
    check_deadline(fields.get("timeout"), fields.get("deadline"))
    try:
        return client.request(tenant=tenant, **fields)
    except ValidationError as exc:
        raise GatewayError(400, "invalid_request", describe(exc)) from None
    except ValueError as exc:
        raise GatewayError(400, "invalid_request", str(exc)) from None


async def answer(request: web.Request, key: TenantKey, chat: ChatRequest) -> ChatReply:
    async with admitted(request, key, chat) as admission:
        reply = await queued(request.app[CLIENT].ask_request(admission.chat))
    admission.check(reply)
    if reply.ok:
        await served(request, admission, reply)
    return reply


async def chat_completions(request: web.Request) -> web.StreamResponse:
    key = tenant_of(request)
    body = parse(CompletionBody, await read_json(request))
    timeout, deadline = header_deadline(request)
    client = request.app[CLIENT]
    chat = build(
        client, key.tenant, messages=guarded(body.chat_messages), model=body.model, timeout=timeout, deadline=deadline,
        params=guarded(body.params), stream=body.stream, cache=cache_control(request), request_id=request[REQUEST_ID],
    )  # fmt: skip
    if not body.stream:
        reply = await answer(request, key, chat)
        if not reply.ok:
            raise failed(reply)
        return web.json_response(completion(chat, reply), headers=cache_headers(reply))
    async with admitted(request, key, chat) as admission:
        return await stream_completion(request, admission, Chunks(chat, body.include_usage))


async def ask(request: web.Request) -> web.Response:
    key = tenant_of(request)
    body = parse(AskBody, await read_json(request))
    guarded(lambda: check_params(body.params or {}))
    fields = body.model_dump(exclude_none=True, exclude={"question", "messages"})
    chat = build(request.app[CLIENT], key.tenant, question=body.question, messages=body.messages,
                 request_id=request[REQUEST_ID], **fields)  # fmt: skip
    reply = await answer(request, key, chat)
    payload = reply.model_dump_json()
    if not reply.ok:
        raise failed(reply, body=payload)
    return web.Response(text=payload, content_type="application/json", headers=cache_headers(reply))


async def feedback(request: web.Request) -> web.Response:
    tenant = tenant_of(request).tenant
    body = parse(FeedbackBody, await read_json(request))
    client = request.app[CLIENT]
    call = client.feedback_call(body.entry_id, reason=body.reason, answer=body.answer, tenant=tenant)
    reply = await queued(client.run_forget(call))
    payload = reply.model_dump_json()
    if not reply.ok:
        raise failed(reply, body=payload)
    # Another tenant's entry is "not found" too: the answer must not tell whether it exists.
    if not reply.found and not reply.blocked:
        raise GatewayError(404, "entry_not_found", f"no entry {body.entry_id} is stored for this API key's tenant")
    return web.Response(text=payload, content_type="application/json")
