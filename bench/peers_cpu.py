"""The peers benchmark's CPU phase: CPU per semantic hit of each system, read process by process (bench.cpu).

Each system is asked the semantic-hit questions by `callers` callers CPU_REPS times while the CPU of every process
it uses is read before and after (this process, and for this project the stack's Redis, Postgres, stand-in LLM,
workers and gateway; for RedisVL the stack's Redis); medians. Right after each gateway repetition a bare aiohttp
app (bench.bare_aiohttp) gets the same requests with the same concurrency, for the gateway's own CPU per request
beside the HTTP hop's.
"""

from __future__ import annotations

import math
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from bench.cpu import Sampler, counters_delta, redis_counters
from bench.peer_systems import Served, System, concurrent
from bench.reference import MISS
from worker.local.servers import LocalStack, free_port

CPU_REPS = 3
BARE = "bare-aiohttp"
# Removes what the write-back stored for the questions the LLM answered during a pass (peers.Forgetter), outside the
# measured window, so that every repetition meets the same misses.
Forget = Callable[[Sequence[str], Sequence[Served]], int]


def cpu_rep(
    system: System, texts: Sequence[str], callers: int, sampler: Sampler, rdb: redis.Redis
) -> tuple[list[Served], dict[str, Any]]:
    """One repetition of the CPU phase: `callers` callers share `texts`; CPU per component and Redis's counters."""
    before = redis_counters(rdb.info("commandstats"), rdb.info("cpu"))
    sampler.start()
    served, _ = concurrent(system, texts, callers)
    window = sampler.stop()
    d = counters_delta(before, redis_counters(rdb.info("commandstats"), rdb.info("cpu")))
    return served, {
        "lookups": len(texts), "hits": sum(s.entry != MISS for s in served),
        "answered": sum(s.answer is not None for s in served), "wall_s": round(window.wall_s, 3),
        "cpu_ms": {k: round(v, 2) for k, v in window.cpu_ms.items()},
        "ft_search_calls": int(d["calls"]), "ft_search_cpu_ms": round(d["usec"] / 1000, 2),
    }  # fmt: skip


def cpu_summary(reps: list[dict[str, Any]], components: Sequence[str], per: str = "hits") -> dict[str, Any]:
    """Medians over the repetitions of CPU ms per hit (`per`: "hits", or "answered" for the bare app) and per
    lookup, summed over `components`; the breakdown is the median repetition's."""

    def total(rep: dict[str, Any]) -> float:
        return float(sum(rep["cpu_ms"].get(c, 0.0) for c in components))

    per_hit = [total(r) / r[per] if r[per] else math.nan for r in reps]
    middle = reps[sorted(range(len(reps)), key=lambda i: per_hit[i])[len(reps) // 2]]
    calls = [r["ft_search_cpu_ms"] / r["ft_search_calls"] for r in reps if r["ft_search_calls"]]
    return {
        "components": list(components),
        "cpu_ms_per_hit": round(statistics.median(per_hit), 3),
        "cpu_ms_per_lookup": round(statistics.median(total(r) / r["lookups"] for r in reps), 3),
        "median_rep_cpu_ms_per_hit": {c: round(middle["cpu_ms"].get(c, 0.0) / middle[per], 3) for c in components}
        if middle[per] else {},
        "ft_search_cpu_ms_per_call": round(statistics.median(calls), 4) if calls else None,
        "hits_per_s": round(statistics.median(r[per] / r["wall_s"] for r in reps), 1),
        "reps": reps,
    }  # fmt: skip


def cpu_per_hit(
    system: System, texts: Sequence[str], callers: int, sampler: Sampler, rdb: redis.Redis,
    components: Sequence[str], forget: Forget | None,
) -> dict[str, Any]:  # fmt: skip
    """CPU per semantic hit, CPU_REPS repetitions of the fixed `callers`-caller phase."""
    reps = []
    for _ in range(CPU_REPS):
        served, rep = cpu_rep(system, texts, callers, sampler, rdb)
        if forget is not None:  # outside the window
            forget(texts, served)
        reps.append(rep)
    return cpu_summary(reps, components)


def gateway_cpu(
    gateway: System,
    bare: System,
    texts: Sequence[str],
    callers: int,
    sampler: Sampler,
    rdb: redis.Redis,
    components: Sequence[str],
    forget: Forget,
) -> dict[str, Any]:
    """The gateway's CPU phase, each repetition followed at once by the same requests to the bare aiohttp app."""
    reps, bare_reps = [], []
    for _ in range(CPU_REPS):
        served, rep = cpu_rep(gateway, texts, callers, sampler, rdb)
        reps.append(rep)
        bare_reps.append(cpu_rep(bare, texts, callers, sampler, rdb)[1])
        forget(texts, served)
    out = cpu_summary(reps, components)
    own = cpu_summary(reps, ["gateway"])
    bare_own = cpu_summary(bare_reps, [BARE], per="answered")
    return out | {
        "gateway_process_cpu_ms_per_hit": own["cpu_ms_per_hit"],
        "gateway_process_cpu_ms_per_request": own["cpu_ms_per_lookup"],
        BARE: {k: bare_own[k] for k in ("cpu_ms_per_hit", "hits_per_s", "reps")},
    }


def start_bare(stack: LocalStack) -> str:
    """bench.bare_aiohttp as one more of the stack's processes (stopped with it); returns its base URL."""
    port = free_port()
    stack.spawn(BARE, [sys.executable, "-m", "bench.bare_aiohttp", "--port", str(port)])
    end = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return f"http://127.0.0.1:{port}"
        except OSError:
            if stack.procs[BARE].poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"{BARE} did not start; see {stack.root / (BARE + '.log')}") from None
            time.sleep(0.1)


def idle_cpu(sampler: Sampler, seconds: float = 3.0) -> dict[str, float]:
    """CPU ms per second each component spends with nothing asked: the floor under every phase's figures."""
    sampler.start()
    time.sleep(seconds)
    window = sampler.stop()
    return {k: round(v / window.wall_s, 2) for k, v in window.cpu_ms.items()}


def search_config(rdb: redis.Redis) -> dict[str, Any]:
    """RediSearch's version and its query-thread settings: with worker threads a query runs off Redis's main
    thread, and commandstats would no longer time it whole. (2.10 as shipped here has no WORKERS setting: queries
    run on the main thread, and INFO cpu's main-thread figure equals the whole server's in the recall part.)"""

    def text(x: Any) -> str:
        return x.decode() if isinstance(x, bytes) else str(x)

    modules = {text(m.get(b"name", m.get("name"))): m.get(b"ver", m.get("ver")) for m in rdb.module_list()}
    config = rdb.execute_command("FT.CONFIG", "GET", "*")  # type: ignore[no-untyped-call]
    items = config.items() if isinstance(config, dict) else config
    return {"redisearch_version": modules.get("search"),
            "worker_settings": {text(k): text(v) for k, v in items if "WORKER" in text(k).upper()}}  # fmt: skip
