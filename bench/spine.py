"""`make bench`: end-to-end latency per tier (enqueue -> reply received) and sustained hits/s.

Starts its own stack (the same servers and worker layout as `make run`) under .var/bench, seeds it with
real MedQuAD questions and Quora paraphrase pairs from ../shared/data, and measures each tier several
times. Prints a table and writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from bench.stack import fresh_stack
from bench.stats import pct
from producer.client import Client
from producer.settings import ProducerSettings
from schemas.keys import entry_prefix
from schemas.messages import ChatReply
from worker.embed import Embedder
from worker.local.servers import LocalStack, free_port
from worker.refusal import refusal
from worker.settings import EmbedProfile, Settings

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
TENANT = "bench"
GATEWAY_KEY = "bench-key"


def load_questions(n: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    with open(DATA / "medquad_qa.jsonl") as f:
        for line in f:
            q = json.loads(line)["question"].strip()
            if q.lower() not in seen:
                seen.add(q.lower())
                out.append(q)
            if len(out) == n:
                break
    return out


def paraphrase_pairs(embedder: Embedder, profile: EmbedProfile, n: int) -> list[tuple[str, str, float]]:
    """Quora duplicate pairs whose paraphrase is a sure hit (cosine a margin above the threshold, and the guards
    and the verifier agree)."""
    threshold = profile.threshold_redis
    pairs = []
    with open(DATA / "qqp_pairs_dev.jsonl") as f:
        for line in f:
            row = json.loads(line)
            if row["label"] == 1 and row["text_a"].strip().lower() != row["text_b"].strip().lower():
                pairs.append((row["text_a"].strip(), row["text_b"].strip()))
            if len(pairs) >= n * 8:
                break
    a = embedder.embed([p[0] for p in pairs])
    b = embedder.embed([p[1] for p in pairs])
    sims = (a * b).sum(axis=1)
    chosen, seen = [], set()
    for (ta, tb), s in zip(pairs, sims, strict=True):
        sure = s >= threshold + 0.02 and refusal(tb, ta, float(s), True, profile.verifier) is None
        if sure and ta.lower() not in seen:
            seen.add(ta.lower())
            chosen.append((ta, tb, float(s)))
    return chosen[:n]


def timed(client: Client, question: str) -> tuple[float, ChatReply]:
    start = time.perf_counter()
    reply = client.ask(question, tenant=TENANT, timeout=60)
    return (time.perf_counter() - start) * 1000, reply


def sequential(client: Client, questions: list[str], tier: str) -> tuple[list[float], int]:
    latencies, wrong_tier = [], 0
    for q in questions:
        ms, reply = timed(client, q)
        if reply.tier == tier:
            latencies.append(ms)
        else:
            wrong_tier += 1
    return latencies, wrong_tier


def sustained(client: Client, questions: list[str], tier: str, threads: int, seconds: float) -> float:
    """Hits per second with `threads` concurrent producers asking in a loop."""
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def loop(i: int) -> None:
        k = i
        while time.monotonic() < stop:
            _, reply = timed(client, questions[k % len(questions)])
            counts[i] += reply.tier == tier
            k += threads

    start = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, range(threads)))
    return sum(counts) / (time.monotonic() - start)


class GatewayCaller:
    """One keep-alive HTTP connection to the gateway's OpenAI-compatible route, as an SDK would hold."""

    def __init__(self, url: str, api_key: str, model: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.model = model

    def ask(self, question: str) -> tuple[float, str]:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": question}]})
        start = time.perf_counter()
        self.conn.request("POST", "/v1/chat/completions", body=body, headers=self.headers)
        resp = self.conn.getresponse()
        resp.read()
        return (time.perf_counter() - start) * 1000, resp.getheader("x-dejavu-tier") or ""

    def close(self) -> None:
        self.conn.close()


def gateway_figures(url: str, model: str, questions: list[str], threads: int, seconds: float) -> dict[str, Any]:
    """Exact-hit latency and hits/s through the gateway, to set beside the direct client's."""
    caller = GatewayCaller(url, GATEWAY_KEY, model)
    latencies = [ms for ms, tier in (caller.ask(q) for q in questions) if tier == "exact"]
    caller.close()
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def loop(i: int) -> None:
        own = GatewayCaller(url, GATEWAY_KEY, model)
        k = i
        while time.monotonic() < stop:
            counts[i] += own.ask(questions[k % len(questions)])[1] == "exact"
            k += threads
        own.close()

    start = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, range(threads)))
    return {"latency": pct(latencies), "hits_per_s": sum(counts) / (time.monotonic() - start)}


