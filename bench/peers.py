"""`make bench-peers`: this project beside RedisVL and GPTCache, same machine, data, embedder and Redis, one run.

Starts its own stack under .var/bench-peers (the `make run` layout: solo lookup nodes, one LLM/write-back node,
the HTTP gateway), loads the same entries into every system with that system's own store loop, asks each the
same questions, and judges every hit against an exhaustive numpy search. Then: recall of the Redis and pgvector
tiers at 10k and ~80k entries (bench.recall) and the cost of an mxbai-embed-large-shaped embedder
(bench.mxbai_shape). Prints a table, draws bench/results/peers.png and writes bench/results/peers.json.

The stand-in LLM answers at once here (--llm-delay-ms 0): a miss then costs what the cache itself spends on it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import redis

from bench import mxbai_shape, recall
from bench.peer_systems import Gateway, GPTCache, Ours, RedisVL, Reference, Served, System, served_indices
from bench.peers_data import KINDS, Query, Workload, cached_vectors, workload
from bench.reference import MISS, Nearest, agreement, nearest
from bench.report import chart, headline, print_table, write_json
from bench.stats import pct
from schemas.keys import COALESCED_ANSWER_PREFIX, entry_prefix
from worker import pipeline, sqlfiles
from worker.embed import Embedder
from worker.local.servers import LocalStack, free_port
from worker.settings import Settings
from worker.verifier import Verifier

RESULTS = Path(__file__).resolve().parent / "results"
TENANT = "peers"
GATEWAY_KEY = "peers-key"


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
        results |= {
            "entries": len(wl.entries), "queries_per_kind": args.per_kind, "threshold_cosine": threshold,
            "callers": args.callers, "lookup_processes": args.concurrency, "llm_delay_ms": args.llm_delay_ms,
            "reference": {k: {"hits": int(ref[k].hits(threshold).sum())} for k in KINDS}
            | {"paraphrase_hits_rule_allows": len(semantic)},
        }  # fmt: skip
        if "peers" not in skip:
            results["systems"] = run_systems(
                args, stack, settings, embedder, wl, ref, ref_refused, vecs, entry_vecs, semantic, gateway_url, nodes
            )
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
                "cpu": platform.processor() or platform.machine(),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    results |= headline(results)
    print_table(results)
    write_json(results, args.out)
    if "systems" in results:
        chart(results, args.out.with_suffix(".png"))
    print(f"\nwritten to {args.out}")


def run_systems(
    args: argparse.Namespace, stack: LocalStack, settings: Settings, embedder: Embedder, wl: Workload,
    ref: dict[str, Nearest], ref_refused: dict[str, Nearest], vecs: dict[str, np.ndarray], entry_vecs: np.ndarray,
    semantic: list[str], gateway_url: str, nodes: int,
) -> dict[str, Any]:  # fmt: skip
    threshold = embedder.profile.threshold_redis
    out: dict[str, Any] = {}
    root = Path(".var/bench-peers")
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
        assert ours.backfill is not None
        out[ours.name]["backfill"] = {"rows": ours.backfill.read, "seconds": round(ours.backfill.seconds, 2),
                                      "embed_share": round(ours.backfill.embed_share, 3)}  # fmt: skip
        out[ours.name]["stored_vectors"] = stored_vector_agreement(stack, ours, wl, vecs, entry_vecs, threshold)
    finally:
        forget.close()
        ours.close()
    return out


def stored_vector_agreement(
    stack: LocalStack, ours: Ours, wl: Workload, vecs: dict[str, np.ndarray], single: np.ndarray, threshold: float
) -> dict[str, Any]:
    """The backfill embeds in batches; dynamic int8 quantization scales activations per batch, so a stored
    vector differs a little from the one the same question gets alone. Report how often the reference's hit
    decision changes when judged on the vectors actually stored (read back from Postgres)."""
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
