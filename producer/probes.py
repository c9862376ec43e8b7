"""Read-only looks at the running system, shared by `dejavu status` and the gateway's /healthz."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from schemas.keys import LLM_QUEUE, LOOKUP_QUEUE, WRITEBACK_QUEUE, index_name
from worker.sqlfiles import table_name

QUEUES: Final = (LOOKUP_QUEUE, LLM_QUEUE, WRITEBACK_QUEUE)
PG_TIMEOUT_S: Final = 3.0


@dataclass(frozen=True)
class Health:
    """`ok`; `degraded`: requests are answered but something underneath is down; `down`: they are not."""

    status: Literal["ok", "degraded", "down"]
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
    status: Literal["ok", "degraded", "down"] = "down" if down else "degraded" if degraded else "ok"
    return Health(status, (*down, *degraded))


async def queue_depths(r: aioredis.Redis) -> dict[str, int]:
    """Messages waiting per Celery queue (Kombu's Redis transport keeps each queue as a list)."""
    async with r.pipeline(transaction=False) as pipe:
        for queue in QUEUES:
            pipe.llen(queue)
        depths = await pipe.execute()
    return {queue: int(depth) for queue, depth in zip(QUEUES, depths, strict=True)}


async def redis_entries(r: aioredis.Redis, profile: str) -> int | None:
    """Entries in the Redis tier (the vector index's document count); None before the index exists."""
    try:
        info: dict[str, object] = await r.ft(index_name(profile)).info()  # type: ignore[no-untyped-call]
    except ResponseError:
        return None
    return int(float(str(info["num_docs"])))


@asynccontextmanager
async def _pg(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """One short-lived connection per look: these run rarely, from the CLI and /healthz."""
    conn = await asyncpg.connect(dsn, timeout=PG_TIMEOUT_S)
    try:
        yield conn
    finally:
        await conn.close()


async def pg_entries(dsn: str, profile: str) -> int | None:
    """Rows in the pgvector tier; None before the table exists."""
    async with _pg(dsn) as conn:
        if await conn.fetchval("SELECT to_regclass($1)", table_name(profile)) is None:
            return None
        # table_name() is a safe identifier: profile names are [a-z0-9_]{1,32}.
        return int(await conn.fetchval(f"SELECT count(*) FROM {table_name(profile)}"))


async def unfinished_backfills(dsn: str, profile: str) -> list[dict[str, Any]]:
    """This profile's backfill jobs not finished: loading now, or stopped and waiting for `--resume` (a job
    that dropped the HNSW index leaves the pgvector tier without it until then)."""
    async with _pg(dsn) as conn:
        if await conn.fetchval("SELECT to_regclass('dejavu_backfill_jobs')") is None:
            return []
        rows = await conn.fetch(
            "SELECT j.id, j.chunks, j.hnsw_rebuild IS NOT NULL AS hnsw_dropped, j.created_at, "
            "(SELECT count(*) FROM dejavu_backfill_chunks c WHERE c.job_id = j.id AND c.done) AS chunks_done "
            "FROM dejavu_backfill_jobs j WHERE j.profile = $1 AND j.finished_at IS NULL ORDER BY j.created_at",
            profile,
        )
    return [
        {"id": r["id"], "chunks_done": int(r["chunks_done"]), "chunks": r["chunks"], "hnsw_dropped": r["hnsw_dropped"],
         "created_at": r["created_at"].isoformat()}
        for r in rows
    ]  # fmt: skip


async def pg_ping(dsn: str) -> None:
    """Raises if Postgres does not accept a connection and a query."""
    async with _pg(dsn) as conn:
        await conn.fetchval("SELECT 1")
