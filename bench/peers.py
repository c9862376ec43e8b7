"""`make bench-peers`: this project beside RedisVL and GPTCache, same machine, data, embedder and Redis, one run.

Starts its own stack under .var/bench-peers (the `make run` layout: solo lookup nodes, one LLM/write-back node,
the HTTP gateway), loads the same entries into every system with that system's own store loop, asks each the
same questions, and judges every hit against an exhaustive numpy search. Then: recall of the Redis and pgvector
tiers at 10k and ~80k entries (bench.recall) and the cost of an mxbai-embed-large-shaped embedder
(bench.mxbai_shape). Prints a table, draws bench/results/peers.png and writes bench/results/peers.json.

CPU per semantic hit (bench.cpu): after its other figures, each system is asked the semantic-hit questions by
--callers callers CPU_REPS times while the CPU of every process it uses is read before and after (this process,
and for this project the stack's Redis, Postgres, stand-in LLM, workers and gateway; for RedisVL the stack's
Redis); medians. Right after each gateway repetition a bare aiohttp app (bench.bare_aiohttp) gets the same
requests with the same concurrency, for the gateway's own CPU per request beside the HTTP hop's.

The stand-in LLM answers at once here (--llm-delay-ms 0): a miss then costs what the cache itself spends on it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shutil
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import redis

from bench import mxbai_shape, recall
from bench.cpu import METHOD, SELF, Sampler, counters_delta, redis_counters, stack_groups
from bench.peer_systems import Gateway, GPTCache, Ours, RedisVL, Reference, Served, System, served_indices
from bench.peers_data import KINDS, Query, Workload, cached_vectors, workload
from bench.reference import MISS, Nearest, agreement, nearest
from bench.report import chart, headline, print_table, write_json
from bench.stats import machine, pct
from schemas.keys import COALESCED_ANSWER_PREFIX, entry_prefix
from worker import pipeline, sqlfiles
from worker.embed import Embedder
from worker.local.servers import LocalStack, free_port
from worker.settings import Settings
from worker.verifier import Verifier

RESULTS = Path(__file__).resolve().parent / "results"
TENANT = "peers"
GATEWAY_KEY = "peers-key"
CPU_REPS = 3
BARE = "bare-aiohttp"


def sequential(lookup: Any, texts: Sequence[str]) -> tuple[list[float], list[Served], float]:
    """One caller: per-question latency (ms), what was served, and the wall time (s)."""
    latencies, served = [], []
    start = time.perf_counter()
    for text in texts:
        t = time.perf_counter()
        served.append(lookup(text))
        latencies.append((time.perf_counter() - t) * 1000)
    return latencies, served, time.perf_counter() - start


def concurrent(system: System, texts: Sequence[str], callers: int) -> tuple[list[Served], float]:
    """`callers` threads, each with its own caller, share the questions; returns what was served and the wall time."""
    served: list[Served | None] = [None] * len(texts)

    def loop(i: int) -> None:
        lookup = system.caller()
        for k in range(i, len(texts), callers):
            served[k] = lookup(texts[k])

    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(loop, range(callers)))
    elapsed = time.perf_counter() - start
    return [s for s in served if s is not None], elapsed


class Forgetter:
    """Removes the entries this project wrote back for questions the LLM answered during a pass, so that the next
    pass (or the other front end) meets the same misses instead of exact hits on them."""

    def __init__(self, stack: LocalStack, ours: Ours, profile: str) -> None:
        self.rdb = redis.Redis.from_url(stack.redis_url)
        self.dsn, self.ours, self.profile = stack.pg_dsn, ours, profile

    def __call__(self, texts: Sequence[str], served: Sequence[Served], timeout: float = 120) -> int:
        answered = {t for t, s in zip(texts, served, strict=True) if s.tier in ("llm", "coalesced")}
        ids = sorted(set(self.ours.entry_ids(sorted(answered))))
        if ids:
            asyncio.run(self._drop_rows(ids, time.monotonic() + timeout))
            self.rdb.delete(*(entry_prefix(self.profile) + i for i in ids), *(COALESCED_ANSWER_PREFIX + i for i in ids))
        return len(ids)

    async def _drop_rows(self, ids: list[str], deadline: float) -> None:
        table = sqlfiles.table_name(self.profile)
        conn = await asyncpg.connect(self.dsn)
        try:
            # The write-back stores Redis first, then Postgres: once the row is there, both copies are.
            while await conn.fetchval(f"SELECT count(*) FROM {table} WHERE id = ANY($1::text[])", ids) < len(ids):
                if time.monotonic() > deadline:
                    raise TimeoutError("write-backs of the LLM-answered questions did not land in time")
                await asyncio.sleep(0.1)
            await conn.execute(f"DELETE FROM {table} WHERE id = ANY($1::text[])", ids)
        finally:
            await conn.close()

    def close(self) -> None:
        self.rdb.close()


def judge(
    wl: Workload, queries: list[Query], served: list[Served], ref: Nearest, ref_refused: Nearest,
    entry_vecs: np.ndarray, query_vecs: np.ndarray, threshold: float,
) -> dict[str, Any]:  # fmt: skip
    hits = sum(s.entry != MISS for s in served)
    right = sum(
        (s.entry == MISS) if q.expected is None else (s.answer == wl.entries[q.expected].answer)
        for q, s in zip(queries, served, strict=True)
    )
    wrong = sum(
        s.entry != MISS and (q.expected is None or s.answer != wl.entries[q.expected].answer)
        for q, s in zip(queries, served, strict=True)
    )
    return {
        "hits": hits,
        "right": right,
        "wrong": wrong,
        "agreement": agreement(ref, served_indices(served), entry_vecs, query_vecs, threshold).as_dict(),
        # The same against what cosine plus this project's guards and verifier would serve (its precision rule,
        # not an index loss): the figure that says whether our tiers missed a hit they should have served.
        "agreement_with_refusals": agreement(
            ref_refused, served_indices(served), entry_vecs, query_vecs, threshold
        ).as_dict(),
        "tiers": dict(Counter(s.tier for s in served)),
    }


def refused(
    wl: Workload, queries: list[Query], ref: Nearest, threshold: float, use_guards: bool, verifier: Verifier | None
) -> Nearest:
    """The reference once this project's refusal rule (its guards, then its verifier: pipeline.refusal, as the
    workers are configured) has had its say on the exhaustive nearest entry: a hit the rule refuses becomes a miss."""
    no = np.array([
        bool(h) and pipeline.refusal(q.text, wl.entries[i].question, float(s), use_guards, verifier) is not None
        for q, h, i, s in zip(queries, ref.hits(threshold), ref.index, ref.similarity, strict=True)
    ])  # fmt: skip
    return Nearest(ref.index, np.where(no, np.float32(-1.0), ref.similarity))


def measure(
    system: System, wl: Workload, ref: dict[str, Nearest], ref_refused: dict[str, Nearest],
    vecs: dict[str, np.ndarray], entry_vecs: np.ndarray, threshold: float, semantic: list[str], callers: int,
    forget: Forgetter | None,
) -> dict[str, Any]:  # fmt: skip
    """Every figure for one system: per kind, one caller then `callers` callers."""
    out: dict[str, Any] = {}
    lookup = system.caller()
    for kind in KINDS:
        queries = wl.of_kind(kind)
        texts = [q.text for q in queries]
        latencies, served, wall = sequential(lookup, texts)
        if forget is not None:
            forget(texts, served)
        hit_latencies = [ms for ms, s in zip(latencies, served, strict=True) if s.entry != MISS]
        out[kind] = {
            "latency_ms": pct(latencies),
            "hit_latency_ms": pct(hit_latencies),
            "n": len(texts),
            **judge(wl, queries, served, ref[kind], ref_refused[kind], entry_vecs, vecs[kind], threshold),
            "lookups_per_s_1": round(len(texts) / wall, 1),
            "hits_per_s_1": round(len(hit_latencies) / wall, 1),
        }
    # Throughput of semantic hits, on the paraphrases every system should hit alike: the reference's hits that
    # this project's refusal rule lets through (the rest would be LLM calls here, not hits).
    if semantic:
        latencies, served, wall = sequential(lookup, semantic)
        if forget is not None:
            forget(semantic, served)
        hits = sum(s.entry != MISS for s in served)
        out["semantic"] = {"n": len(semantic), "lookups_per_s_1": round(len(semantic) / wall, 1),
                           "hits_per_s_1": round(hits / wall, 1)}  # fmt: skip
    for kind in KINDS:
        texts = semantic if kind == "paraphrase" else [q.text for q in wl.of_kind(kind)]
        if not texts:
            continue
        served, wall = concurrent(system, texts, callers)
        if forget is not None:
            forget(texts, served)
        hits = sum(s.entry != MISS for s in served)
        key = "semantic" if kind == "paraphrase" else kind
        out[key] |= {"lookups_per_s_n": round(len(texts) / wall, 1), "hits_per_s_n": round(hits / wall, 1)}
    return out


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
    components: Sequence[str], forget: Forgetter | None,
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
    forget: Forgetter,
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


@contextmanager
def session_of(embedder: Embedder, other: Embedder) -> Iterator[None]:
    """`embedder` runs `other`'s onnxruntime session (same model, other thread settings) inside the block: how the
    in-process peers, which hold `embedder`, are measured with one intra-op thread as well as two."""
    mine = embedder.session
    embedder.session = other.session
    try:
        yield
    finally:
        embedder.session = mine


def single_threaded(embedder: Embedder, cache_dir: Path) -> Embedder:
    """The embedder as the workers run it: one onnxruntime intra-op thread."""
    single = Embedder(embedder.profile, cache_dir, threads=1)
    single.warm_up()
    return single


def batch_independence(embedder: Embedder, wl: Workload, n: int = 256) -> dict[str, Any]:
    """Does a text's vector depend on what else is embedded with it? `n` questions alone, then inside
    `Embedder.embed` calls of 8 and of 32 (as a backfill chunk holds them); the lowest cosine of the two."""
    texts = [e.question for e in wl.entries[:: max(1, len(wl.entries) // n)]][:n]
    alone = np.stack([embedder.embed_one(t) for t in texts])
    out: dict[str, Any] = {"questions": len(texts)}
    for size in (8, 32):
        batched = np.concatenate([embedder.embed(texts[i : i + size]) for i in range(0, len(texts), size)])
        out[f"min_in_batches_of_{size}"] = round(float(np.einsum("ij,ij->i", alone, batched).min()), 6)
    out["min"] = min(out["min_in_batches_of_8"], out["min_in_batches_of_32"])
    return out


def idle_cpu(sampler: Sampler, seconds: float = 3.0) -> dict[str, float]:
    """CPU ms per second each component spends with nothing asked: the floor under every phase's figures."""
    sampler.start()
    time.sleep(seconds)
    window = sampler.stop()
    return {k: round(v / window.wall_s, 2) for k, v in window.cpu_ms.items()}


