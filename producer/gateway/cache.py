"""The gateway's cache verbs, for callers that make their own LLM call: `POST /v1/cache/lookup` and
`POST /v1/cache/store` (docs/wire.md).

Both take a chat-completions request body, read as `/v1/chat/completions` reads it, so a lookup finds exactly what
an equivalent store wrote; the tenant comes from the API key, never the body. A lookup is 200 with the hit as a
`chat.completion` plus `"hit": true` and the `x-dejavu-*` headers, or 200 `{"hit": false}`; it never calls the
LLM. A store takes the provider's own `chat.completion`, verbatim, as `"response"` and is 202 with the entry id
once the write-back is queued; an empty, cut-short or refused answer, or a malformed one, is a 400 naming the field,
and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from producer.gateway.auth import tenant_of
from producer.gateway.bodies import cache_control, check_deadline, guarded, header_deadline, parse, read_json
from producer.gateway.errors import GatewayError, failed, queued
from producer.gateway.headers import cache_headers
from producer.gateway.limits import admitted
from producer.gateway.state import CLIENT, METRICS
from producer.openai_compat import CompletionBody, completion
from producer.settings import TenantKey
from schemas.messages import ChatReply, ChatRequest, StoredAnswer

R = TypeVar("R")


async def lookup(request: web.Request) -> web.Response:
    key = tenant_of(request)
    tenant = key.tenant
    body = parse(CompletionBody, await read_json(request))
    client = request.app[CLIENT]
    fields = _fields(request, body)
    chat = _made("", lambda: client.lookup_request(tenant=tenant, cache=cache_control(request), **fields))
    reply = await _sent(request, key, chat)
    if not reply.ok:
        raise failed(reply)
    if not reply.hit:
        return web.json_response({"hit": False}, headers={"x-dejavu-request-id": reply.request_id})
    request.app[METRICS].answered(reply, tenant)
    return web.json_response({**completion(chat, reply), "hit": True}, headers=cache_headers(reply))


async def store(request: web.Request) -> web.Response:
    key = tenant_of(request)
    tenant = key.tenant
    data = await read_json(request)
    if not isinstance(data, dict) or "response" not in data:
        raise GatewayError(400, "invalid_request", "response: send the provider's chat.completion object as "
                           '"response", beside the request it answers')  # fmt: skip
    answer = _made("response", lambda: StoredAnswer.from_completion(data.pop("response")))
    body = parse(CompletionBody, data)
    client = request.app[CLIENT]
    fields = _fields(request, body)
    chat = _made("", lambda: client.store_request(tenant=tenant, response=answer, **fields))
    reply = await _sent(request, key, chat)
    if not reply.ok:
        raise failed(reply)
    assert reply.entry_id is not None  # a store's reply names its entry
    headers = {"x-dejavu-request-id": reply.request_id, "x-dejavu-entry": reply.entry_id}
    return web.json_response({"entry_id": reply.entry_id, "request_id": reply.request_id}, status=202, headers=headers)


async def _sent(request: web.Request, key: TenantKey, chat: ChatRequest) -> ChatReply:
    # In flight under the key's limits, as a chat request is; neither verb calls the LLM.
    async with admitted(request, key, chat) as admission:
        return await queued(request.app[CLIENT].ask_request(admission.chat))


def _fields(request: web.Request, body: CompletionBody) -> dict[str, Any]:
    """The request's scope and delivery fields, as /v1/chat/completions reads them."""
    timeout, deadline = header_deadline(request)
    check_deadline(timeout, deadline)
    return {"messages": guarded(body.chat_messages), "model": body.model, "timeout": timeout, "deadline": deadline,
            "params": body.params(), "stream": body.stream}  # fmt: skip


def _made(where: str, make: Callable[[], R]) -> R:
    """Build a request or answer; what does not validate is a 400 naming the field (under `where` in the body)."""
    try:
        return make()
    except ValidationError as exc:
        raise GatewayError(400, "invalid_request", "; ".join(_problem(where, e) for e in exc.errors())) from None
    except ValueError as exc:
        raise GatewayError(400, "invalid_request", str(exc)) from None


def _problem(where: str, error: Any) -> str:
    loc = ".".join(str(part) for part in (where, *error["loc"]) if part != "")
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message
