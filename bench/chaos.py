"""`make chaos`: a bounded load-and-fault run against the system `make run` starts.

Starts its own stack under .var/chaos (loopback only, fresh each run, stops by itself), then sends about
10,000 requests at ~200 per second from concurrent async producers: cold questions, exact repeats and
paraphrases (Quora duplicate pairs that the embedder puts well above the threshold and every other question
well below it, so each question's right answers are known). The stand-in LLM's answer names the question it
answers, so a checker can tell a right answer from one meant for another question. During the run it
SIGKILLs a lookup worker node (and starts it again, as a supervisor would), restarts Redis, and stops
Postgres for 15 s. Then a burst of 50 identical cold questions at once. Prints a table and writes
bench/results/chaos.json.

Producers behave as a careful client would: a send that fails because Redis is restarting is retried with
the same request id (idempotent), and so is the wait for the reply.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from bench.spine import DATA, RESULTS
from bench.stats import pct
from producer.aclient import AsyncClient
from producer.base import Overloaded, ReplyTimeout
from producer.client import Client
from producer.settings import ProducerSettings
from schemas.keys import reply_key
from schemas.messages import ChatReply, ChatRequest
from worker import guards
from worker.embed import Embedder
from worker.local.servers import LocalStack, free_port
from worker.local.standin.answer import standin_answer
from worker.settings import Settings

TIMEOUT_S = 60.0
# Every question of one group must be this far below the threshold from every other group's questions.
MARGIN = 0.05


@dataclass
class Group:
    """Questions that mean the same thing: any of their stand-in answers is a right answer for each."""

    texts: list[str]

    @property
    def right_answers(self) -> set[str]:
        return {standin_answer(t) for t in self.texts}


@dataclass
class Outcome:
    group: int
    kind: str
    request_id: str = ""
    latency_ms: float | None = None
    reply: ChatReply | None = None
    failure: str | None = None  # "lost", "overloaded", "unsent"


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    in_flight: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)  # "send" / "wait"
    retry_causes: Counter[str] = field(default_factory=Counter)


def build_groups(embedder: Embedder, threshold: float, n: int) -> list[Group]:
    """Paraphrase pairs that are sure hits for each other and sure misses for everything else, topped up with
    single MedQuAD questions held to the same distance."""
    candidates: list[list[str]] = []
    with open(DATA / "qqp_pairs_dev.jsonl") as f:
        for line in f:
            row = json.loads(line)
            a, b = row["text_a"].strip(), row["text_b"].strip()
            if row["label"] == 1 and a.lower() != b.lower() and guards.check(b, a).ok:
                candidates.append([a, b])
    with open(DATA / "medquad_qa.jsonl") as f:
        candidates += [[json.loads(line)["question"].strip()] for line in f]
    random.Random(7).shuffle(candidates)
    groups: list[Group] = []
    kept = np.zeros((0, embedder.profile.dim), dtype=np.float32)
    for start in range(0, len(candidates), 256):
        batch = candidates[start : start + 256]
        vectors = embedder.embed([t for texts in batch for t in texts])
        offset = 0
        for texts in batch:
            v, offset = vectors[offset : offset + len(texts)], offset + len(texts)
            if len(texts) == 2 and float(v[0] @ v[1]) < threshold + 0.02:
                continue
            if len(kept) and float((kept @ v.T).max()) >= threshold - MARGIN:
                continue
            groups.append(Group(texts))
            kept = np.vstack([kept, v])
            if len(groups) == n:
                return groups
    return groups


class Load:
    def __init__(self, client: AsyncClient, groups: list[Group], tenant: str, run: Run) -> None:
        self.client, self.groups, self.tenant, self.run = client, groups, tenant, run
        self.next_cold = 0
        self.rng = random.Random(11)
        self.warm: list[int] = []
        self.warming: list[tuple[float, int]] = []  # (warm from, group), in order

    def pick(self, cold_share: float) -> tuple[int, str, str]:
        """A group, the kind of ask and its text: cold (a group's first question), repeat or paraphrase."""
        now = time.monotonic()
        while self.warming and self.warming[0][0] <= now:
            self.warm.append(self.warming.pop(0)[1])
        warm = self.warm
        if not warm or (self.rng.random() < cold_share and self.next_cold < len(self.groups)):
            i, self.next_cold = self.next_cold, self.next_cold + 1
            return i, "cold", self.groups[i].texts[0]
        i = self.rng.choice(warm)
        texts = self.groups[i].texts
        if len(texts) > 1 and self.rng.random() < 0.5:
            return i, "paraphrase", texts[1]
        return i, "repeat", texts[0]

    async def one(self, group: int, kind: str, text: str) -> Outcome:
        out = Outcome(group, kind)
        request = self.client.request(text, tenant=self.tenant, timeout=TIMEOUT_S)
        out.request_id = request.request_id
        start = time.perf_counter()
        self.run.in_flight += 1
        try:
            if await self._send(request, out):
                out.reply = await self._wait(request, out)
        finally:
            self.run.in_flight -= 1
        if out.reply is not None:
            out.latency_ms = (time.perf_counter() - start) * 1000
            if kind == "cold" and out.reply.ok:
                # Repeats and paraphrases of it may follow once its write-back has landed.
                self.warming.append((time.monotonic() + 1.0, group))
        return out

    async def _send(self, request: ChatRequest, out: Outcome) -> bool:
        while True:
            try:
                await self.client.send(request)
                return True
            except Overloaded:
                out.failure = "overloaded"
                return False
            except (RedisError, OSError) as exc:
                # Redis is restarting: send the same request again (same id, so at most one reply).
                self._retrying("send", exc)
                if request.expired():
                    out.failure = "unsent"
                    return False
                await asyncio.sleep(0.2)

    async def _wait(self, request: ChatRequest, out: Outcome) -> ChatReply | None:
        while True:
            try:
                # A little past the deadline: the worker's `deadline` reply is an answer, not a loss.
                return await self.client.get_reply(request.request_id, max(0.1, request.deadline + 5 - time.time()))
            except ReplyTimeout:
                out.failure = "lost"
                return None
            except (RedisError, OSError) as exc:
                self._retrying("wait", exc)
                await asyncio.sleep(0.2)

    def _retrying(self, what: str, exc: Exception) -> None:
        self.run.retries[what] += 1
        self.run.retry_causes[f"{what} {type(exc).__name__}: {str(exc)[:80]}"] += 1


async def drive(load: Load, total: int, rate: float, cold_share: float) -> None:
    tasks = []
    start = time.monotonic()
    for n in range(total):
        # Open loop: requests go out on schedule whether or not earlier ones were answered.
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(load.one(*load.pick(cold_share))))
    load.run.outcomes = list(await asyncio.gather(*tasks))


