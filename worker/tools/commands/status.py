"""`dejavu status`: queue depths, workers that answer a ping, entries per tier, unfinished backfills and the
wrong-hit feedback per tenant; the exit code says ok, degraded or down."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING, Any

from schemas.cli import EXIT_DEGRADED, EXIT_OK, EXIT_UNAVAILABLE
from schemas.health import health
from schemas.keys import LOOKUP_QUEUE
from worker.tools.commands.common import settings as load_settings

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from worker.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the status as JSON")


async def wrong_hits(r: aioredis.Redis) -> dict[str, dict[str, Any]]:
    """Per tenant, over the days its usage hashes keep (schemas.keys.usage_key): the hits the workers served from
    the cache (counted with each reply), the feedback that removed one of its entries (worker.forget) and their
    ratio, the wrong-hit rate that users reported."""
    from schemas.keys import USAGE_PREFIX
    from schemas.messages import Tier
    from worker.forget import FEEDBACK_FIELD

    fields = [*(f"tier:{t.value}" for t in (Tier.EXACT, Tier.REDIS, Tier.PGVECTOR)), FEEDBACK_FIELD]
    keys = [key async for key in r.scan_iter(match=f"{USAGE_PREFIX}*", count=1000)]
    async with r.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, fields)
        values = await pipe.execute()
    tenants: dict[str, dict[str, Any]] = {}
    for key, counts in zip(keys, values, strict=True):
        tenant = key.decode().removeprefix(USAGE_PREFIX).rpartition(":")[0]
        t = tenants.setdefault(tenant, {"hits_served": 0, "wrong_hit_feedback": 0})
        t["hits_served"] += sum(int(v or 0) for v in counts[:-1])
        t["wrong_hit_feedback"] += int(counts[-1] or 0)
    for t in tenants.values():
        t["wrong_hit_rate"] = round(t["wrong_hit_feedback"] / t["hits_served"], 4) if t["hits_served"] else None
    return dict(sorted(tenants.items()))


async def collect_status(settings: Settings) -> dict[str, Any]:
    """Queue depths, workers, entries per tier, unfinished backfills and hits and wrong-hit feedback per tenant;
    a part that cannot be read holds {"error": ...}."""
    from worker.app import app
    from worker.runtime import redis_client
    from worker.tools.probes import pg_entries, ping, queue_depths, redis_entries, unfinished_backfills

    profile = settings.profile().name
    status: dict[str, Any] = {"profile": profile}
    r = redis_client(settings.redis_url)

    async def part(name: str, read: Any) -> None:
        try:
            status[name] = await read
        except Exception as exc:  # report every part, whatever broke
            status[name] = {"error": f"{type(exc).__name__}: {exc}"}

    try:
        await part("queues", queue_depths(r))
        await part("workers", asyncio.to_thread(ping, app, 1.0))
        await part("redis_entries", redis_entries(r, profile))
        await part("pgvector_entries", pg_entries(settings.pg_dsn, profile))
        await part("backfills", unfinished_backfills(settings.pg_dsn, profile))
        await part("tenants", wrong_hits(r))
    finally:
        await r.aclose()
    queues, workers = status["queues"], status["workers"]
    verdict = health(
        redis_ok="error" not in queues,
        postgres_ok=not _failed(status["pgvector_entries"]),
        workers=len(workers) if isinstance(workers, list) else 0,
        lookup_depth=queues.get(LOOKUP_QUEUE),
        max_depth=settings.max_queue_depth,
    )
    status.update(status=verdict.status, reasons=list(verdict.reasons))
    return status


def _failed(part: Any) -> bool:
    return isinstance(part, dict) and "error" in part


def _show(value: Any) -> str:
    if _failed(value):
        return f"unreachable ({value['error']})"
    return "no index/table yet" if value is None else str(value)


def _backfills(jobs: Any) -> str:
    if _failed(jobs):
        return f"backfill  {_show(jobs)}"
    if not jobs:
        return "backfill  no job unfinished"
    lines = [f"backfill  {len(jobs)} job(s) unfinished: loading, or stopped"]
    for job in jobs:
        dropped = "; the pgvector HNSW index is dropped until it finishes" if job["hnsw_dropped"] else ""
        lines.append(f"          - {job['id']}: {job['chunks_done']}/{job['chunks']} chunks done{dropped}; "
                     f"if stopped: dejavu backfill --resume {job['id']}")  # fmt: skip
    return "\n".join(lines)


def _tenants(tenants: Any) -> str:
    if _failed(tenants):
        return f"tenants   {_show(tenants)}"
    if not tenants:
        return "tenants   no hit served yet"
    lines = ["tenants   hits served, wrong-hit feedback (rate), over the days kept:"]
    for name, t in tenants.items():
        rate = "-" if t["wrong_hit_rate"] is None else f"{t['wrong_hit_rate']:.2%}"
        lines.append(f"          - {name}: {t['hits_served']} hits, {t['wrong_hit_feedback']} wrong ({rate})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    status = asyncio.run(collect_status(settings))
    if args.json:
        print(json.dumps(status))
    else:
        queues, workers = status["queues"], status["workers"]
        if isinstance(queues, dict) and "error" not in queues:
            print("queues    " + "  ".join(f"{name}={depth}" for name, depth in queues.items()))
        else:
            print(f"queues    {_show(queues)}")
        if isinstance(workers, list):
            print(f"workers   {len(workers)} answer a ping" + (f": {', '.join(workers)}" if workers else ""))
        else:
            print(f"workers   {_show(workers)}")
        print(f"entries   redis={_show(status['redis_entries'])}  pgvector={_show(status['pgvector_entries'])}"
              f"  (profile {status['profile']})")  # fmt: skip
        print(_backfills(status["backfills"]))
        print(_tenants(status["tenants"]))
        print(f"status    {status['status']}" + "".join(f"\n          - {reason}" for reason in status["reasons"]))
    return {"ok": EXIT_OK, "degraded": EXIT_DEGRADED}.get(status["status"], EXIT_UNAVAILABLE)
