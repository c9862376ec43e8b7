"""What a producer process (client, gateway, `dejavu ask`) reads from `DEJAVU_*` variables, once."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from schemas.messages import TENANT_PATTERN
from schemas.settings import CommonSettings


class TenantLimits(BaseModel):
    """One API key's limits at the gateway (None: none). Counted in Redis, so every gateway shares them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Requests of this key's tenant waiting for an answer at once.
    max_in_flight: int | None = Field(default=None, ge=1)
    # LLM answers (misses, no-cache) and the tokens they spent, per minute; cache hits count against neither.
    llm_calls_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    # Whether `Cache-Control: no-cache` (always an LLM call) is honoured for this key.
    allow_no_cache: bool = True


class TenantKey(BaseModel):
    """What an API key stands for: its tenant, and its limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(pattern=TENANT_PATTERN)
    limits: TenantLimits = Field(default_factory=TenantLimits)


class ProducerSettings(CommonSettings):
    """The producer side's settings: the shared ones plus the clients' and the gateway's own."""

    # Redis connections one producer process (client, gateway) may hold; callers beyond it wait for a free one.
    # Mind Redis's own maxclients (10,000) across processes.
    client_max_connections: int = Field(default=1000, ge=2)
    # An async client (the gateway) looks at a request still unanswered this long after it was sent, and sends it
    # again if the queue lost it (producer.resend; 0: never). Longer waits only look; a re-send doubles it.
    resend_after_s: float = Field(default=3.0, ge=0.0)
    # What an overloaded producer tells callers to wait before retrying (HTTP Retry-After).
    overloaded_retry_after_s: int = 1

    # --- HTTP gateway (producer.gateway) ---
    # API key -> tenant, or -> {"tenant": ..., "limits": {...}} (TenantLimits), as JSON in DEJAVU_GATEWAY_API_KEYS;
    # the tenant always comes from the key. The gateway keeps only the keys' digests in memory.
    gateway_api_keys: dict[str, str | TenantKey] = Field(default_factory=dict)
    # The lookup queue's backpressure in bytes, beside DEJAVU_MAX_QUEUE_DEPTH's messages (0: no limit).
    max_queue_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    gateway_max_body_bytes: int = 1024 * 1024
    # /metrics and the detailed /healthz need `Authorization: Bearer <this key>`. Unset, they are refused unless the
    # gateway listens on loopback or metrics_public is true.
    metrics_key: SecretStr | None = None
    metrics_public: bool = False
    # `dejavu report`'s price table: {"model": {"prompt_per_1m": 2.5, "completion_per_1m": 10.0}} (producer.report).
    prices_file: Path | None = None


def tenant_keys(settings: ProducerSettings) -> dict[str, TenantKey]:
    """DEJAVU_GATEWAY_API_KEYS with the old form (key -> tenant) read as a key without limits."""
    return {key: TenantKey(tenant=v) if isinstance(v, str) else v for key, v in settings.gateway_api_keys.items()}


@functools.cache
def get_settings() -> ProducerSettings:
    return ProducerSettings()
