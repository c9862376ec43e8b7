"""Storing answers off the reply path. Idempotent: entry ids are deterministic and first write wins."""

from __future__ import annotations

from schemas.cache import WritebackJob
from worker.errors import UNREACHABLE, TransientError
from worker.runtime import Runtime


async def store(job: WritebackJob, rt: Runtime) -> dict[str, bool]:
    """Write `job.entry` to the tiers it names; returns which tiers this call actually wrote."""
    written: dict[str, bool] = {}
    try:
        if job.redis:
            written["redis"] = await rt.redis_tier.store(job.entry)
        if job.pgvector:
            written["pgvector"] = await rt.pg_tier.store(job.entry)
    except UNREACHABLE as exc:
        raise TransientError(f"write-back of entry {job.entry.entry_id} will be retried: {exc!r}") from exc
    return written
