"""The request and reply that cross the `lookup` queue, version 2 (version 1 requests are still accepted).

Producers build a `ChatRequest` — the whole OpenAI chat-completion request: messages (tool calls and tool results
included), the generation parameters, vendor extensions — send its JSON as the only argument of the lookup task,
and pop from `reply_to`: with `stream`, `ChatDelta`s as the LLM writes the answer, then always exactly one
`ChatReply`. Both sides validate with these models. A version 1 request gets a version 1 reply.
"""

from __future__ import annotations

import json
import time
import uuid
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from schemas.keys import REPLY_PREFIX

SCHEMA_VERSION: Final = 2
# Forget requests and replies did not change.
FORGET_SCHEMA_VERSION: Final = 1
DEFAULT_MAX_QUESTION_BYTES = 8 * 1024
# Validation context keys: the size limit is configuration, and the worker must accept an expired
# request in order to answer it with a `deadline` error instead of rejecting it as malformed.
CTX_MAX_QUESTION_BYTES = "max_question_bytes"
CTX_ALLOW_EXPIRED = "allow_expired"

# "developer" is the newer OpenAI name for a system message; both count as the system prompt.
Role = Literal["system", "developer", "user", "assistant", "tool"]
SYSTEM_ROLES = frozenset({"system", "developer"})
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
TENANT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
REPLY_TO_PATTERN = rf"^{REPLY_PREFIX}[A-Za-z0-9_.:-]{{1,200}}$"
# Entry ids are derived from the scope and the question (schemas.cache.entry_id): 32 lowercase hex digits.
ENTRY_ID_PATTERN = r"^[0-9a-f]{32}$"
MAX_REASON_CHARS = 1000


class ToolFunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    # JSON text, as the model wrote it (OpenAI does not promise it parses).
    arguments: str


class ToolCall(BaseModel):
    """One function call in an assistant message, as OpenAI sends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: ToolFunctionCall


class ChatMessage(BaseModel):
    """One message of the conversation: system/developer/user text, an assistant's text or tool calls, or a
    tool's result for one of those calls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str | None = None
    # Assistant messages only: the calls the model made (content may then be null).
    tool_calls: tuple[ToolCall, ...] | None = None
    # Tool messages only: the call this is the result of.
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=128)
    name: str | None = Field(default=None, max_length=64)
    # Assistant messages only, as an earlier answer came: its refusal, its audio ({"id": ...}), a legacy
    # function_call. Forwarded, and part of the history.
    refusal: str | None = None
    audio: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _fits_its_role(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError(f"only assistant messages carry tool_calls, not {self.role!r} ones")
        answered = self._answered_by()
        if answered and self.role != "assistant":
            raise ValueError(f"only assistant messages carry {', '.join(answered)}, not {self.role!r} ones")
        if (self.tool_call_id is not None) != (self.role == "tool"):
            raise ValueError("a tool message needs the tool_call_id of the call it answers, and only it has one")
        if self.content is None and not (self.role == "assistant" and (self.tool_calls or answered)):
            raise ValueError(f"a {self.role} message needs content (only an assistant's tool calls come without)")
        return self

    def _answered_by(self) -> dict[str, Any]:
        return {k: v for k, v in (("refusal", self.refusal), ("audio", self.audio),
                                  ("function_call", self.function_call)) if v is not None}  # fmt: skip

    def history_text(self) -> str:
        """How this message enters the scope's context hash (text-only messages: as in version 1)."""
        text = f"{self.role}:{self.content}"
        answered = self._answered_by()
        if self.tool_calls is None and self.tool_call_id is None and not answered:
            return text
        calls = [c.model_dump() for c in self.tool_calls or ()]
        parts: list[Any] = [calls, self.tool_call_id, *([answered] if answered else [])]
        return f"{text}|{json.dumps(parts, sort_keys=True, separators=(',', ':'))}"


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    # A JSON Schema object, passed on as given.
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema", serialization_alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """`text`, JSON mode (`json_object`) or structured output (`json_schema`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("response_format type 'json_schema' goes with a json_schema object, and only it")
        return self


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

    version: Literal[1, 2] = SCHEMA_VERSION
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


class Usage(BaseModel):
    """Tokens, as OpenAI counts them in `usage`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class ChatReply(BaseModel):
    """Exactly one per request: an answer with where it came from, or a typed error."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1, 2] = SCHEMA_VERSION
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
        return self.model_copy(update={"version": 1, "tool_calls": None, "finish_reason": None, "usage": None,
                                       "saved": None, "refusal": None, "audio": None})  # fmt: skip


class ChatDelta(BaseModel):
    """A piece of a streamed answer, in order (`seq` from 0), pushed on reply_to before the request's ChatReply.
    `delta` is OpenAI's chunk delta as the LLM sent it: `content` text and/or `tool_calls` fragments."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[2] = 2
    request_id: str
    seq: int = Field(ge=0)
    delta: dict[str, Any]


class ForgetRequest(BaseModel):
    """Remove cache entries from every tier: task `dejavu.forget` on queue `writeback`; one ForgetReply on reply_to.

    The target is one entry (`entry_id`) or, without an entry id, every entry of `tenant`. With an entry id,
    `tenant` restricts the removal to an entry of that tenant (the gateway sets it from the API key).
    Feedback (`bad`) also blocklists the entry's question/answer pair, so that pair is never stored again.
    """

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = FORGET_SCHEMA_VERSION
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

    version: Literal[1] = FORGET_SCHEMA_VERSION
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


ReplyEvent = ChatDelta | ChatReply


def parse_reply_event(raw: bytes | str) -> ReplyEvent:
    """What a reply list holds: a ChatReply, or (before it, for a streamed miss) a ChatDelta."""
    try:
        return ChatReply.model_validate_json(raw)
    except ValidationError:
        return ChatDelta.model_validate_json(raw)  # raises, for neither, a ValidationError saying so
