"""The settings both sides must agree on, read from the same `DEJAVU_*` variables.

A producer and a worker that disagreed on these would compute different scopes or size limits for the
same request, so they are declared once here; each side's own settings class extends this one with
what only it reads (`producer.settings.ProducerSettings`, `worker.settings.Settings`).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """The `DEJAVU_*` variables read by producers and workers alike; the README lists every variable."""

    model_config = SettingsConfigDict(env_prefix="DEJAVU_", extra="ignore")

    # The broker and the reply lists (with the password, if Redis has one).
    redis_url: str = "redis://127.0.0.1:6390/0"
    # Used when a request names no model (the gateway always names one).
    llm_model: str = "standin-1"
    default_timeout_s: float = 30.0
    max_question_bytes: int = 8 * 1024
    # Producers refuse new requests with `overloaded` while the lookup queue is this deep (0: never);
    # `dejavu status` reports the stack degraded there.
    max_queue_depth: int = Field(default=2000, ge=0)
    # Earlier turns of a conversation join the cache scope (off: only system prompt + question).
    scope_includes_history: bool = True
