"""`dejavu backfill`, reading side: load historical Q&A into the cache through the worker pool.

    read and check the file -> resolve duplicates -> register the job and its chunks in Postgres (one
    transaction; the HNSW index is dropped there if the size rule says so) -> LPUSH one task per chunk onto
    the `backfill` queue -> poll the chunks table for the progress bar -> build the HNSW index if it was
    dropped -> summary.

Any number of lookup nodes share the chunks (worker.backfill). Policies:
  - a question asked twice in the file: `keep-first` (default) loads the first answer, `keep-last` the last;
  - a question already stored in the scope (an earlier backfill, or an LLM answer): `keep-first` leaves it,
    `keep-last` replaces its answer. Either way, loading the same file again adds and changes nothing.
The whole file is read before anything is stored (memory in proportion to the file): a file that cannot be
read stores nothing, and the total is known for the ETA.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import asyncpg
import redis
import redis.asyncio as aioredis
from tqdm import tqdm

from schemas.cache import Scope
from schemas.keys import BACKFILL_QUEUE, BACKFILL_TASK
from schemas.requests import build_request
from schemas.taskwire import task_message
from worker import sqlfiles
from worker.backfill import CHUNK_ROWS, ChunkRow, build_hnsw, drop_hnsw, rebuild_hnsw
from worker.settings import Settings
from worker.tiers.pgvector import ensure_schema
from worker.tools.backfill_read import (
    Fields,
    Format,
    Plan,
    Policy,
    Reject,
    chunks,
    detect_format,
    plan,
    read_rows,
)

# `--warm-redis all`
# No chunk finished for this long while the queue is empty: say how to recover a chunk a dead worker held.
STALL_HINT_S = 60.0


class UnknownJob(LookupError):
    pass


@dataclass(frozen=True)
class Options:
    source: str  # a path, or "-" for stdin
    fields: Fields = field(default_factory=Fields)
    fmt: Format | None = None  # None: by extension, or by content for stdin
    tenant: str = "default"
    model: str | None = None
    system: str | None = None
    on_duplicate: Policy = "keep-first"
    warm_last: int = 0  # store the last N rows in Redis too (WARM_ALL: every row)
    rejects_path: Path | None = None  # default: ./<file name>.rejects.jsonl


@dataclass(frozen=True)
class Started:
    job_id: str
    plan: Plan
    chunks: int
    hnsw_rebuild: bool
    rejects_path: Path | None
    started_at: float


@dataclass(frozen=True)
class Summary:
    job_id: str
    read: int
    kept: int
    inserted: int
    updated: int
    duplicates_in_file: int
    present: int  # already stored in the scope before this job
    rejected: int
    warmed: int
    blocked: int  # left out: the question/answer pair is on the blocklist (feedback)
    rows_this_run: int
    seconds: float
    embed_ms: float
    worker_ms: float
    hnsw_rebuilt: bool
    rejects_path: Path | None = None
    hnsw_build_s: float = 0.0  # of `seconds`, spent building the index after the load

    @property
    def rows_per_s(self) -> float:
        return self.rows_this_run / self.seconds if self.seconds > 0 else 0.0

    @property
    def embed_share(self) -> float:
        """Embedding's share of the chunk tasks' time (the rest: Postgres, Redis, task overhead)."""
        return self.embed_ms / self.worker_ms if self.worker_ms > 0 else 0.0

    def text(self) -> str:
        rejects = f" (listed in {self.rejects_path})" if self.rejects_path and self.rejected else ""
        return (
            f"backfill {self.job_id} done: {self.read} rows read, {self.inserted} loaded, {self.updated} replaced, "
            f"{self.duplicates_in_file + self.present} skipped as duplicate ({self.duplicates_in_file} in the file, "
            f"{self.present} already stored), {self.rejected} rejected{rejects}, {self.blocked} blocklisted; "
            f"{self.warmed} warmed in Redis; "
            f"{self.seconds:.1f} s, {self.rows_per_s:.0f} rows/s, embedding {self.embed_share:.0%} of worker time"
            + ("; HNSW index built after the load" if self.hnsw_rebuilt else "")
        )


def scope_of(options: Options, settings: Settings) -> Scope:
    """The scope a live one-question request with this tenant, model and system prompt is looked up in.

    Built from a real request (validated like any other), so a later ask hits the backfilled rows.
    """
    request = build_request(settings, "backfill", tenant=options.tenant, model=options.model, system=options.system)
    return Scope.of(request, settings.scope_includes_history)


def read_plan(options: Options, settings: Settings) -> Plan:
    with _open(options.source) as data:
        head = data.peek(64) if hasattr(data, "peek") else b""
        fmt = options.fmt or detect_format(options.source, head)
        return plan(read_rows(data, fmt, options.fields, settings.max_question_bytes), options.on_duplicate)


def start(options: Options, settings: Settings) -> Started:
    """Read the file, register the job and enqueue its chunks; returns at once (the workers do the rest)."""
    started_at = time.perf_counter()
    scope = scope_of(options, settings)
    job_plan = read_plan(options, settings)
    job_id = f"bf-{uuid.uuid4().hex[:12]}"
    rejects_path = write_rejects(job_plan.rejects, _rejects_path(options, job_id))
    payloads = [
        (len(chunk), CHUNK_ROWS.dump_json([ChunkRow(line=r.line, id=r.source_id, q=r.question, a=r.answer, warm=w)
                                           for r, w in chunk]).decode())
        for chunk in chunks(job_plan.rows, settings.backfill_chunk_rows, options.warm_last)
    ]  # fmt: skip
    rebuild = asyncio.run(_register(job_id, options, scope, job_plan, payloads, settings))
    enqueue(job_id, range(len(payloads)), settings)
    return Started(job_id, job_plan, len(payloads), rebuild, rejects_path, started_at)


def run(options: Options, settings: Settings, progress: bool = False) -> Summary:
    started = start(options, settings)
    return wait(started.job_id, settings, progress, started.started_at, started.rejects_path, fresh=True)


def resume(job_id: str, settings: Settings, progress: bool = False) -> Summary:
    """Re-enqueue the chunks not marked done (a chunk still queued runs twice; the second run is a no-op)."""
    started_at = time.perf_counter()
    pending = asyncio.run(_pending(job_id, settings))
    enqueue(job_id, pending, settings)
    return wait(job_id, settings, progress, started_at)


def enqueue(job_id: str, chunk_nos: range | list[int], settings: Settings) -> None:
    r = redis.Redis.from_url(settings.redis_url, protocol=2)
    try:
        pipe = r.pipeline(transaction=False)
        for n, chunk_no in enumerate(chunk_nos, start=1):
            pipe.lpush(BACKFILL_QUEUE, task_message(BACKFILL_TASK, BACKFILL_QUEUE, [job_id, chunk_no]))
            if n % 1000 == 0:
                pipe.execute()
        pipe.execute()
    finally:
        r.close()


def wait(
    job_id: str,
    settings: Settings,
    progress: bool = False,
    started_at: float | None = None,
    rejects_path: Path | None = None,
    fresh: bool = False,
) -> Summary:
    """Wait until every chunk is done (progress bar on stderr), build the HNSW index if it was dropped.

    `fresh`: the job was enqueued by this process, so every row it loads counts for rows/s.
    """
    started_at = started_at or time.perf_counter()
    return asyncio.run(_wait(job_id, settings, progress, started_at, rejects_path, fresh))


def write_rejects(rejects: list[Reject], path: Path) -> Path | None:
    """JSONL, one reject a line with its line number and reason; written only when there are rejects."""
    if not rejects:
        return None
    with path.open("w", encoding="utf-8") as f:
        for reject in rejects:
            f.write(reject.to_json() + "\n")
    return path


def _rejects_path(options: Options, job_id: str) -> Path:
    if options.rejects_path is not None:
        return options.rejects_path
    name = f"{job_id}.stdin" if options.source == "-" else Path(options.source).name
    return Path.cwd() / f"{name}.rejects.jsonl"


@contextmanager
def _open(source: str) -> Iterator[BinaryIO]:
    if source == "-":
        yield sys.stdin.buffer
        return
    with open(source, "rb") as f:
        yield f


async def _connect(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(settings.pg_dsn, timeout=10)


async def _register(
    job_id: str, options: Options, scope: Scope, job_plan: Plan, payloads: list[tuple[int, str]], settings: Settings
) -> bool:
    profile = settings.profile()
    conn = await _connect(settings)
    try:
        await ensure_schema(conn, profile.name, profile.dim)
        existing = int(await conn.fetchval(sqlfiles.query("backfill_count_entries", profile.name)))
        rebuild = rebuild_hnsw(existing, len(job_plan.rows), settings)
        # One transaction: a job is registered with all its chunks or not at all, and its index decision.
        async with conn.transaction():
            await conn.execute(
                sqlfiles.query("backfill_job_insert", profile.name),
                job_id, profile.name, options.source, scope.tenant, scope.model, scope.system_hash,
                scope.context_hash, options.on_duplicate, job_plan.read, len(job_plan.rows),
                job_plan.duplicates, len(job_plan.rejects), len(payloads),
            )  # fmt: skip
            await conn.copy_records_to_table(
                "dejavu_backfill_chunks",
                records=[(job_id, n, rows, payload) for n, (rows, payload) in enumerate(payloads)],
                columns=["job_id", "chunk_no", "rows", "payload"],
            )
            indexdef = await drop_hnsw(conn, profile.name) if rebuild else None
            if indexdef is not None:
                await conn.execute(sqlfiles.query("backfill_job_hnsw", profile.name), job_id, indexdef)
        return indexdef is not None
    finally:
        await conn.close()


async def _pending(job_id: str, settings: Settings) -> list[int]:
    profile = settings.profile().name
    conn = await _connect(settings)
    try:
        if await conn.fetchrow(sqlfiles.query("backfill_job", profile), job_id) is None:
            raise UnknownJob(f"no backfill job {job_id!r}")
        rows = await conn.fetch(sqlfiles.query("backfill_pending", profile), job_id)
        return [int(r["chunk_no"]) for r in rows]
    finally:
        await conn.close()


async def _wait(
    job_id: str, settings: Settings, progress: bool, started_at: float, rejects_path: Path | None, fresh: bool
) -> Summary:
    profile = settings.profile().name
    conn = await _connect(settings)
    r = aioredis.Redis.from_url(settings.redis_url, protocol=2)
    try:
        job = await conn.fetchrow(sqlfiles.query("backfill_job", profile), job_id)
        if job is None:
            raise UnknownJob(f"no backfill job {job_id!r}")
        query = sqlfiles.query("backfill_progress", profile)
        state = await conn.fetchrow(query, job_id)
        first_done = 0 if fresh else int(state["rows_done"])
        bar = tqdm(total=job["rows_kept"], initial=first_done, unit="rows", desc=job_id, disable=not progress,
                   file=sys.stderr, smoothing=0.1, dynamic_ncols=True)  # fmt: skip
        last_change, hinted = time.monotonic(), False
        try:
            while state["chunks_done"] < job["chunks"]:
                await asyncio.sleep(settings.backfill_poll_s)
                state = await conn.fetchrow(query, job_id)
                if state["rows_done"] > bar.n:
                    bar.update(state["rows_done"] - bar.n)
                    last_change = time.monotonic()
                elif not hinted and time.monotonic() - last_change > STALL_HINT_S and not await r.llen(BACKFILL_QUEUE):
                    hinted = True
                    bar.write(
                        f"no chunk finished in {STALL_HINT_S:.0f} s and the {BACKFILL_QUEUE} queue is empty: a "
                        f"worker may have died holding one. Ctrl-C, then `dejavu backfill --resume {job_id}`."
                    )
        finally:
            bar.close()
        build_start = time.perf_counter()
        if job["hnsw_rebuild"] is not None and job["finished_at"] is None:
            if progress:
                print(f"{job_id}: building the HNSW index after the load ...", file=sys.stderr)
            await build_hnsw(conn, job["hnsw_rebuild"], settings.backfill_maintenance_work_mem)
        build_s = time.perf_counter() - build_start
        await conn.execute(sqlfiles.query("backfill_job_finish", profile), job_id)
        return Summary(
            job_id=job_id, read=job["rows_read"], kept=job["rows_kept"], inserted=state["inserted"],
            updated=state["updated"], duplicates_in_file=job["duplicates_in_file"], present=state["present"],
            rejected=job["rejected"], warmed=state["warmed"], blocked=state["blocked"],
            rows_this_run=int(state["rows_done"]) - first_done,
            seconds=time.perf_counter() - started_at, embed_ms=float(state["embed_ms"]),
            worker_ms=float(state["total_ms"]), hnsw_rebuilt=job["hnsw_rebuild"] is not None,
            rejects_path=rejects_path, hnsw_build_s=build_s,
        )  # fmt: skip
    finally:
        await r.aclose()
        await conn.close()
