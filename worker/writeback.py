"""Storing answers off the reply path. Idempotent: entry ids are deterministic and first write wins.

Neither tier stores a blocklisted question/answer pair (feedback), nor content read before a forget of the entry
or its tenant finished (worker.forget). Redis goes first, so that it still fills while Postgres is down.
"""

from __future__ import annotations

from schemas.cache import CacheEntry, WritebackJob, answer_hash
from worker.errors import PG_DOWN, UNREACHABLE, TransientError
from worker.runtime import Runtime
from worker.tiers import Stored

REFUSED = (Stored.BLOCKED, Stored.FORGOTTEN)


async def store(job: WritebackJob, rt: Runtime) -> dict[str, Stored]:
    """Write `job.entry` to the tiers it names; returns what each tier did."""
    entry = job.entry
    done: dict[str, Stored] = {}
    try:
        if job.redis:
            done["redis"] = await rt.redis_tier.store(entry, job.as_of)
        if job.pgvector and done.get("redis") not in REFUSED:
            try:
                done["pgvector"] = await rt.pg_tier.store(entry, job.as_of)
            except PG_DOWN as exc:
                await rt.report_pg_down(exc)
                raise
            await rt.report_pg_up()
        if Stored.BLOCKED in done.values():
            await _unserve(entry, rt, stored_in_redis=done.get("redis") == Stored.STORED)
    except UNREACHABLE as exc:
        raise TransientError(f"write-back of entry {entry.entry_id} will be retried: {exc!r}") from exc
    return done


async def _unserve(entry: CacheEntry, rt: Runtime, stored_in_redis: bool) -> None:
    if stored_in_redis:
        # Postgres knew the pair and Redis did not (it lost its copy): take the entry back, restore the copy.
        await rt.redis_tier.forget([entry.entry_id])
        await rt.redis_tier.block(entry.entry_id, [answer_hash(entry.answer)], entry.tenant)
    else:
        # The coalescer keeps the LLM's answer a minute for followers: a blocked one is not served from there either.
        await rt.redis_tier.drop_coalesced(entry.entry_id)
