"""Bulk loads (`dejavu backfill`), worker side: one chunk task, and the HNSW build strategy.

A chunk task, in order:
    load the chunk's rows (Postgres) -> embed the questions (each alone: worker.embed) -> one transaction:
    lock the chunk row and the write locks a forget waits for, leave out blocklisted question/answer pairs
    (feedback), COPY the rows into a staging table, merge them into the entries table (ON CONFLICT DO NOTHING,
    or DO UPDATE for keep-last), warm Redis, mark the chunk done.

A chunk already marked done is skipped before any work, and the chunk row lock makes two deliveries of the
same chunk run one after the other: a task that runs twice (redelivered after its worker died, or
re-enqueued by `dejavu backfill --resume`) changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, TypeAdapter

from schemas.cache import CacheEntry, Scope, answer_hash, entry_id, question_hash
from worker import sqlfiles
from worker.errors import UNREACHABLE, TransientError
from worker.runtime import Runtime
from worker.settings import Settings
from worker.tiers.pgvector import SCHEMA_LOCK_ID

log = logging.getLogger(__name__)

COLUMNS = ("id", "scope_id", "tenant", "model", "system_hash", "context_hash", "question", "question_hash",
           "answer", "embedding")  # fmt: skip


class ChunkRow(BaseModel):
    """One row of a chunk as the producer registers it: its line in the file, the Q&A, and whether to warm Redis."""

    model_config = ConfigDict(extra="forbid")

    line: int
    id: str | None = None
    q: str
    a: str
    warm: bool = False


CHUNK_ROWS = TypeAdapter(list[ChunkRow])


@dataclass(frozen=True)
class Chunk:
    job_id: str
    chunk_no: int
    scope: Scope
    keep_last: bool
    rows: list[ChunkRow]
    hashes: list[str]
    ids: list[str]
    # Rows to embed and write: not stored yet, or (keep-last) stored with another answer.
    todo: list[int]


def run_chunk(job_id: str, chunk_no: int, rt: Runtime, worker: str = "") -> dict[str, int]:
    """Load one chunk; returns what it did. Embedding runs in the task's thread, I/O on the runtime's loop."""
    start = time.perf_counter()
    try:
        chunk = rt.run(_load(job_id, chunk_no, rt))
        if chunk is None:
            return {"skipped": 1}
        embed_start = time.perf_counter()
        vectors = rt.embedder.embed([chunk.rows[i].q for i in chunk.todo])
        embed_ms = (time.perf_counter() - embed_start) * 1000
        return rt.run(_write(chunk, vectors, rt, embed_ms, start, worker))
    except UNREACHABLE as exc:
        raise TransientError(f"backfill chunk {job_id}/{chunk_no} will be retried: {exc!r}") from exc


async def _load(job_id: str, chunk_no: int, rt: Runtime) -> Chunk | None:
    await rt.pg_tier.ready()
    row = await rt.pg_pool.fetchrow(sqlfiles.query("backfill_chunk_load", rt.profile.name), job_id, chunk_no)
    if row is None:
        log.warning("backfill chunk %s/%d is not registered (job deleted?); dropped", job_id, chunk_no)
        return None
    if row["done"]:
        return None
    if row["profile"] != rt.profile.name:
        # Vectors of another model would be meaningless in this table; leave it to a worker of that profile.
        log.error("backfill %s is for profile %s, this worker embeds with %s", job_id, row["profile"], rt.profile.name)
        return None
    scope = Scope(row["tenant"], row["model"], row["system_hash"], row["context_hash"])
    keep_last = row["on_duplicate"] == "keep-last"
    rows = CHUNK_ROWS.validate_json(row["payload"])
    hashes = [question_hash(r.q) for r in rows]
    ids = [entry_id(scope, h) for h in hashes]
    stored = {
        r["id"]: (r["question"], r["answer"])
        for r in await rt.pg_pool.fetch(sqlfiles.query("backfill_stored", rt.profile.name), ids)
    }
    todo = [
        i
        for i, (eid, r) in enumerate(zip(ids, rows, strict=True))
        if eid not in stored or (keep_last and stored[eid] != (r.q, r.a))
    ]
    return Chunk(job_id, chunk_no, scope, keep_last, rows, hashes, ids, todo)


async def _write(
    chunk: Chunk, vectors: npt.NDArray[np.float32], rt: Runtime, embed_ms: float, start: float, worker: str
) -> dict[str, int]:
    profile, scope = rt.profile.name, chunk.scope
    warm_ids = [eid for eid, row in zip(chunk.ids, chunk.rows, strict=True) if row.warm]
    merge = "backfill_merge_keep_last" if chunk.keep_last else "backfill_merge_keep_first"
    conn: asyncpg.Connection
    async with rt.pg_pool.acquire() as conn, conn.transaction():
        done = await conn.fetchval(sqlfiles.query("backfill_chunk_lock", profile), chunk.job_id, chunk.chunk_no)
        if done is not False:  # done by another delivery while this one embedded, or the job is gone
            return {"skipped": 1}
        # The blocklist is read under the write locks: a feedback committed before is seen, a later one waits.
        await rt.pg_tier.lock_writes(conn, scope.tenant, chunk.ids)
        blocked = await _blocked(conn, chunk, profile)
        records = [
            (chunk.ids[i], scope.scope_id, scope.tenant, scope.model, scope.system_hash, scope.context_hash,
             chunk.rows[i].q, chunk.hashes[i], chunk.rows[i].a, vector)
            for i, vector in zip(chunk.todo, vectors, strict=True) if i not in blocked
        ]  # fmt: skip
        merged = []
        if records:
            await conn.execute(sqlfiles.query("backfill_stage", profile))
            stage = "backfill_stage_" + sqlfiles.table_name(profile)
            await conn.copy_records_to_table(stage, records=records, columns=COLUMNS)
            merged = await conn.fetch(sqlfiles.query(merge, profile))
        inserted = sum(1 for r in merged if r["inserted"])
        updated = [r["id"] for r in merged if not r["inserted"]]
        # Redis before the commit: if it fails, the chunk is retried whole and nothing is marked done.
        warmed = await _sync_redis(conn, rt, warm_ids, updated)
        counts = {"inserted": inserted, "updated": len(updated), "blocked": len(blocked),
                  "present": len(chunk.rows) - len(merged) - len(blocked), "warmed": warmed}  # fmt: skip
        total_ms = (time.perf_counter() - start) * 1000
        await conn.execute(
            sqlfiles.query("backfill_chunk_done", profile), chunk.job_id, chunk.chunk_no,
            counts["inserted"], counts["updated"], counts["present"], warmed, embed_ms, total_ms, worker,
            len(blocked),
        )  # fmt: skip
    return counts


async def _blocked(conn: asyncpg.Connection, chunk: Chunk, profile: str) -> set[int]:
    """Rows to load whose question/answer pair is on the blocklist for the chunk's tenant."""
    pairs = {
        (r["entry_id"], r["answer_hash"])
        for r in await conn.fetch(sqlfiles.query("backfill_blocked", profile), chunk.ids, chunk.scope.tenant)
    }
    return {i for i in chunk.todo if (chunk.ids[i], answer_hash(chunk.rows[i].a)) in pairs} if pairs else set()


