"""The request and reply that cross the `lookup` queue, version 1.

Producers build a `ChatRequest`, send its JSON as the only argument of the lookup task, and BLPOP
the `ChatReply` JSON from `reply_to`. Both sides validate with these models.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from schemas.keys import REPLY_PREFIX

SCHEMA_VERSION: Final = 1
DEFAULT_MAX_QUESTION_BYTES = 8 * 1024
# Validation context keys: the size limit is configuration, and the worker must accept an expired
# request in order to answer it with a `deadline` error instead of rejecting it as malformed.
CTX_MAX_QUESTION_BYTES = "max_question_bytes"
CTX_ALLOW_EXPIRED = "allow_expired"

# "developer" is the newer OpenAI name for a system message; both count as the system prompt.
Role = Literal["system", "developer", "user", "assistant"]
SYSTEM_ROLES = frozenset({"system", "developer"})
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
TENANT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
REPLY_TO_PATTERN = rf"^{REPLY_PREFIX}[A-Za-z0-9_.:-]{{1,200}}$"
# Entry ids are derived from the scope and the question (schemas.cache.entry_id): 32 lowercase hex digits.
ENTRY_ID_PATTERN = r"^[0-9a-f]{32}$"
MAX_REASON_CHARS = 1000


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str


class ChatRequest(BaseModel):
    """One chat request; the question is the content of the last message, which must be a user's."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = SCHEMA_VERSION
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=ID_PATTERN)
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    # The tenant (namespace) and the LLM model are part of the cache scope.
    tenant: str = Field(pattern=TENANT_PATTERN)
    model: str = Field(min_length=1, max_length=128)
    reply_to: str = Field(pattern=REPLY_TO_PATTERN)
    # Absolute Unix time in seconds; past it nobody waits for the answer.
    deadline: float = Field(allow_inf_nan=False)
    enqueued_at: float = Field(default_factory=time.time, allow_inf_nan=False)

    @field_validator("messages")
    @classmethod
    def _last_is_a_question(cls, messages: list[ChatMessage], info: ValidationInfo) -> list[ChatMessage]:
        last = messages[-1]
        if last.role != "user":
            raise ValueError(f"the last message must have role 'user' (it is {last.role!r})")
        if not last.content.strip():
            raise ValueError("the question (last user message) is empty or only whitespace")
        limit = _context(info).get(CTX_MAX_QUESTION_BYTES, DEFAULT_MAX_QUESTION_BYTES)
        size = len(last.content.encode("utf-8"))
        if size > limit:
            raise ValueError(f"the question is {size} bytes, over the limit of {limit} bytes")
        return messages

    @model_validator(mode="after")
    def _not_expired(self, info: ValidationInfo) -> ChatRequest:
        if not _context(info).get(CTX_ALLOW_EXPIRED) and self.deadline <= time.time():
            raise ValueError("the deadline has already passed; set a deadline in the future")
        return self

    @property
    def question(self) -> str:
        return self.messages[-1].content

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.deadline


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


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


class ReplyError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: ErrorCode
    message: str
    retryable: bool = False


class ChatReply(BaseModel):
    """Exactly one per request: an answer with where it came from, or a typed error."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = SCHEMA_VERSION
    request_id: str
    answer: str | None = None
    tier: Tier | None = None
    # Cosine similarity between the question and the matched entry's question (1.0 for exact).
    similarity: float | None = None
    entry_id: str | None = None
    # Per-stage worker timings (exact, embed, redis, pgvector, llm, queue_wait, total).
    timings_ms: dict[str, float] = Field(default_factory=dict)
    error: ReplyError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ForgetRequest(BaseModel):
    """Remove cache entries from every tier: task `dejavu.forget` on queue `writeback`; one ForgetReply on reply_to.

    The target is one entry (`entry_id`) or, without an entry id, every entry of `tenant`. With an entry id,
    `tenant` restricts the removal to an entry of that tenant (the gateway sets it from the API key).
    Feedback (`bad`) also blocklists the entry's question/answer pair, so that pair is never stored again.
    """

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = SCHEMA_VERSION
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=ID_PATTERN)
    reply_to: str = Field(pattern=REPLY_TO_PATTERN)
    entry_id: str | None = Field(default=None, pattern=ENTRY_ID_PATTERN)
    tenant: str | None = Field(default=None, pattern=TENANT_PATTERN)
    bad: bool = False
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)
    # Feedback on a reply: the answer it carried is blocked even if its write-back has not landed yet.
    answer: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> ForgetRequest:
        if self.entry_id is None and self.tenant is None:
            raise ValueError("name an entry_id, or a tenant to forget every entry of")
        if self.entry_id is None and self.bad:
            raise ValueError("feedback (bad) names one entry_id")
        if self.answer is not None and not self.bad:
            raise ValueError("answer is only sent with feedback (bad: true)")
        return self


class Removed(BaseModel):
    """Entries removed per tier. One Redis hash serves both the exact and the KNN tier, so it counts once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis: int = 0
    pgvector: int = 0


class ForgetReply(BaseModel):
    """Exactly one per ForgetRequest: what this run removed and blocklisted, or a typed error."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = SCHEMA_VERSION
    request_id: str
    removed: Removed = Field(default_factory=Removed)
    # Question/answer pairs on the blocklist after this request (feedback only).
    blocked: int = 0
    error: ReplyError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def found(self) -> bool:
        """Whether anything was stored under the target (a second forget of the same entry finds nothing)."""
        return self.removed.redis + self.removed.pgvector > 0