async def faults(stack: LocalStack, run: Run, at: dict[str, float], pg_down_s: float) -> None:
    """The faults, each at its second of the run; records how many requests were in flight at each."""
    start = time.monotonic()

    async def at_second(name: str) -> None:
        await asyncio.sleep(max(0.0, start + at[name] - time.monotonic()))
        run.faults.append({"fault": name, "at_s": round(time.monotonic() - start, 1), "in_flight": run.in_flight})

    await at_second("sigkill_lookup_node")
    await asyncio.to_thread(stack.stop_one, "lookup1", signal.SIGKILL)
    await asyncio.sleep(3)  # a supervisor (systemd, Kubernetes) restarts it
    stack.start_worker("lookup1", "lookup,backfill", "solo", 1)
    await at_second("restart_redis")
    await asyncio.to_thread(stack.stop_one, "redis")
    await asyncio.to_thread(stack.start_redis)
    await at_second("stop_postgres")
    await asyncio.to_thread(stack.stop_one, "postgres", signal.SIGINT)
    await asyncio.sleep(pg_down_s)
    await asyncio.to_thread(stack.start_postgres)
    run.faults.append(
        {"fault": "postgres_back", "at_s": round(time.monotonic() - start, 1), "in_flight": run.in_flight}
    )


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


async def duplicates(client: AsyncClient, outcomes: list[Outcome]) -> int:
    """Requests with a second reply waiting after the first was read (or any reply after a loss)."""
    async with client.redis.pipeline(transaction=False) as pipe:
        for o in outcomes:
            pipe.llen(reply_key(o.request_id))
        lengths = await pipe.execute()
    return sum(1 for o, n in zip(outcomes, lengths, strict=True) if n and o.reply is not None)


def tally(run: Run, groups: list[Group], seconds: float) -> dict[str, Any]:
    outcomes = run.outcomes
    replies = [o for o in outcomes if o.reply is not None]
    answered = [o for o in replies if o.reply and o.reply.ok]
    errors = Counter(str(o.reply.error.code) for o in replies if o.reply and o.reply.error)
    errors.update(o.failure for o in outcomes if o.failure in ("overloaded", "unsent"))
    wrong = [o for o in answered if o.reply and o.reply.answer not in groups[o.group].right_answers]
    latencies = [o.latency_ms for o in answered if o.latency_ms is not None]
    waits = [o.reply.timings_ms["queue_wait"] for o in answered if o.reply and "queue_wait" in o.reply.timings_ms]
    return {
        "sent": len(outcomes),
        "answered": len(answered),
        "errors": dict(errors),
        "lost": sum(o.failure == "lost" for o in outcomes),
        "wrong": len(wrong),
        "wrong_examples": [
            {"asked": groups[o.group].texts, "got": (o.reply.answer or "")[:160]} for o in wrong[:5] if o.reply
        ],
        "kinds": dict(Counter(o.kind for o in outcomes)),
        "tiers": dict(Counter(str(o.reply.tier) for o in answered if o.reply)),
        "unique_cold_questions": sum(o.kind == "cold" for o in outcomes),
        "latency_ms": pct(latencies) if latencies else {},
        # How much of that latency was waiting on the lookup queue (the pool behind the offered rate).
        "queue_wait_ms": pct(waits) if waits else {},
        "achieved_rate_per_s": round(len(outcomes) / seconds, 1),
        "send_retries": run.retries["send"],
        "wait_retries": run.retries["wait"],
        "retry_causes": dict(run.retry_causes.most_common(8)),
        "faults": run.faults,
    }


