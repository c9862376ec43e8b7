"""`make bench-peers`: this project beside RedisVL and GPTCache, same machine, data, embedder and Redis, one run.

Starts its own stack under .var/bench-peers (the `make run` layout: solo lookup nodes, one LLM/write-back node,
the HTTP gateway), loads the same entries into every system with that system's own store loop, asks each the
same questions, and judges every hit against an exhaustive numpy search. Then: recall of the Redis and pgvector
tiers at 10k and ~80k entries (bench.recall) and the cost of an mxbai-embed-large-shaped embedder
(bench.mxbai_shape). Prints a table, draws bench/results/peers.png and writes bench/results/peers.json.

CPU per semantic hit: bench.peers_cpu; the checks of every hit against exhaustive search: bench.peers_checks.

The stand-in LLM answers at once here (--llm-delay-ms 0): a miss then costs what the cache itself spends on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import redis

from bench import langchain_peer, litellm_peer, mxbai_shape, peers_batch, recall
from bench.cpu import METHOD, SELF, Sampler, stack_groups
from bench.peer_systems import Gateway, GPTCache, Ours, RedisVL, Reference, Served, System, concurrent, sequential
from bench.peers_checks import batch_independence, judge, refused, stored_vector_agreement
from bench.peers_cpu import CPU_REPS, cpu_per_hit, gateway_cpu, idle_cpu, search_config, start_bare
from bench.peers_data import DATA, KINDS, Workload, cached_vectors, workload
from bench.reference import MISS, Nearest, nearest
from bench.report import chart, headline, print_table, write_json
from bench.stats import machine, pct
from schemas.keys import COALESCED_ANSWER_PREFIX, entry_prefix
from worker import sqlfiles
from worker.embed import Embedder
from worker.local.servers import LocalStack, free_port
from worker.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
TENANT = "peers"
GATEWAY_KEY = "peers-key"


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
    parser.add_argument(
        "--skip", default="", help="comma list of parts to skip: peers, litellm, batching, langchain, recall, mxbai"
    )
    parser.add_argument("--batch-asks", type=int, default=2000, help="paraphrase asks compared batched and alone")
    parser.add_argument("--batch-wave", type=int, default=64, help="asks sent at once for the batched decisions")
    parser.add_argument("--langchain-pairs", type=int, default=2000, help="labelled pairs for the LangChain apps")
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
                gateway_url, nodes, skip,
            )  # fmt: skip
            if "batching" in results["systems"]:
                results["batching"] = results["systems"].pop("batching")
            results["cpu_setup"] = results["systems"].pop("cpu_setup")
        if "langchain" not in skip:
            # The same LangChain application with each cache, on the same labelled Quora pairs (issue #21).
            pairs = langchain_peer.load_pairs(DATA / "qqp_pairs_dev.jsonl", args.langchain_pairs)
            results |= langchain_peer.side_by_side(pairs, stack.redis_url, stack.env(), args.callers)
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
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    previous = json.loads(args.out.read_text()) if skip and args.out.exists() else {}
    # The parts skipped this run keep their last results; `at_by_part` says when each part was measured.
    at_by_part = previous.get("at_by_part", {}) | {part: now for part in PARTS if part not in skip}
    results = previous | results | {"model": profile.name, "quantize": profile.quantize, "cores": os.cpu_count(),
                                    "cpu": platform.processor() or platform.machine(), "machine": machine(),
                                    "at": now, "at_by_part": at_by_part}  # fmt: skip
    results |= headline(results)
    print_table(results)
    write_json(results, args.out)
    if "systems" in results:
        chart(results, args.out.with_suffix(".png"))
    print(f"\nwritten to {args.out}")


# What --skip can leave out.
PARTS = ("peers", "redisvl", "gptcache", "litellm", "batching", "langchain", "recall", "mxbai")


def run_systems(
    args: argparse.Namespace, stack: LocalStack, settings: Settings, embedder: Embedder, single: Embedder, wl: Workload,
    ref: dict[str, Nearest], ref_refused: dict[str, Nearest], vecs: dict[str, np.ndarray], entry_vecs: np.ndarray,
    semantic: list[str], gateway_url: str, nodes: int, skip: set[str],
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
    peers: dict[str, Callable[[], System]] = {
        "reference": lambda: Reference(embedder, entry_vecs, threshold),
        "redisvl": lambda: RedisVL(embedder, stack.redis_url, threshold),
        "gptcache": lambda: GPTCache(embedder, threshold, root / "gptcache", capacity=10 * len(wl.entries)),
    }
    for system in (make() for name, make in peers.items() if name not in skip):
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
        if "batching" not in skip:
            print(f"{ours.name}: lookups batched and alone ...", flush=True)
            out["batching"] = peers_batch.run(
                stack, ours, [w for w in workers if w.startswith("lookup")], [q.text for q in wl.of_kind("paraphrase")],
                semantic, args.batch_asks, args.batch_wave, args.callers, sampler, rdb, ours_components, forget,
            )  # fmt: skip
        if "litellm" not in skip:
            out[litellm_peer.NAME] = litellm(stack, settings, wl, ref, ref_refused, vecs, entry_vecs, semantic, args,
                                             sampler, rdb)  # fmt: skip
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


def litellm(
    stack: LocalStack, settings: Settings, wl: Workload, ref: dict[str, Nearest], ref_refused: dict[str, Nearest],
    vecs: dict[str, np.ndarray], entry_vecs: np.ndarray, semantic: list[str], args: argparse.Namespace,
    sampler: Sampler, rdb: redis.Redis,
) -> dict[str, Any]:  # fmt: skip
    """LiteLLM's proxy (bench.litellm_peer), its processes as many as our lookup processes, measured as ours are;
    its CPU is every process of its side: the proxy and its workers, its embedding servers, Redis, the stand-in."""
    url, names = litellm_peer.start(stack, args.concurrency, settings.llm_model)
    for name in names:
        sampler.add(name, stack.procs[name].pid)
    proxy = litellm_peer.LiteLLMProxy(url, settings.llm_model)
    print(f"{proxy.name}: storing {len(wl.entries)} entries through the proxy ...", flush=True)
    out: dict[str, Any] = {"store_per_s": round(proxy.store(wl.entries), 1), "processes": names,
                           "similarity_threshold": litellm_peer.SIMILARITY_THRESHOLD}  # fmt: skip
    print(f"{proxy.name}: asking ...", flush=True)
    threshold = settings.profile().threshold_redis
    out |= measure(proxy, wl, ref, ref_refused, vecs, entry_vecs, threshold, semantic, args.callers, None)
    if semantic:
        print(f"{proxy.name}: CPU per semantic hit ...", flush=True)
        out["cpu"] = cpu_per_hit(proxy, semantic, args.callers, sampler, rdb, [SELF, "redis", "standin-llm", *names],
                                 None)  # fmt: skip
    return out


if __name__ == "__main__":
    main()
