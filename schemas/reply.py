"""The reply a chat request gets on its `reply_to` list: exactly one `ChatReply`, after the `ChatDelta`s of a
streamed miss."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.chat import SCHEMA_VERSION
from schemas.openai_shapes import FinishReason, ToolCall, Usage


class Tier(StrEnum):
    """Where an answer came from."""

    EXACT = "exact"
    REDIS = "redis"
    PGVECTOR = "pgvector"
    LLM = "llm"
    COALESCED = "coalesced"  # a concurrent identical miss's LLM answer


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"  # fix the request; retrying it unchanged fails again
    DEADLINE = "deadline"  # the deadline passed before an answer was ready
    LLM_ERROR = "llm_error"  # the LLM answered with an error or an unreadable body
    LLM_TIMEOUT = "llm_timeout"  # the LLM did not answer in time
    OVERLOADED = "overloaded"  # the lookup queue is too deep; retry after a moment
    INTERNAL = "internal"  # a bug or an unexpected failure in the worker
    LLM_REJECTED = "llm_rejected"  # the LLM refused the request (4xx): `upstream` says why; fix the request
    LLM_RATE_LIMITED = "llm_rate_limited"  # the LLM's rate limit, after the worker's retries; retry after a while
    UPSTREAM_AUTH = "upstream_auth"  # the LLM refused the operator's credentials (401/403)
    NOT_CACHED = "not_cached"  # only-if-cached, and no tier had an answer


class UpstreamError(BaseModel):
    """The LLM provider's own error, for what the caller can fix (a 4xx): as the provider gave it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: int = Field(ge=400, le=599)
    type: str | None = None
    code: str | None = None
    param: str | None = None


class ReplyError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: ErrorCode
    message: str
    retryable: bool = False
    # llm_rejected, llm_rate_limited: the provider's status, type, code and param.
    upstream: UpstreamError | None = None
    # llm_rate_limited: how long the provider asked to wait.
    retry_after_s: float | None = Field(default=None, ge=0)


class ChatReply(BaseModel):
    """Exactly one per request: an answer with where it came from, or a typed error. A lookup-only request's reply
    says whether it was a `hit` (a miss carries no answer); a store's names the `entry_id` it is stored under."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1, 2, 3] = SCHEMA_VERSION
    request_id: str
    # The assistant's text; "" for an answer that is only tool calls.
    answer: str | None = None
    tier: Tier | None = None
    # Cosine similarity between the question and the matched entry's question (1.0 for exact).
    similarity: float | None = None
    entry_id: str | None = None
    # Per-stage worker timings (exact, embed, redis, pgvector, llm, queue_wait, total).
    timings_ms: dict[str, float] = Field(default_factory=dict)
    error: ReplyError | None = None
    # --- version 2 ---
    tool_calls: list[ToolCall] | None = None
    finish_reason: FinishReason | None = None
    # Tokens this request cost: the LLM's usage on a miss, zero on a hit.
    usage: Usage | None = None
    # On a hit: what the answer cost when the LLM made it, so what serving it from the cache saved.
    saved: Usage | None = None
    # --- version 3 ---
    # Lookup-only requests: whether the cache served an answer (false: a miss, nothing else is set).
    hit: bool | None = None
    # Fields of the assistant message beyond its text and tool calls, as a store gave them (LangChain's
    # additional_kwargs); returned as they were stored.
    message_extra: dict[str, Any] | None = None
    # The LLM's refusal text or audio output, relayed as it sent them (`answer` is then null); never cached.
    refusal: str | None = None
    audio: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def for_version(self, version: int) -> ChatReply:
        """This reply as a request of `version` expects it: a version 1 producer knows none of the new fields."""
        if version >= SCHEMA_VERSION:
            return self
        newer: dict[str, Any] = {"version": version, "hit": None, "message_extra": None, "refusal": None, "audio": None}
        if version == 1:
            newer |= {"tool_calls": None, "finish_reason": None, "usage": None, "saved": None}
        return self.model_copy(update=newer)


class ChatDelta(BaseModel):
    """A piece of a streamed answer, in order (`seq` from 0), pushed on reply_to before the request's ChatReply.
    `delta` is OpenAI's chunk delta as the LLM sent it: `content` text and/or `tool_calls` fragments."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[2] = 2
    request_id: str
    seq: int = Field(ge=0)
    delta: dict[str, Any]


ReplyEvent = ChatDelta | ChatReply


def parse_reply_event(raw: bytes | str) -> ReplyEvent:
    """What a reply list holds: a ChatReply, or (before it, for a streamed miss) a ChatDelta."""
    try:
        return ChatReply.model_validate_json(raw)
    except ValidationError:
        return ChatDelta.model_validate_json(raw)  # raises, for neither, a ValidationError saying so
