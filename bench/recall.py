"""Recall at scale: does each semantic tier serve what an exhaustive search says it should, at 10k and ~80k entries?

Loads the entries straight into the Redis tier (RedisTier.store, the index the workers create) and the pgvector
tier (COPY, then the HNSW index built after the load as `dejavu backfill` does), under a profile of their own so
the benchmark's other data is untouched, and asks both tiers the benchmark's questions, plus 2,000 more Quora
paraphrases near the threshold, with the same KNN query the pipeline runs (RedisTier.lookup_similar /
PgTier.lookup_similar), sweeping EF_RUNTIME and hnsw.ef_search.
The reference is an exhaustive search over exactly the stored vectors, so the figure is the index's own loss.
Entry vectors are embedded as the backfill stores them (each alone: worker.embed) and cached on disk (80k take
minutes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import numpy as np
import redis.asyncio as aioredis
from pgvector.asyncpg import register_vector

from bench.cpu import counters_delta, redis_counters
from bench.peers_data import Workload, cached_vectors, extra_paraphrases, scale_corpus
from bench.reference import MISS, agreement, nearest
from bench.stats import pct
from schemas.cache import CacheEntry, Scope, entry_id, question_hash
from schemas.keys import entry_prefix, index_name
from worker import sqlfiles
from worker.backfill import COLUMNS, build_hnsw, drop_hnsw
from worker.embed import Embedder
from worker.local.servers import LocalStack
from worker.runtime import redis_client
from worker.settings import Settings
from worker.tiers import Candidate
from worker.tiers.pgvector import PgTier, ensure_schema
from worker.tiers.redis import HNSW_EF_CONSTRUCTION, RedisTier

PROFILE = "recall"
SCOPE = Scope("recall", "recall-model", "no-system", "no-history")
REDIS_EF = (10, 20, 50, 100, 200, 400)
PG_EF = (20, 40, 100, 200, 400)
CPU_REPS = 3


def run(
    stack: LocalStack, settings: Settings, embedder: Embedder, wl: Workload, query_vecs: np.ndarray,
    scales: Sequence[int], cache_dir: Any, model_key: str,
) -> dict[str, Any]:  # fmt: skip
    extra = extra_paraphrases(wl)
    full = scale_corpus(wl, extra)
    corpus = full[: max(max(scales), len(wl.entries))]
    print(f"recall: embedding {len(corpus)} questions (cached in {cache_dir}) ...", flush=True)
    vectors = cached_vectors(cache_dir, "corpus", model_key, corpus, embedder.embed)
    # Questions are embedded one at a time, as a lookup does.
    extra_vecs = cached_vectors(cache_dir, "recall-extra", model_key, extra,
                                lambda texts: np.stack([embedder.embed_one(t) for t in texts]))  # fmt: skip
    query_vecs = np.concatenate([query_vecs, extra_vecs])
    threshold = embedder.profile.threshold_redis
    out: dict[str, Any] = {"scales": {}, "defaults": {"redis_ef_runtime": settings.redis_ef_runtime,
                                                      "pg_ef_search": settings.pg_ef_search}}  # fmt: skip
    for n in scales:
        count = min(max(n, len(wl.entries)), len(corpus))
        print(f"recall: {count} entries ...", flush=True)
        result = asyncio.run(_one_scale(stack, settings, corpus[:count], vectors[:count], query_vecs, threshold))
        out["scales"][str(count)] = result
    labels = {scales[0]: "10k", scales[-1]: "80k"} if len(scales) > 1 else {scales[0]: "10k"}
    headline: dict[str, float] = {}
    for n, label in labels.items():
        key = str(min(max(n, len(wl.entries)), len(corpus)))
        sweep = out["scales"][key]["sweep"]
        headline[f"agreement_redis_{label}"] = sweep["redis"][f"ef_runtime={settings.redis_ef_runtime}"]["agreement"][
            "fraction"
        ]
        headline[f"agreement_pgvector_{label}"] = sweep["pgvector"][f"ef_search={settings.pg_ef_search}"]["agreement"][
            "fraction"
        ]
        headline[f"entries_{label}"] = int(key)
        headline[f"redis_cpu_ms_per_knn_{label}"] = out["scales"][key]["knn_cpu"]["ft_search_cpu_ms_per_call"]
    out["headline"] = headline
    return out


async def _one_scale(
    stack: LocalStack, settings: Settings, texts: list[str], vectors: np.ndarray, query_vecs: np.ndarray,
    threshold: float,
) -> dict[str, Any]:  # fmt: skip
    dim = vectors.shape[1]
    ids = [entry_id(SCOPE, question_hash(t)) for t in texts]
    position = {eid: i for i, eid in enumerate(ids)}
    ref = nearest(vectors, query_vecs)
    client = redis_client(stack.redis_url)
    conn = await asyncpg.connect(stack.pg_dsn)
    try:
        await _clear(client, conn)
        load = {"redis_s": await _load_redis(client, settings, texts, ids, vectors, dim)}
        load |= await _load_pg(conn, settings, texts, ids, vectors, dim)
        # Redis's own CPU per KNN at the default EF_RUNTIME, before the other indexes below are built.
        knn_cpu = await _knn_cpu(
            client, RedisTier(client, PROFILE, dim, settings.redis_ttl_s, settings.redis_ef_runtime), query_vecs
        )
        sweep: dict[str, dict[str, Any]] = {"redis": {}, "pgvector": {}}
        for ef in REDIS_EF:
            tier = RedisTier(client, PROFILE, dim, settings.redis_ttl_s, ef)
            sweep["redis"][f"ef_runtime={ef}"] = await _ask(tier.lookup_similar, position, ref, vectors, query_vecs,
                                                            threshold)  # fmt: skip
        # The same HNSW query with RediSearch's hybrid policy forced to batches: what the query planner's choice
        # of ad-hoc brute force (scopes up to ~10k entries) costs and buys.
        sweep["redis"]["batches_ef_runtime=100"] = await _ask(
            _raw_knn(client, index_name(PROFILE), "EF_RUNTIME 100 HYBRID_POLICY BATCHES"), position, ref, vectors,
            query_vecs, threshold,
        )  # fmt: skip
        flat = ("FLAT", 6, "TYPE", "FLOAT32", "DIM", dim, "DISTANCE_METRIC", "COSINE")
        sweep["redis"]["flat"] = await _ask_other_index(client, flat, "", position, ref, vectors, query_vecs, threshold)
        # A sparser graph (M <= 10) is what makes RediSearch's planner pick HNSW over brute force for a scope that
        # holds most of an index of 5.5k-30k entries (VecSim's preferAdHocSearch): its recall and latency.
        for m in ALT_M:
            hnsw = ("HNSW", 10, "TYPE", "FLOAT32", "DIM", dim, "DISTANCE_METRIC", "COSINE", "M", m,
                    "EF_CONSTRUCTION", HNSW_EF_CONSTRUCTION)  # fmt: skip
            sweep["redis"][f"m={m}_ef_runtime=100"] = await _ask_other_index(
                client, hnsw, "EF_RUNTIME 100", position, ref, vectors, query_vecs, threshold
            )
        for ef in PG_EF:
            pool = await asyncpg.create_pool(
                stack.pg_dsn, min_size=1, max_size=1, init=register_vector,
                # As worker.runtime opens it: iterative scans keep filtered HNSW queries from coming back empty.
                server_settings={"hnsw.ef_search": str(ef), "hnsw.iterative_scan": "strict_order"},
            )  # fmt: skip
            try:
                tier_pg = PgTier(pool, stack.pg_dsn, PROFILE, dim, tier.forgotten)
                sweep["pgvector"][f"ef_search={ef}"] = await _ask(tier_pg.lookup_similar, position, ref, vectors,
                                                                  query_vecs, threshold)  # fmt: skip
            finally:
                await pool.close()
        await _clear(client, conn)
        return {"entries": len(texts), "reference_hits": int(ref.hits(threshold).sum()),
                "queries": len(query_vecs), "load": load, "knn_cpu": knn_cpu, "sweep": sweep}  # fmt: skip
    finally:
        await conn.close()
        await client.aclose()


async def _knn_cpu(client: aioredis.Redis, tier: RedisTier, query_vecs: np.ndarray) -> dict[str, Any]:
    """Redis's CPU per semantic lookup: every question through the pipeline's KNN query (RedisTier.lookup_similar),
    one caller, CPU_REPS times; medians. Per call from INFO commandstats (FT.SEARCH's usec / calls: the time Redis
    spent executing the command, without reading it off the socket or writing the reply) and, beside it, the whole
    server's CPU from INFO cpu (used_cpu_sys + used_cpu_user, all threads) per lookup, which also holds the
    network I/O and whatever else the server did meanwhile (the workers' idle queue polls)."""
    reps = []
    for _ in range(CPU_REPS):
        before = redis_counters(await client.info("commandstats"), await client.info("cpu"))
        for q in query_vecs:
            await tier.lookup_similar(SCOPE.scope_id, q)
        d = counters_delta(before, redis_counters(await client.info("commandstats"), await client.info("cpu")))
        n = len(query_vecs)
        reps.append({
            "lookups": n, "ft_search_calls": int(d["calls"]),
            "ft_search_cpu_ms_per_call": round(d["usec"] / max(d["calls"], 1) / 1000, 4),
            "server_cpu_ms_per_lookup": round(d["cpu_s"] * 1000 / n, 4),
            "main_thread_cpu_ms_per_lookup": round(d["main_thread_cpu_s"] * 1000 / n, 4),
        })  # fmt: skip
    keys = ("ft_search_cpu_ms_per_call", "server_cpu_ms_per_lookup", "main_thread_cpu_ms_per_lookup")
    return {k: round(float(np.median([r[k] for r in reps])), 4) for k in keys} | {
        "ef_runtime": tier.ef_runtime, "reps": reps}  # fmt: skip


async def _ask(
    lookup: Any, position: dict[str, int], ref: Any, vectors: np.ndarray, query_vecs: np.ndarray, threshold: float
) -> dict[str, Any]:
    served = np.full(len(query_vecs), MISS, dtype=np.int64)
    latencies = []
    for i, q in enumerate(query_vecs):
        start = time.perf_counter()
        hit = await lookup(SCOPE.scope_id, q)
        latencies.append((time.perf_counter() - start) * 1000)
        if hit is not None and hit.similarity >= threshold:
            served[i] = position[hit.entry_id]
    return {"agreement": agreement(ref, served, vectors, query_vecs, threshold).as_dict(),
            "latency_ms": pct(latencies)}  # fmt: skip


OTHER_INDEX = index_name(PROFILE) + ":other"
ALT_M = (8, 10)


async def _ask_other_index(
    client: aioredis.Redis, vector_field: tuple[Any, ...], options: str, position: dict[str, int], ref: Any,
    vectors: np.ndarray, query_vecs: np.ndarray, threshold: float,
) -> dict[str, Any]:  # fmt: skip
    """The same hashes under another vector index (FLAT, or HNSW built otherwise), asked the pipeline's query."""
    await client.execute_command(  # type: ignore[no-untyped-call]
        "FT.CREATE", OTHER_INDEX, "ON", "HASH", "PREFIX", 1, entry_prefix(PROFILE),
        "SCHEMA", "scope", "TAG", "vec", "VECTOR", *vector_field,
    )  # fmt: skip
    await _wait_indexed(client, OTHER_INDEX, len(position))
    try:
        return await _ask(_raw_knn(client, OTHER_INDEX, options), position, ref, vectors, query_vecs, threshold)
    finally:
        await client.execute_command("FT.DROPINDEX", OTHER_INDEX)  # type: ignore[no-untyped-call]


def _raw_knn(client: aioredis.Redis, index: str, options: str) -> Any:
    """The pipeline's KNN 1 query with other query options, on any index over the tier's hashes."""

    async def lookup(scope_id: str, vector: np.ndarray) -> Any:
        reply = await client.execute_command(  # type: ignore[no-untyped-call]
            "FT.SEARCH", index, f"(@scope:{{{scope_id}}})=>[KNN 1 @vec $v {options} AS dist]",
            "PARAMS", 2, "v", vector.astype(np.float32).tobytes(), "RETURN", 1, "dist",
            "SORTBY", "dist", "LIMIT", 0, 1, "DIALECT", 2,
        )  # fmt: skip
        if not reply or reply[0] == 0:
            return None
        fields = dict(zip(reply[2][::2], reply[2][1::2], strict=True))
        return Candidate(reply[1].decode().removeprefix(entry_prefix(PROFILE)), "", "", 1.0 - float(fields[b"dist"]))

    return lookup


async def _wait_indexed(client: aioredis.Redis, index: str, count: int, limit_s: float = 600) -> None:
    end = time.monotonic() + limit_s
    while True:
        raw = await client.execute_command("FT.INFO", index)  # type: ignore[no-untyped-call]
        info = {raw[i].decode() if isinstance(raw[i], bytes) else raw[i]: raw[i + 1] for i in range(0, len(raw), 2)}
        if int(info["num_docs"]) >= count and int(info["indexing"]) == 0:
            return
        if time.monotonic() > end:
            raise TimeoutError(f"{index}: {info['num_docs']} of {count} documents indexed")
        await asyncio.sleep(0.2)


async def _clear(client: aioredis.Redis, conn: asyncpg.Connection) -> None:
    for index in (index_name(PROFILE), OTHER_INDEX):
        try:
            await client.execute_command("FT.DROPINDEX", index, "DD")  # type: ignore[no-untyped-call]
        except Exception as exc:  # not there yet
            if "unknown index" not in str(exc).lower() and "no such index" not in str(exc).lower():
                raise
    await conn.execute(f"DROP TABLE IF EXISTS {sqlfiles.table_name(PROFILE)}")


def _entry(text: str, eid: str, vector: np.ndarray) -> CacheEntry:
    return CacheEntry(entry_id=eid, scope_id=SCOPE.scope_id, tenant=SCOPE.tenant, model=SCOPE.model,
                      system_hash=SCOPE.system_hash, context_hash=SCOPE.context_hash, question=text,
                      question_hash=question_hash(text), answer="-", vector=vector.tobytes())  # fmt: skip


async def _load_redis(
    client: aioredis.Redis, settings: Settings, texts: list[str], ids: list[str], vectors: np.ndarray, dim: int
) -> float:
    start = time.perf_counter()
    tier = RedisTier(client, PROFILE, dim, settings.redis_ttl_s, settings.redis_ef_runtime)
    await tier.ensure_index()
    # No forget runs during the bench, so any time before the store is a valid `as_of`.
    as_of = time.time()
    for lo in range(0, len(texts), 64):
        await asyncio.gather(
            *(tier.store(_entry(texts[i], ids[i], vectors[i]), as_of) for i in range(lo, min(lo + 64, len(texts))))
        )
    await _wait_indexed(client, index_name(PROFILE), len(texts))
    return round(time.perf_counter() - start, 2)


async def _load_pg(
    conn: asyncpg.Connection, settings: Settings, texts: list[str], ids: list[str], vectors: np.ndarray, dim: int
) -> dict[str, float]:
    """COPY without the HNSW index, then build it once, as `dejavu backfill` does for a large load."""
    start = time.perf_counter()
    await ensure_schema(conn, PROFILE, dim)
    await register_vector(conn)  # after ensure_schema: the type comes with the extension
    indexdef = await drop_hnsw(conn, PROFILE)
    assert indexdef is not None
    records = [(eid, SCOPE.scope_id, SCOPE.tenant, SCOPE.model, SCOPE.system_hash, SCOPE.context_hash, t,
                question_hash(t), "-", v) for eid, t, v in zip(ids, texts, vectors, strict=True)]  # fmt: skip
    await conn.copy_records_to_table(sqlfiles.table_name(PROFILE), records=records, columns=COLUMNS)
    copied = time.perf_counter()
    await build_hnsw(conn, indexdef, settings.backfill_maintenance_work_mem)
    await conn.execute(f"ANALYZE {sqlfiles.table_name(PROFILE)}")
    return {"pg_copy_s": round(copied - start, 2), "pg_hnsw_build_s": round(time.perf_counter() - copied, 2)}
