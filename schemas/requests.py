"""Building a validated `ChatRequest` from a question and options: the clients, the gateway and the worker-side
tools (backfill, eval) all make requests, and must make them the same way."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import TypedDict, Unpack

from schemas.keys import reply_key
from schemas.messages import CTX_MAX_QUESTION_BYTES, ChatMessage, ChatRequest
from schemas.settings import CommonSettings

MessageInput = ChatMessage | dict[str, str]


class RequestOptions(TypedDict, total=False):
    """Everything a request takes besides the question; one typed list for every client method."""

    messages: Sequence[MessageInput] | None
    tenant: str
    model: str | None
    system: str | None
    timeout: float | None
    deadline: float | None
    request_id: str | None


def build_request(
    settings: CommonSettings, question: str | None = None, **options: Unpack[RequestOptions]
) -> ChatRequest:
    """Build and validate a request; bad input raises pydantic's ValidationError here, not in a worker."""
    messages, system = options.get("messages"), options.get("system")
    timeout, deadline = options.get("timeout"), options.get("deadline")
    if (question is None) == (messages is None):
        raise ValueError("pass either question or messages")
    if timeout is not None and deadline is not None:
        raise ValueError("pass either timeout or deadline")
    msgs: list[MessageInput] = list(messages) if messages is not None else [{"role": "user", "content": question or ""}]
    if system is not None:
        msgs.insert(0, {"role": "system", "content": system})
    rid = options.get("request_id") or uuid.uuid4().hex
    fields: dict[str, object] = {
        "messages": msgs,
        "tenant": options.get("tenant", "default"),
        "model": options.get("model") or settings.llm_model,
        "deadline": deadline if deadline is not None else time.time() + (timeout or settings.default_timeout_s),
        "request_id": rid,
        "reply_to": reply_key(rid),
    }
    return ChatRequest.model_validate(fields, context={CTX_MAX_QUESTION_BYTES: settings.max_question_bytes})
