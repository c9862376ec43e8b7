"""The chat request that crosses the `lookup` queue, version 3 (versions 1 and 2 are still accepted).

Producers build a `ChatRequest` — the whole OpenAI chat-completion request: messages (tool calls and tool results
included), the generation parameters, vendor extensions — send its JSON as the only argument of the lookup task,
and pop from `reply_to`: with `stream`, `ChatDelta`s as the LLM writes the answer, then always exactly one
`ChatReply` (schemas.reply). Both sides validate with these models. A version 1 or 2 request gets a reply of its
own version.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from schemas.keys import REPLY_PREFIX
from schemas.openai_shapes import ChatMessage, NamedToolChoice, ResponseFormat, Tool

# Version 3 added the lookup-only and store requests (schemas.verbs) and the reply's `hit` and `message_extra`.
SCHEMA_VERSION: Final = 3
DEFAULT_MAX_QUESTION_BYTES = 8 * 1024
# Validation context keys: the size limit is configuration, and the worker must accept an expired
# request in order to answer it with a `deadline` error instead of rejecting it as malformed.
CTX_MAX_QUESTION_BYTES = "max_question_bytes"
CTX_ALLOW_EXPIRED = "allow_expired"

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
TENANT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
REPLY_TO_PATTERN = rf"^{REPLY_PREFIX}[A-Za-z0-9_.:-]{{1,200}}$"
# Entry ids are derived from the scope and the question (schemas.cache.entry_id): 32 lowercase hex digits.
ENTRY_ID_PATTERN = r"^[0-9a-f]{32}$"


class CacheControl(BaseModel):
    """Per-request cache control, as HTTP's Cache-Control request directives (the gateway reads that header)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Skip the lookup: ask the LLM, and store its answer.
    no_cache: bool = False
    # Serve from the cache, but store nothing new.
    no_store: bool = False
    # Serve only entries stored at most this many seconds ago.
    max_age_s: int | None = Field(default=None, ge=0)
    # Serve only from the cache: a miss is answered `not_cached`, never asked of the LLM (HTTP's only-if-cached).
    only_if_cached: bool = False


# The OpenAI generation fields a request may carry; with `extra`, they shape the answer, so they are part of the
# scope (schemas.cache.Scope) and are forwarded to the LLM on a miss.
GENERATION_FIELDS: Final = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "presence_penalty",
    "frequency_penalty", "logit_bias", "response_format", "tools", "tool_choice", "parallel_tool_calls",
)  # fmt: skip
# Fields of an OpenAI request that cannot change the answer: never part of the scope. These are forwarded to the
# LLM as given; `stream` becomes ChatRequest.stream and the gateway answers `stream_options` itself.
FORWARDED: Final = ("user", "metadata", "store")
NOT_ANSWER_SHAPING: Final = (*FORWARDED, "stream", "stream_options")
# Fields a cache cannot honour: more than one choice, or log probabilities it did not record.
UNSUPPORTED: Final = {
    "n": "a cache serves one answer per request: n must be 1",
    "logprobs": "a cached answer has no log probabilities: logprobs must be false",
    "top_logprobs": "a cached answer has no log probabilities: top_logprobs is not supported",
}