async def chaos(stack: LocalStack, args: argparse.Namespace, groups: list[Group]) -> dict[str, Any]:
    tenant = f"chaos-{random.randrange(16**8):08x}"
    run = Run()
    # Kept out of the load, so both of its questions are still cold for the paraphrase burst.
    spare = groups.pop(max(i for i, g in enumerate(groups) if len(g.texts) == 2))
    async with AsyncClient(ProducerSettings()) as client:
        load = Load(client, groups, tenant, run)
        started = time.monotonic()
        at = {"sigkill_lookup_node": 0.2, "restart_redis": 0.45, "stop_postgres": 0.6}
        seconds = args.requests / args.rate
        fault_task = asyncio.create_task(faults(stack, run, {k: v * seconds for k, v in at.items()}, args.pg_down_s))
        await drive(load, args.requests, args.rate, args.cold_share)
        await fault_task
        elapsed = time.monotonic() - started
        calls = stack.llm_calls()
        await asyncio.sleep(3)  # a duplicate reply would be published by now
        result = tally(run, groups, elapsed)
        result["duplicated"] = await duplicates(client, run.outcomes)
        result["llm_calls"] = calls
        result.update(await burst(client, stack, tenant, args.burst))
        result.update(await paraphrase_burst(client, stack, tenant, spare, args.burst))
    return result


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


def report(r: dict[str, Any]) -> None:
    lat, wait = r["latency_ms"], r["queue_wait_ms"]
    rows = [
        ("sent / answered", f"{r['sent']} / {r['answered']}  ({r['achieved_rate_per_s']}/s)"),
        ("errors", json.dumps(r["errors"])),
        ("lost / duplicated / wrong", f"{r['lost']} / {r['duplicated']} / {r['wrong']}"),
        ("llm calls / unique cold questions", f"{r['llm_calls']} / {r['unique_cold_questions']}"),
        (f"burst of {r['burst_size']}: llm calls / answered", f"{r['burst_llm_calls']} / {r['burst_answered']}"),
        (
            f"burst of {r['paraphrase_burst_size']} split over a paraphrase: llm calls",
            f"{r['paraphrase_burst_llm_calls']}",
        ),
        ("latency p50 / p99 under load", f"{lat.get('p50')} / {lat.get('p99')} ms"),
        (
            "of which lookup-queue wait p50 / p99",
            f"{wait.get('p50')} / {wait.get('p99')} ms",
        ),
        ("tiers", json.dumps(r["tiers"])),
        ("send / wait retries (Redis restart)", f"{r['send_retries']} / {r['wait_retries']}"),
    ]
    for name, value in rows:
        print(f"  {name:<38} {value}")
    for f in r["faults"]:
        print(f"  fault {f['fault']:<32} at {f['at_s']:>5} s, {f['in_flight']} requests in flight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second, open loop")
    parser.add_argument("--cold-share", type=float, default=0.08, help="share of requests that are a new question")
    parser.add_argument("--pg-down-s", type=float, default=15.0)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--llm-delay-ms", type=float, default=800.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "chaos.json")
    args = parser.parse_args()

    settings = Settings()
    profile = settings.profile()
    print("choosing question groups (paraphrases that must hit, and nothing else nearby) ...")
    embedder = Embedder(profile, settings.model_cache_dir, threads=2)
    groups = build_groups(embedder, profile.threshold_redis, int(args.requests * args.cold_share * 2) + 400)
    print(f"  {len(groups)} groups, {sum(len(g.texts) > 1 for g in groups)} with a paraphrase")

    root = Path(".var/chaos")
    shutil.rmtree(root, ignore_errors=True)
    stack = LocalStack(root, redis_port=free_port(), pg_port=free_port(), llm_port=free_port(),
                       llm_delay_ms=args.llm_delay_ms)  # fmt: skip
    stack.worker_loglevel = "WARNING"
    try:
        stack.start()
        os.environ.update(stack.env())
        stack.start_workers(1, 2, lookup_pool="solo")
        client = Client(ProducerSettings())
        try:
            client.wait_for_workers(3)
        finally:
            client.close()
        print(f"sending {args.requests} requests at {args.rate}/s with faults ...")
        result = asyncio.run(chaos(stack, args, groups))
    finally:
        stack.stop()
    result["params"] = vars(args) | {"out": str(args.out), "groups": len(groups)}
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
