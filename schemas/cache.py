"""What the cache stores, how entries are keyed, and the write-back job."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from schemas.messages import SYSTEM_ROLES, ChatRequest, FinishReason, ToolCall, Usage

_SPACE = re.compile(r"\s+")


def _from_base64(value: Any) -> Any:
    return base64.b64decode(value, validate=True) if isinstance(value, str) else value


# Raw float32 bytes in Python, base64 text in JSON.
VectorBytes = Annotated[
    bytes,
    BeforeValidator(_from_base64),
    PlainSerializer(lambda v: base64.b64encode(v).decode("ascii"), return_type=str, when_used="json"),
]


def normalize_question(text: str) -> str:
    """The exact tier's notion of "the same question".

    NFKC, case-folded, whitespace collapsed. Case folding is deliberate: the default model is
    uncased, so case twins already share a vector; folding makes them one entry with one answer
    (the first stored wins) instead of two entries the semantic tiers cannot tell apart.
    """
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def _sha(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Scope:
    """Everything besides the question that must match for a cached answer to be served."""

    tenant: str
    model: str
    system_hash: str
    context_hash: str
    # Every answer-shaping field besides model and messages (temperature, tools, extensions ...); "" for none.
    params_hash: str = ""

    @property
    def scope_id(self) -> str:
        # A request with no parameters keeps the scope it had in version 1, so its entries stay reachable.
        parts = (self.tenant, self.model, self.system_hash, self.context_hash)
        return _sha(*parts, *((self.params_hash,) if self.params_hash else ()))[:32]

    @classmethod
    def of(cls, request: ChatRequest, include_history: bool = True) -> Scope:
        system = [m.content or "" for m in request.messages if m.role in SYSTEM_ROLES]
        last_user = max(i for i, m in enumerate(request.messages) if m.role == "user")
        # Earlier turns change what the question means, so they join the scope; the tool calls and results after
        # it (a function-calling turn) always do, since the answer is made from them.
        before = request.messages[:last_user] if include_history else []
        context = [
            m.history_text() for m in (*before, *request.messages[last_user + 1 :]) if m.role not in SYSTEM_ROLES
        ]
        return cls(request.tenant, request.model, _sha(*system), _sha(*context), params_hash(request))


def params_hash(request: ChatRequest) -> str:
    """A hash of the request's answer-shaping fields other than model and messages; "" when it has none."""
    params = {**request.extra, **request.generation()}
    if not params:
        return ""
    return _sha(json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def question_hash(question: str) -> str:
    return _sha(normalize_question(question))


def entry_id(scope: Scope, qhash: str) -> str:
    """Deterministic, so storing the same question twice in one scope writes one entry."""
    return _sha(scope.scope_id, qhash)[:32]


def answer_hash(answer: str) -> str:
    """The blocklist's key for an answer; with the entry id (scope + question) it names a question/answer pair."""
    return _sha(answer)[:32]


class AnswerMeta(BaseModel):
    """What an entry keeps besides the answer's text: the rest of the assistant message, what it cost, and when it
    was made (None: a backfilled answer, of unknown age)."""

    model_config = ConfigDict(extra="ignore")

    tool_calls: list[ToolCall] | None = None
    finish_reason: FinishReason = "stop"
    usage: Usage | None = None
    created_at: float | None = None
    # The rest of a stored assistant message (schemas.verbs.StoredAnswer.message_extra).
    message_extra: dict[str, Any] | None = None
    # A refusal or audio answer (content null): relayed, never stored.
    refusal: str | None = None
    audio: dict[str, Any] | None = None

    def younger_than(self, max_age_s: int | None, now: float) -> bool:
        return max_age_s is None or (self.created_at is not None and now - self.created_at <= max_age_s)


class LLMAnswer(BaseModel):
    """One assistant message from the LLM: its text ("" when it only calls tools) and the rest."""

    model_config = ConfigDict(extra="forbid")

    answer: str
    meta: AnswerMeta


class CacheEntry(BaseModel):
    """One answered question, as the write-back task receives it and the tiers store it."""

    model_config = ConfigDict(extra="forbid")

    entry_id: str
    scope_id: str
    tenant: str
    model: str
    system_hash: str
    context_hash: str
    question: str
    question_hash: str
    answer: str
    # float32 bytes of the question's embedding, base64 in JSON.
    vector: VectorBytes
    meta: AnswerMeta = Field(default_factory=AnswerMeta)


class MissJob(BaseModel):
    """A request every tier missed, handed to the LLM queue with what the lookup already computed."""

    model_config = ConfigDict(extra="forbid")

    request: ChatRequest
    vector: VectorBytes
    timings_ms: dict[str, float]


class WritebackJob(BaseModel):
    """Store `entry` in the named tiers; running it twice stores one entry."""

    model_config = ConfigDict(extra="forbid")

    entry: CacheEntry
    redis: bool = True
    pgvector: bool = True
    # Unix time before the entry's content was read (the lookup or the LLM call began): a forget that finished
    # after it refuses the job, which may carry what the forget removed.
    as_of: float = Field(default_factory=time.time)