class ChatRequest(BaseModel):
    """One chat request; the question is the content of the last user message. After it may only come the
    assistant's messages (tool calls, or a start of the answer) and the tools' results (a function-calling turn);
    they are part of the scope."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1, 2, 3] = SCHEMA_VERSION
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=ID_PATTERN)
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    # The tenant (namespace) and the LLM model are part of the cache scope.
    tenant: str = Field(pattern=TENANT_PATTERN)
    model: str = Field(min_length=1, max_length=128)
    reply_to: str = Field(pattern=REPLY_TO_PATTERN)
    # Absolute Unix time in seconds; past it nobody waits for the answer.
    deadline: float = Field(allow_inf_nan=False)
    enqueued_at: float = Field(default_factory=time.time, allow_inf_nan=False)

    # --- generation (version 2): forwarded to the LLM, part of the scope ---
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    logit_bias: dict[str, int] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # Any other top-level field of the OpenAI request (vendor extensions), kept opaque: forwarded, and scoped.
    extra: dict[str, Any] = Field(default_factory=dict)

    # --- forwarded to the LLM, not part of the scope: they cannot change the answer ---
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None
    store: bool | None = None

    # --- delivery (version 2): not part of the scope ---
    # Relay the LLM's answer as ChatDeltas on reply_to while it is written (a miss), before the ChatReply.
    stream: bool = False
    cache: CacheControl = Field(default_factory=CacheControl)

    @field_validator("messages")
    @classmethod
    def _ends_with_a_question(cls, messages: list[ChatMessage], info: ValidationInfo) -> list[ChatMessage]:
        users = [i for i, m in enumerate(messages) if m.role == "user"]
        if not users:
            raise ValueError("the messages hold no user message: the last user message is the question")
        last = messages[users[-1]]
        after = messages[users[-1] + 1 :]
        if any(m.role not in ("assistant", "tool") for m in after):
            raise ValueError("after the last user message only assistant messages and tool results may follow")
        _check_tool_results(messages)
        assert last.content is not None  # a user message always has content
        if not last.content.strip():
            raise ValueError("the question (last user message) is empty or only whitespace")
        limit = _context(info).get(CTX_MAX_QUESTION_BYTES, DEFAULT_MAX_QUESTION_BYTES)
        size = len(last.content.encode("utf-8"))
        if size > limit:
            raise ValueError(f"the question is {size} bytes, over the limit of {limit} bytes")
        return messages

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and not 1 <= len(stop) <= 4:
            raise ValueError("stop takes 1 to 4 sequences")
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _bias_in_range(cls, bias: dict[str, int] | None) -> dict[str, int] | None:
        if bias is not None and any(not -100 <= v <= 100 for v in bias.values()):
            raise ValueError("logit_bias values must be between -100 and 100")
        return bias

    @field_validator("extra")
    @classmethod
    def _extensions_only(cls, extra: dict[str, Any]) -> dict[str, Any]:
        for name in extra:
            if name in UNSUPPORTED:
                raise ValueError(f"{name}: {UNSUPPORTED[name]}")
            if name in NOT_ANSWER_SHAPING or name in GENERATION_FIELDS or name in ChatRequest.model_fields:
                raise ValueError(f"{name!r} is a field of its own, not an extension")
        return extra

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> ChatRequest:
        if not _context(info).get(CTX_ALLOW_EXPIRED) and self.deadline <= time.time():
            raise ValueError("the deadline has already passed; set a deadline in the future")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or ()}
            if self.tool_choice.function.name not in names:
                raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not among the tools")
        elif self.tool_choice in ("auto", "required") and not self.tools:
            raise ValueError(f"tool_choice {self.tool_choice!r} needs tools")
        v2 = self.generation() or self.extra or self.forwarded() or self.stream or self.cache != CacheControl()
        if self.version == 1 and v2:
            raise ValueError("version 1 requests carry model and messages only: send version 2")
        return self

    @property
    def question(self) -> str:
        content = next(m for m in reversed(self.messages) if m.role == "user").content
        assert content is not None
        return content

    def generation(self) -> dict[str, Any]:
        """The generation fields set on this request, as the LLM is sent them."""
        return self.model_dump(include=set(GENERATION_FIELDS), exclude_none=True, by_alias=True)

    def forwarded(self) -> dict[str, Any]:
        """The fields sent on to the LLM that do not shape the answer (user, metadata, store)."""
        return self.model_dump(include=set(FORWARDED), exclude_none=True)

    def llm_body(self) -> dict[str, Any]:
        """The chat-completions body for the LLM: everything that shapes the answer, and the forwarded fields."""
        messages = [m.model_dump(exclude_none=True) for m in self.messages]
        return {**self.extra, "model": self.model, "messages": messages, **self.generation(), **self.forwarded()}

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.deadline


def _check_tool_results(messages: list[ChatMessage]) -> None:
    called: set[str] = set()
    for m in messages:
        if m.tool_calls:
            called.update(c.id for c in m.tool_calls)
        if m.role == "tool" and m.tool_call_id not in called:
            raise ValueError(f"tool message answers tool_call_id {m.tool_call_id!r}, which no earlier call has")


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}
