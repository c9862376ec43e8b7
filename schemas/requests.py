"""Building a validated `ChatRequest` (or a lookup-only or store request) from a question and options: the clients,
the gateway and the worker-side tools (backfill, eval) all make requests, and must make them the same way."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, TypeVar, Unpack

from schemas.keys import reply_key
from schemas.messages import (
    CTX_MAX_QUESTION_BYTES,
    FORWARDED,
    GENERATION_FIELDS,
    UNSUPPORTED,
    CacheControl,
    ChatMessage,
    ChatRequest,
)
from schemas.settings import CommonSettings

MessageInput = ChatMessage | Mapping[str, Any]


class RequestOptions(TypedDict, total=False):
    """Everything a request takes besides the question; one typed list for every client method."""

    messages: Sequence[MessageInput] | None
    tenant: str
    model: str | None
    system: str | None
    timeout: float | None
    deadline: float | None
    request_id: str | None
    # OpenAI generation fields (temperature, max_tokens, tools, response_format ...) and vendor extensions, by
    # their OpenAI names: all forwarded to the LLM and, but for user/metadata/store, part of the cache scope.
    params: Mapping[str, Any] | None
    # Per-request cache control: no_cache, no_store, max_age_s (schemas.messages.CacheControl).
    cache: CacheControl | Mapping[str, Any] | None
    # Relay a miss's answer as it is written (ChatDelta events before the ChatReply).
    stream: bool


def build_request(
    settings: CommonSettings, question: str | None = None, **options: Unpack[RequestOptions]
) -> ChatRequest:
    """Build and validate a request; bad input raises pydantic's ValidationError here, not in a worker."""
    return build_as(ChatRequest, settings, question, {}, **options)


R = TypeVar("R", bound=ChatRequest)


def build_as(
    kind: type[R],
    settings: CommonSettings,
    question: str | None,
    fields: Mapping[str, Any],
    **options: Unpack[RequestOptions],
) -> R:
    """Build a request of `kind` (a lookup-only or store request, schemas.verbs) with its own `fields` besides."""
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
    request: dict[str, object] = {
        **split_params(options.get("params") or {}),
        **fields,
        "stream": options.get("stream", False),
        "cache": options.get("cache") or {},
        "messages": msgs,
        "tenant": options.get("tenant", "default"),
        "model": options.get("model") or settings.llm_model,
        "deadline": deadline if deadline is not None else time.time() + (timeout or settings.default_timeout_s),
        "request_id": rid,
        "reply_to": reply_key(rid),
    }
    return kind.model_validate(request, context={CTX_MAX_QUESTION_BYTES: settings.max_question_bytes})


def split_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI request fields by name: the ones ChatRequest knows go to their own fields, the rest to `extra`."""
    for name, reason in UNSUPPORTED.items():
        value = params.get(name)
        if value is not None and not (name == "n" and value == 1) and not (name == "logprobs" and value is False):
            raise ValueError(f"{name}: {reason}")
    known = {name: value for name, value in params.items() if name in (*GENERATION_FIELDS, *FORWARDED)}
    extra = {name: v for name, v in params.items() if name not in known and name not in UNSUPPORTED}
    return {**known, **({"extra": extra} if extra else {})}
