"""What a producer process (client, gateway, `dejavu ask`) reads from `DEJAVU_*` variables, once."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field, SecretStr

from schemas.settings import CommonSettings


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
    # API key -> tenant, as JSON in DEJAVU_GATEWAY_API_KEYS; the tenant always comes from the key. The gateway
    # keeps only the keys' digests in memory.
    gateway_api_keys: dict[str, str] = Field(default_factory=dict)
    gateway_max_body_bytes: int = 1024 * 1024
    # When set, /metrics and the detailed /healthz need `Authorization: Bearer <this key>`.
    metrics_key: SecretStr | None = None
    # `dejavu report`'s price table: {"model": {"prompt_per_1m": 2.5, "completion_per_1m": 10.0}} (producer.report).
    prices_file: Path | None = None


@functools.cache
def get_settings() -> ProducerSettings:
    return ProducerSettings()