async def _sync_redis(conn: asyncpg.Connection, rt: Runtime, warm_ids: Sequence[str], stale_ids: Sequence[str]) -> int:
    """Drop Redis copies of entries keep-last replaced, then store the warm rows as the table now holds them."""
    if stale_ids:
        await rt.redis_tier.forget(stale_ids)
    if not warm_ids:
        return 0
    rows = await conn.fetch(sqlfiles.query("backfill_entries", rt.profile.name), list(warm_ids))
    as_of = time.time()
    await asyncio.gather(*(rt.redis_tier.store(_entry(row), as_of) for row in rows))
    return len(rows)


def _entry(row: asyncpg.Record) -> CacheEntry:
    fields = {name: row[name] for name in COLUMNS if name not in ("id", "embedding")}
    vector = row["embedding"].to_numpy().astype(np.float32).tobytes()
    return CacheEntry(entry_id=row["id"], vector=vector, **fields)


# --- HNSW build strategy ---


def rebuild_hnsw(existing_rows: int, load_rows: int, settings: Settings) -> bool:
    """Whether a load drops the HNSW index and builds it once afterwards, instead of inserting into it.

    Size rule: build after the load when the load has at least `backfill_hnsw_rebuild_min_rows` rows
    (default 10,000) and at least `backfill_hnsw_rebuild_ratio` (default 4) times the rows already in the
    table; otherwise keep the index and insert. Why: every insert into an HNSW graph is a graph search,
    while one build with the graph in `maintenance_work_mem` is several times cheaper per row, but the
    build also re-indexes the rows already there, and while the index is gone live pgvector lookups scan
    the table exactly, which is only cheap while the table is small. So: large loads into an empty or
    small table build after; small loads, or loads into a large table, insert.
    """
    return (
        load_rows >= settings.backfill_hnsw_rebuild_min_rows
        and load_rows >= settings.backfill_hnsw_rebuild_ratio * existing_rows
    )


async def drop_hnsw(conn: asyncpg.Connection, profile: str) -> str | None:
    """Drop the profile's HNSW index; returns its definition to build it again with, None if there is none."""
    async with conn.transaction():
        # The schema lock: a worker starting now (ensure_schema) must not create the index half-way.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_ID)
        row = await conn.fetchrow(sqlfiles.query("backfill_hnsw_index", profile), sqlfiles.table_name(profile))
        if row is None:
            return None
        await conn.execute(f'DROP INDEX IF EXISTS "{row["schemaname"]}"."{row["indexname"]}"')
        return str(row["indexdef"])


async def build_hnsw(conn: asyncpg.Connection, indexdef: str, maintenance_work_mem: str) -> None:
    """Build the index dropped by `drop_hnsw`, with the graph in memory; a no-op if it exists again."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_ID)
        # The value is validated by Settings' pattern (a number and kB/MB/GB); SET takes no parameters.
        await conn.execute(f"SET LOCAL maintenance_work_mem = '{maintenance_work_mem}'")
        await conn.execute(indexdef.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1))
