"""Read-only looks at the running system, for `dejavu status` (the gateway reads Postgres's health from the
workers' reports in Redis: schemas.keys.PG_DOWN_KEY)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from schemas.health import QUEUES
from schemas.keys import index_name
from worker.sqlfiles import table_name

if TYPE_CHECKING:
    from celery import Celery

PG_TIMEOUT_S: Final = 3.0


async def queue_depths(r: aioredis.Redis) -> dict[str, int]:
    """Messages waiting per Celery queue (Kombu's Redis transport keeps each queue as a list)."""
    async with r.pipeline(transaction=False) as pipe:
        for queue in QUEUES:
            pipe.llen(queue)
        depths = await pipe.execute()
    return {queue: int(depth) for queue, depth in zip(QUEUES, depths, strict=True)}


def ping(app: Celery, timeout: float) -> list[str]:
    """Names of the worker nodes that answer a ping now (a fresh process: its connection pool holds no stale one)."""
    return sorted(name for reply in app.control.ping(timeout=timeout) or [] for name in reply)


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
