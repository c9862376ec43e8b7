"""Removal: the forget request (`dejavu forget`, feedback) and its reply, on the `writeback` queue."""

from __future__ import annotations

import uuid
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.chat import ENTRY_ID_PATTERN, ID_PATTERN, REPLY_TO_PATTERN, TENANT_PATTERN
from schemas.reply import ReplyError

# Forget requests and replies did not change with the chat contract's versions.
FORGET_SCHEMA_VERSION: Final = 1
MAX_REASON_CHARS = 1000


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