def start_stack(args: argparse.Namespace, root: Path) -> tuple[LocalStack, str, int]:
    shutil.rmtree(root, ignore_errors=True)
    stack = LocalStack(root, redis_port=free_port(), pg_port=free_port(), llm_port=free_port(),
                       llm_delay_ms=args.llm_delay_ms, durable=False, worker_loglevel=args.loglevel)  # fmt: skip
    stack.start()
    os.environ.update(stack.env())
    nodes = stack.start_workers(1, args.concurrency, lookup_pool="solo")
    gateway_url = stack.start_gateway(free_port(), {GATEWAY_KEY: TENANT})
    return stack, gateway_url, len(nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000, help="MedQuAD entries (plus --per-kind Quora ones)")
    parser.add_argument("--per-kind", type=int, default=500, help="questions per kind: exact, paraphrase, miss")
    parser.add_argument("--callers", type=int, default=8, help="concurrent callers for lookups/s")
    parser.add_argument("--concurrency", type=int, default=2, help="lookup processes (solo nodes)")
    parser.add_argument("--loglevel", default="INFO", help="worker log level")
    parser.add_argument("--llm-delay-ms", type=float, default=0.0, help="stand-in LLM delay")
    parser.add_argument("--scales", default="10000,80000", help="stored entries for the recall figures")
    parser.add_argument("--mxbai-layers", type=int, default=24, help="layers of the mxbai-shaped graph (24: real)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: peers, recall, mxbai")
    parser.add_argument("--out", type=Path, default=RESULTS / "peers.json")
    parser.add_argument("--cache-dir", type=Path, default=Path(".var/peers-cache"), help="embeddings, graphs")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    saved_env = dict(os.environ)
    stack, gateway_url, nodes = start_stack(args, Path(".var/bench-peers"))
    results: dict[str, Any] = {}
    try:
        settings = Settings()
        profile = settings.profile()
        threshold = profile.threshold_redis
        # In-process systems get both cores' worth of intra-op threads, as one app process would use them.
        embedder = Embedder(profile, settings.model_cache_dir, threads=2)
        embedder.warm_up()
        wl = workload(args.entries, args.per_kind)
        model_key = f"{profile.name}:{profile.model_path}:{profile.quantize}"

        def one_by_one(texts: Sequence[str]) -> np.ndarray:
            return np.stack([embedder.embed_one(t) for t in texts])

        entry_vecs = cached_vectors(args.cache_dir, "entries-single", model_key, [e.question for e in wl.entries],
                                    one_by_one)  # fmt: skip
        vecs = {k: cached_vectors(args.cache_dir, f"queries-{k}", model_key, [q.text for q in wl.of_kind(k)],
                                  one_by_one) for k in KINDS}  # fmt: skip
        ref = {k: nearest(entry_vecs, vecs[k]) for k in KINDS}
        para = wl.of_kind("paraphrase")
        ref_refused = {
            k: refused(wl, wl.of_kind(k), ref[k], threshold, settings.guards, profile.verifier) for k in KINDS
        }
        semantic = [q.text for q, ok in zip(para, ref_refused["paraphrase"].hits(threshold), strict=True) if ok]
        # The in-process peers embed with 2 intra-op threads (as one app process would use both cores); onnxruntime's
        # threads spin while they wait, which costs CPU, so they are measured with 1 thread too, as the workers run.
        single = single_threaded(embedder, settings.model_cache_dir)
        results["batch_independence"] = batch_independence(single, wl)
        results |= {
            "entries": len(wl.entries), "queries_per_kind": args.per_kind, "threshold_cosine": threshold,
            "callers": args.callers, "lookup_processes": args.concurrency, "llm_delay_ms": args.llm_delay_ms,
            "reference": {k: {"hits": int(ref[k].hits(threshold).sum())} for k in KINDS}
            | {"paraphrase_hits_rule_allows": len(semantic)},
        }  # fmt: skip
        if "peers" not in skip:
            results["systems"] = run_systems(
                args, stack, settings, embedder, single, wl, ref, ref_refused, vecs, entry_vecs, semantic,
                gateway_url, nodes,
            )  # fmt: skip
            results["cpu_setup"] = results["systems"].pop("cpu_setup")
        if "recall" not in skip:
            scales = [int(s) for s in args.scales.split(",")]
            queries = np.concatenate([vecs[k] for k in KINDS])
            results["recall"] = recall.run(stack, settings, embedder, wl, queries, scales, args.cache_dir, model_key)
        if "mxbai" not in skip:
            questions = mxbai_shape.sample_questions(wl, 200)
            results["mxbai"] = mxbai_shape.run(stack, questions, args.mxbai_layers, args.cache_dir)
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved_env)
    results |= {"model": profile.name, "quantize": profile.quantize, "cores": os.cpu_count(),
                "cpu": platform.processor() or platform.machine(), "machine": machine(),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    results |= headline(results)
    print_table(results)
    write_json(results, args.out)
    if "systems" in results:
        chart(results, args.out.with_suffix(".png"))
    print(f"\nwritten to {args.out}")


def run_systems(
    args: argparse.Namespace, stack: LocalStack, settings: Settings, embedder: Embedder, single: Embedder, wl: Workload,
    ref: dict[str, Nearest], ref_refused: dict[str, Nearest], vecs: dict[str, np.ndarray], entry_vecs: np.ndarray,
    semantic: list[str], gateway_url: str, nodes: int,
) -> dict[str, Any]:  # fmt: skip
    threshold = embedder.profile.threshold_redis
    out: dict[str, Any] = {}
    root = Path(".var/bench-peers")
    bare_url = start_bare(stack)
    sampler = Sampler(stack_groups(stack.procs))
    rdb = redis.Redis.from_url(stack.redis_url)
    workers = [name for name in stack.procs if name.startswith(("lookup", "io"))]
    ours_components = [SELF, "redis", "postgres", "standin-llm", *workers]
    cpu_setup = {
        "method": METHOD, "reps": CPU_REPS, "callers": args.callers, "questions": len(semantic),
        "embed_threads": {"in_process_peers": ["2 (cpu)", "1 (cpu_1_thread)"], "workers": settings.embed_threads},
        "redis_per_call": "INFO commandstats: cmdstat_FT.SEARCH usec / calls",
        "redis_search_config": search_config(rdb), "idle_cpu_ms_per_s": idle_cpu(sampler),
    }  # fmt: skip
    peers: list[System] = [
        Reference(embedder, entry_vecs, threshold),
        RedisVL(embedder, stack.redis_url, threshold),
        GPTCache(embedder, threshold, root / "gptcache", capacity=10 * len(wl.entries)),
    ]
    for system in peers:
        print(f"{system.name}: storing {len(wl.entries)} entries ...", flush=True)
        store = system.store(wl.entries)
        print(f"{system.name}: asking ...", flush=True)
        out[system.name] = {"store_per_s": None if math.isnan(store) else round(store, 1)}
        out[system.name] |= measure(
            system, wl, ref, ref_refused, vecs, entry_vecs, threshold, semantic, args.callers, None
        )
        # In-process: this process, and RedisVL's Redis (GPTCache here is sqlite + faiss, in this process).
        components = [SELF, "redis"] if system.name == "redisvl" else [SELF]
        if semantic:
            print(f"{system.name}: CPU per semantic hit ...", flush=True)
            out[system.name]["cpu"] = cpu_per_hit(system, semantic, args.callers, sampler, rdb, components, None)
            with session_of(embedder, single):
                out[system.name]["cpu_1_thread"] = cpu_per_hit(system, semantic, args.callers, sampler, rdb,
                                                                components, None)  # fmt: skip
        system.close()

    ours = Ours(settings, TENANT, root)
    ours.client.wait_for_workers(nodes)
    print(f"{ours.name}: backfilling {len(wl.entries)} entries ...", flush=True)
    store = ours.store(wl.entries)
    forget = Forgetter(stack, ours, embedder.profile.name)
    gateway = Gateway(gateway_url, GATEWAY_KEY, settings.llm_model, ours)
    try:
        for system in (ours, gateway):
            print(f"{system.name}: asking ...", flush=True)
            out[system.name] = {"store_per_s": round(store, 1) if system is ours else None}
            out[system.name] |= measure(
                system, wl, ref, ref_refused, vecs, entry_vecs, threshold, semantic, args.callers, forget
            )
            if not semantic:
                continue
            print(f"{system.name}: CPU per semantic hit ...", flush=True)
            if system is ours:
                out[system.name]["cpu"] = cpu_per_hit(system, semantic, args.callers, sampler, rdb,
                                                      ours_components, forget)  # fmt: skip
            else:
                bare = Gateway(bare_url, GATEWAY_KEY, settings.llm_model, ours)
                out[system.name]["cpu"] = gateway_cpu(system, bare, semantic, args.callers, sampler, rdb,
                                                      [*ours_components, "gateway"], forget)  # fmt: skip
        assert ours.backfill is not None
        out[ours.name]["backfill"] = {"rows": ours.backfill.read, "seconds": round(ours.backfill.seconds, 2),
                                      "embed_share": round(ours.backfill.embed_share, 3)}  # fmt: skip
        out[ours.name]["stored_vectors"] = stored_vector_agreement(stack, ours, wl, vecs, entry_vecs, threshold)
    finally:
        forget.close()
        ours.close()
        rdb.close()
    out["cpu_setup"] = cpu_setup
    return out


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


def stored_vector_agreement(
    stack: LocalStack, ours: Ours, wl: Workload, vecs: dict[str, np.ndarray], single: np.ndarray, threshold: float
) -> dict[str, Any]:
    """The vectors the backfill stored (read back from Postgres) against the ones the same questions get alone:
    how often the reference's hit decision changes when judged on the stored ones (none, once the embedder
    gives a text the same vector whatever its batch mates; batched dynamic int8 flipped 13 of 500)."""
    ids = ours.entry_ids([e.question for e in wl.entries])

    async def fetch() -> dict[str, np.ndarray]:
        from pgvector.asyncpg import register_vector

        conn = await asyncpg.connect(stack.pg_dsn)
        try:
            await register_vector(conn)
            rows = await conn.fetch(
                f"SELECT id, embedding FROM {sqlfiles.table_name(ours.settings.profile().name)} WHERE id = ANY($1)", ids
            )
            return {r["id"]: r["embedding"].to_numpy() for r in rows}
        finally:
            await conn.close()

    stored = asyncio.run(fetch())
    stored_vecs = np.stack([stored[i] for i in ids]).astype(np.float32)
    out: dict[str, Any] = {}
    for kind in ("paraphrase", "miss"):
        a, b = nearest(single, vecs[kind]), nearest(stored_vecs, vecs[kind])
        ha, hb = a.hits(threshold), b.hits(threshold)
        out[kind] = {"hits_single_vectors": int(ha.sum()), "hits_stored_vectors": int(hb.sum()),
                     "decisions_differ": int((ha != hb).sum())}  # fmt: skip
    cos = np.einsum("ij,ij->i", single, stored_vecs)
    out["cosine_single_vs_stored"] = {"min": round(float(cos.min()), 5), "median": round(float(np.median(cos)), 5)}
    return out


if __name__ == "__main__":
    main()
