"""What `ok`, `degraded` and `down` mean, shared by the gateway's /healthz and `dejavu status` (each reads its own
inputs: producer/gateway.py, worker/tools/probes.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from schemas.keys import LLM_QUEUE, LOOKUP_QUEUE, WRITEBACK_QUEUE

QUEUES: Final = (LOOKUP_QUEUE, LLM_QUEUE, WRITEBACK_QUEUE)
Status = Literal["ok", "degraded", "down"]


@dataclass(frozen=True)
class Health:
    """`ok`; `degraded`: requests are answered but something underneath is down; `down`: they are not."""

    status: Status
    reasons: tuple[str, ...]


def health(redis_ok: bool, postgres_ok: bool, workers: int, lookup_depth: int | None, max_depth: int) -> Health:
    down, degraded = [], []
    if not redis_ok:
        down.append("Redis is unreachable: requests cannot be queued or answered")
    if redis_ok and workers == 0:
        down.append("no worker answers a ping: requests wait in the queue")
    if not postgres_ok:
        degraded.append("Postgres is unreachable: the pgvector tier is skipped and write-backs wait for it")
    if max_depth and lookup_depth is not None and lookup_depth >= max_depth:
        degraded.append(f"the lookup queue is at its limit ({lookup_depth}): producers refuse new requests")
    status: Status = "down" if down else "degraded" if degraded else "ok"
    return Health(status, (*down, *degraded))
