"""`make chaos`: bounded load-and-fault runs against the system `make run` starts.

Each run starts its own stack under .var/chaos/seed-N (loopback only, fresh each run, stops by itself), with Redis as
the docs recommend running it (append-only file, `appendfsync everysec`), then sends about 10,000 requests at
~200 per second from concurrent async producers: cold questions (a share of them streamed), exact repeats and
paraphrases (Quora duplicate pairs that the embedder puts well above the threshold and every other question
well below it, so each question's right answers are known). The stand-in LLM's answer names the question it
answers, so a checker can tell a right answer from one meant for another question. During the run it SIGKILLs
a lookup node twice, SIGKILLs Redis, SIGKILLs the LLM node while answers stream, and stops Postgres for 15 s;
killed processes are started again 3 s later, as a supervisor would. Then a burst of 50 identical cold
questions at once. Prints a table per run and writes bench/results/chaos.json: each run and their total.

Producers behave as a careful client would: a send that fails because Redis is down is retried with the same
request id (idempotent), and so is the wait for the reply. Re-sending what the queue lost is the client's own
(producer.resend); what it re-sent, and where each lost request was last seen, goes in the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.chaos_load import TIMEOUT_S, Group, Load, Run, build_groups, drive
from bench.chaos_tally import duplicates, post_mortem, report, tally
from bench.spine import RESULTS
from bench.stats import machine, pct
from producer.aclient import AsyncClient
from producer.client import Client
from producer.settings import ProducerSettings
from schemas.keys import TAKEN_PREFIX
from worker.embed import Embedder
from worker.local.servers import LocalStack, free_port
from worker.local.standin.answer import standin_answer
from worker.settings import Settings

# When each fault strikes, as a share of the sending time; (fault, share).
SCHEDULE = [
    ("sigkill_lookup_node", 0.15),
    ("sigkill_redis", 0.3),
    ("sigkill_lookup_node_again", 0.45),
    ("sigkill_llm_node_mid_stream", 0.6),
    ("stop_postgres", 0.75),
]
RESTART_AFTER_S = 3.0
# The LLM node's threads: streamed answers hold one for ~1 s each, and the followers of a coalesced miss hold one
# while they wait; 32 saturated at this load, and a backlog there is overload, not what the run is about.
LLM_THREADS = 64


async def held_by(client: AsyncClient, run: Run, node: str) -> list[str]:
    """The requests in flight that `node` holds now (its taken marks, worker.broker and worker.progress)."""
    ids = list(run.in_flight)
    if not ids:
        return []
    marks = await client.redis.mget([TAKEN_PREFIX + rid for rid in ids])
    return [rid for rid, mark in zip(ids, marks, strict=True) if mark and f" {node}@" in mark.decode()]


async def faults(stack: LocalStack, client: AsyncClient, run: Run, seconds: float, pg_down_s: float) -> None:
    """The faults, each at its share of the run; records how many requests were in flight and held at each."""
    start = time.monotonic()

    async def at(name: str, share: float, node: str | None = None) -> None:
        await asyncio.sleep(max(0.0, start + share * seconds - time.monotonic()))
        held = await held_by(client, run, node) if node else []
        run.faults.append({
            "fault": name, "at_s": round(time.monotonic() - start, 1), "in_flight": len(run.in_flight),
            "held_n": len(held), "held": held, "at_monotonic": time.monotonic(),
        })  # fmt: skip

    async def kill_and_restart(name: str, restart: Callable[[], None]) -> None:
        await asyncio.to_thread(stack.stop_one, name, signal.SIGKILL)
        await asyncio.sleep(RESTART_AFTER_S)
        await asyncio.to_thread(restart)

    def lookup1() -> None:
        stack.start_worker("lookup1", "lookup,backfill", "solo", 1)

    for name, share in SCHEDULE:
        if name.startswith("sigkill_lookup_node"):
            await at(name, share, "lookup1")
            await kill_and_restart("lookup1", lookup1)
        elif name == "sigkill_redis":
            await at(name, share)
            await kill_and_restart("redis", stack.start_redis)
        elif name == "sigkill_llm_node_mid_stream":
            await at(name, share, "io1")
            await kill_and_restart("io1", lambda: stack.start_worker("io1", "llm,writeback", "threads", LLM_THREADS))
        else:
            await at(name, share)
            await asyncio.to_thread(stack.stop_one, "postgres", signal.SIGINT)
            await asyncio.sleep(pg_down_s)
            await asyncio.to_thread(stack.start_postgres)
    run.faults.append({"fault": "postgres_back", "at_s": round(time.monotonic() - start, 1),
                       "in_flight": len(run.in_flight)})  # fmt: skip


async def burst(client: AsyncClient, stack: LocalStack, tenant: str, n: int) -> dict[str, Any]:
    question = f"What is the chaos burst question number {random.randrange(10**9)}?"
    replies = await asyncio.gather(*(client.ask(question, tenant=tenant, timeout=TIMEOUT_S) for _ in range(n)))
    right = standin_answer(question)
    return {
        "burst_size": n,
        "burst_llm_calls": stack.llm_calls(question),
        "burst_answered": sum(r.ok for r in replies),
        "burst_wrong": sum(r.ok and r.answer != right for r in replies),
        "burst_tiers": dict(Counter(str(r.tier) for r in replies)),
    }


async def paraphrase_burst(client: AsyncClient, stack: LocalStack, tenant: str, group: Group, n: int) -> dict[str, Any]:
    """`n` asks split between a cold question and its paraphrase at once: coalescing joins identical questions
    only, so this costs one call per distinct text (the paraphrase's later asks then hit the cache)."""
    texts = [group.texts[i % 2] for i in range(n)]
    replies = await asyncio.gather(*(client.ask(t, tenant=tenant, timeout=TIMEOUT_S) for t in texts))
    return {
        "paraphrase_burst_size": n,
        "paraphrase_burst_llm_calls": sum(stack.llm_calls(t) for t in group.texts),
        "paraphrase_burst_wrong": sum(r.ok and r.answer not in group.right_answers for r in replies),
    }


async def chaos(stack: LocalStack, args: argparse.Namespace, groups: list[Group], seed: int) -> dict[str, Any]:
    tenant = f"chaos-{random.Random(seed).randrange(16**8):08x}"
    run = Run()
    groups = list(groups)
    # Kept out of the load, so both of its questions are still cold for the paraphrase burst.
    spare = groups.pop(max(i for i, g in enumerate(groups) if len(g.texts) == 2))
    async with AsyncClient(ProducerSettings()) as client:
        load = Load(client, groups, tenant, run, seed, args.stream_share)
        started = time.monotonic()
        seconds = args.requests / args.rate
        fault_task = asyncio.create_task(faults(stack, client, run, seconds, args.pg_down_s))
        await drive(load, args.requests, args.rate, args.cold_share)
        await fault_task
        elapsed = time.monotonic() - started
        calls = stack.llm_calls()
        await asyncio.sleep(3)  # a duplicate reply would be published by now
        result = tally(run, groups, elapsed)
        result.update(await duplicates(client, run.outcomes))
        result["lost_requests"] = await post_mortem(client, [o for o in run.outcomes if o.failure == "lost"])
        result["resent"] = dict(client.resender.resent)
        result["llm_calls"] = calls
        result["llm_calls_per_cold_question"] = round(calls / max(1, result["unique_cold_questions"]), 3)
        result.update(await burst(client, stack, tenant, args.burst))
        result.update(await paraphrase_burst(client, stack, tenant, spare, args.burst))
    return result


def one_run(args: argparse.Namespace, groups: list[Group], seed: int) -> dict[str, Any]:
    # Each run's servers and logs apart, kept after the run for a post-mortem.
    root = Path(f".var/chaos/seed-{seed}")
    shutil.rmtree(root, ignore_errors=True)
    stack = LocalStack(root, redis_port=free_port(), pg_port=free_port(), llm_port=free_port(),
                       llm_delay_ms=args.llm_delay_ms, llm_first_token_ms=args.llm_delay_ms,
                       llm_token_ms=args.llm_token_ms)  # fmt: skip
    stack.worker_loglevel = "WARNING"
    saved = dict(os.environ)
    try:
        stack.start()
        os.environ.update(stack.env())
        stack.start_workers(1, 2, llm_threads=LLM_THREADS, lookup_pool="solo")
        client = Client(ProducerSettings())
        try:
            client.wait_for_workers(3)
        finally:
            client.close()
        print(f"run with seed {seed}: sending {args.requests} requests at {args.rate}/s with faults ...")
        result = asyncio.run(chaos(stack, args, groups, seed))
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
    result["seed"] = seed
    report(result)
    return result


def total(runs: list[dict[str, Any]]) -> dict[str, Any]:
    killed = [x for r in runs for x in r.get("killed_node_ms_raw") or []]
    killed_llm = [x for r in runs for x in r.get("killed_llm_node_ms_raw") or []]
    counts = ("sent", "answered", "lost", "duplicated", "wrong", "streamed_text_duplicated", "llm_calls",
              "unique_cold_questions")  # fmt: skip
    summed = {k: sum(r[k] for r in runs) for k in counts}
    return summed | {
        "runs": len(runs),
        "killed_node_requests": len(killed),
        "killed_node_p99_ms": pct(killed)["p99"] if killed else None,
        "killed_llm_node_requests": len(killed_llm),
        "killed_llm_node_ms": pct(killed_llm) if killed_llm else {},
        "llm_calls_per_cold_question_max": max(r["llm_calls_per_cold_question"] for r in runs),
        "resent": dict(sum((Counter(r["resent"]) for r in runs), Counter())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second, open loop")
    parser.add_argument("--cold-share", type=float, default=0.08, help="share of requests that are a new question")
    parser.add_argument("--stream-share", type=float, default=0.3, help="share of cold questions asked streamed")
    parser.add_argument("--pg-down-s", type=float, default=15.0)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--llm-delay-ms", type=float, default=800.0, help="the stand-in's wait before its answer")
    parser.add_argument("--llm-token-ms", type=float, default=5.0, help="the stand-in's pace once it streams")
    parser.add_argument("--seed", type=int, default=11, help="the first run's seed; run k uses seed + k")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "chaos.json")
    args = parser.parse_args()

    settings = Settings()
    profile = settings.profile()
    print("choosing question groups (paraphrases that must hit, and nothing else nearby) ...")
    embedder = Embedder(profile, settings.model_cache_dir, threads=2)
    groups = build_groups(embedder, profile.threshold_redis, int(args.requests * args.cold_share * 2) + 400)
    print(f"  {len(groups)} groups, {sum(len(g.texts) > 1 for g in groups)} with a paraphrase")
    runs = [one_run(args, groups, args.seed + k) for k in range(args.runs)]
    result = {
        "total": total(runs), "runs": runs, "machine": machine(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": vars(args) | {"out": str(args.out), "groups": len(groups)},
    }  # fmt: skip
    print(f"total: {json.dumps(result['total'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
