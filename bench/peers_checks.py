"""The peers benchmark's checks of what was served: every hit judged against an exhaustive numpy search (with and
without this project's refusal rule), and the vectors this project stores against those its questions get alone."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import numpy as np

from bench.peer_systems import Ours, Served, served_indices
from bench.peers_data import Query, Workload
from bench.reference import MISS, Nearest, agreement, nearest
from worker import sqlfiles
from worker.embed import Embedder
from worker.local.servers import LocalStack
from worker.refusal import refusal
from worker.verifier import Verifier


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
    """The reference once this project's refusal rule (its guards, then its verifier: worker.refusal.refusal, as the
    workers are configured) has had its say on the exhaustive nearest entry: a hit the rule refuses becomes a miss."""
    no = np.array([
        bool(h) and refusal(q.text, wl.entries[i].question, float(s), use_guards, verifier) is not None
        for q, h, i, s in zip(queries, ref.hits(threshold), ref.index, ref.similarity, strict=True)
    ])  # fmt: skip
    return Nearest(ref.index, np.where(no, np.float32(-1.0), ref.similarity))


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