def wait_for(check: Callable[[], bool], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise TimeoutError("write-backs did not land in time")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="questions per tier per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8, help="concurrent producers for hits/s")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=2, help="lookup processes")
    parser.add_argument("--lookup-pool", choices=["prefork", "solo"], default="solo")
    parser.add_argument("--loglevel", default="INFO", help="worker log level")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args()

    with fresh_stack(Path(".var/bench"), worker_loglevel=args.loglevel) as stack:
        settings = Settings()
        nodes = stack.start_workers(1, args.concurrency, lookup_pool=args.lookup_pool)
        gateway_url = stack.start_gateway(free_port(), {GATEWAY_KEY: TENANT})
        client = Client(ProducerSettings())
        client.wait_for_workers(len(nodes))
        profile = settings.profile()
        embedder = Embedder(profile, settings.model_cache_dir, settings.embed_threads)
        results = run(args, stack, client, embedder, profile, gateway_url)
        results.update({"model": profile.name, "quantize": profile.quantize, "cores": os.cpu_count(),
                        "cpu": platform.processor() or platform.machine(), "lookup_processes": args.concurrency,
                        "lookup_pool": args.lookup_pool, "task_events": settings.task_events,
                        "worker_loglevel": args.loglevel,
                        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})  # fmt: skip
        client.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Merge: other benchmarks (bench.backfill) write their own keys into the same file.
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    args.out.write_text(json.dumps(previous | results, indent=2) + "\n")
    report(results)
    print(f"\nwritten to {args.out}")


def run(
    args: argparse.Namespace, stack: LocalStack, client: Client, embedder: Embedder, profile: EmbedProfile, gateway: str
) -> dict[str, Any]:
    rdb = redis.Redis.from_url(stack.redis_url)
    total = args.n * args.runs
    questions = load_questions(int(total * 1.3))
    pairs = paraphrase_pairs(embedder, profile, total)
    embed_ms = []
    for q, _, _ in pairs[:300]:
        t = time.perf_counter()
        embedder.embed_one(q)
        embed_ms.append((time.perf_counter() - t) * 1000)

    # Misses: each question once; concurrent, since each one waits ~0.8 s on the (stand-in) LLM.
    seeds = questions + [p[0] for p in pairs]
    miss_ms: list[float] = []
    answered: set[str] = set()
    lock = threading.Lock()

    def miss(q: str) -> None:
        ms, reply = timed(client, q)
        with lock:
            if reply.tier == "llm":
                miss_ms.append(ms)
                answered.add(q)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(miss, seeds))
    # A seed that was itself a semantic hit on an earlier seed has no entry of its own to re-ask.
    questions = [q for q in questions if q in answered][: args.n * args.runs]
    pairs = [p for p in pairs if p[0] in answered]
    prefix = entry_prefix("minilm")
    # Seeds that hit an earlier seed store nothing: wait for one entry per LLM answer.
    wait_for(lambda: sum(1 for _ in rdb.scan_iter(prefix + "*", count=1000)) >= len(miss_ms))

    per_run: dict[str, list[dict[str, float]]] = {"exact_hit_ms": [], "redis_hit_ms": [], "pgvector_hit_ms": []}
    misrouted = {k: 0 for k in per_run}
    for r in range(args.runs):
        chunk = slice(r * args.n, (r + 1) * args.n)
        lat, bad = sequential(client, questions[chunk], "exact")
        per_run["exact_hit_ms"].append(pct(lat))
        misrouted["exact_hit_ms"] += bad
        lat, bad = sequential(client, [p[1] for p in pairs[chunk]], "redis")
        per_run["redis_hit_ms"].append(pct(lat))
        misrouted["redis_hit_ms"] += bad
        # pgvector: drop this chunk's entries from Redis; each hit is then promoted back.
        for ta, _, _ in pairs[chunk]:
            timed_reply = client.ask(ta, tenant=TENANT, timeout=60)
            rdb.delete(prefix + (timed_reply.entry_id or ""))
        lat, bad = sequential(client, [p[1] for p in pairs[chunk]], "pgvector")
        per_run["pgvector_hit_ms"].append(pct(lat))
        misrouted["pgvector_hit_ms"] += bad

    # Direct client and gateway alternate, run by run, so that both see the same machine.
    exact_hps, gw_runs = [], []
    for r in range(args.runs):
        exact_hps.append(sustained(client, questions, "exact", args.threads, args.seconds))
        gw_runs.append(gateway_figures(gateway, client.settings.llm_model, questions[r * args.n : (r + 1) * args.n],
                                       args.threads, args.seconds))  # fmt: skip
    semantic_hps = [sustained(client, [p[1] for p in pairs], "redis", args.threads, args.seconds)
                    for _ in range(args.runs)]  # fmt: skip
    rdb.close()

    def median_of(runs: list[dict[str, float]]) -> dict[str, Any]:
        return {k: round(statistics.median(x[k] for x in runs), 3) for k in ("p50", "p90", "p99")} | {"runs": runs}

    return {
        **{k: median_of(v) for k, v in per_run.items()},
        "miss_ms": pct(miss_ms) | {"concurrency": 16},
        "hits_per_s": round(statistics.median(exact_hps), 1),
        "hits_per_s_runs": [round(x, 1) for x in exact_hps],
        "semantic_hits_per_s": round(statistics.median(semantic_hps), 1),
        "semantic_hits_per_s_runs": [round(x, 1) for x in semantic_hps],
        "gateway_hit_ms": median_of([g["latency"] for g in gw_runs]),
        "gateway_hits_per_s": round(statistics.median(g["hits_per_s"] for g in gw_runs), 1),
        "gateway_hits_per_s_runs": [round(g["hits_per_s"], 1) for g in gw_runs],
        "producer_threads": args.threads,
        "embed_ms": pct(embed_ms),
        "not_served_by_expected_tier": misrouted,
        "paraphrase_pairs": len(pairs),
    }


