"""The Redis tier's KNN plan: HNSW batches forced for a scope holding most of the index, the planner's choice
otherwise, and either way only entries of the asked scope served, the nearest one."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from schemas.cache import CacheEntry, question_hash
from schemas.keys import index_name
from worker.local.servers import LocalStack
from worker.runtime import redis_client
from worker.tiers.redis import BATCHES_MIN_SCOPE, RedisTier

PROFILE = "knnplan"
DIM = 16


def entry(scope: str, i: int, vector: np.ndarray) -> CacheEntry:
    question = f"question {i} of {scope}"
    return CacheEntry(entry_id=entry_id_of(scope, question), scope_id=scope, tenant="t", model="m",
                      system_hash="s", context_hash="c", question=question, question_hash=question_hash(question),
                      answer=f"answer {i} of {scope}", vector=vector.tobytes())  # fmt: skip


def entry_id_of(scope: str, question: str) -> str:
    return f"{scope}:{question_hash(question)}"


async def scenario(url: str) -> None:
    rng = np.random.default_rng(7)
    sizes = {"big": BATCHES_MIN_SCOPE + 100, "small": 100}
    vectors = {s: rng.normal(size=(n, DIM)).astype(np.float32) for s, n in sizes.items()}
    for v in vectors.values():
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    client = redis_client(url)
    tier = RedisTier(client, PROFILE, DIM, ttl_s=600, ef_runtime=100)
    try:
        await tier.ensure_index()
        as_of = time.time()
        for scope, vecs in vectors.items():
            for lo in range(0, len(vecs), 20):
                batch = range(lo, min(lo + 20, len(vecs)))
                await asyncio.gather(*(tier.store(entry(scope, i, vecs[i]), as_of) for i in batch))
        # Indexed as written (the index existed before the first entry).
        assert (await client.execute_command("FT.SEARCH", tier.index, "*", "LIMIT", 0, 0))[0] == sum(sizes.values())
        # The big scope is 95 % of the index: batches; the small one 5 %: the planner's choice (brute force).
        assert await tier.plan("big") == " HYBRID_POLICY BATCHES"
        assert await tier.plan("small") == ""
        for scope, vecs in vectors.items():
            queries = rng.normal(size=(30, DIM)).astype(np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            agreed = 0
            for q in queries:
                hit = await tier.lookup_similar(scope, q)
                assert hit is not None and hit.answer.endswith(f"of {scope}"), (scope, hit)
                best = int(np.argmax(vecs @ q))
                if hit.answer == f"answer {best} of {scope}":
                    agreed += 1
                    assert abs(hit.similarity - float(vecs[best] @ q)) < 1e-4
            assert agreed >= 28, (scope, agreed)
    finally:
        await client.execute_command("FT.DROPINDEX", index_name(PROFILE), "DD")
        await client.aclose()


def test_knn_plan_by_scope_share(stack: LocalStack) -> None:
    asyncio.run(scenario(stack.redis_url))