def report(r: dict[str, Any]) -> None:
    print(f"\n{'tier':<18}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}   (median over runs)")
    for key in ("exact_hit_ms", "gateway_hit_ms", "redis_hit_ms", "pgvector_hit_ms", "miss_ms", "embed_ms"):
        print(f"{key:<18}{r[key]['p50']:>10.2f}{r[key]['p90']:>10.2f}{r[key]['p99']:>10.2f}")
    print(f"exact hits/s   {r['hits_per_s']:>8}  runs {r['hits_per_s_runs']}  ({r['producer_threads']} producers)")
    print(f"semantic hits/s{r['semantic_hits_per_s']:>8}  runs {r['semantic_hits_per_s_runs']}")
    print(
        f"gateway exact hits/s {r['gateway_hits_per_s']}  runs {r['gateway_hits_per_s_runs']}  "
        f"({r['gateway_hits_per_s'] / r['hits_per_s']:.0%} of the direct client's; overhead p50 "
        f"{r['gateway_hit_ms']['p50'] - r['exact_hit_ms']['p50']:+.2f} ms)"
    )
    print(
        f"model {r['model']} ({r['quantize']}), {r['cores']} cores, {r['lookup_processes']} lookup processes "
        f"({r['lookup_pool']}), task events {'on' if r['task_events'] else 'off'}"
    )
    print(f"requests not served by the tier measured: {r['not_served_by_expected_tier']}")


if __name__ == "__main__":
    main()
