"""`dejavu eval`: precision and recall of the cache on labelled pairs, through the real lookup path.

In-process, the stages a lookup worker runs (`worker.pipeline.lookup`: exact -> embed -> Redis KNN -> pgvector KNN,
with the guards and the verifier) against the configured Redis and Postgres, with the configured embedder and
thresholds, in tenants of its own (`eval-<run>...`) whose entries it deletes afterwards. Entries are stored by the
write-back path (`worker.writeback.store`, both tiers) as an LLM answer would be. Nothing reaches the LLM: a miss
is the lookup's answer and nothing runs after it.

    pairs:  each pair in a tenant of its own holding text_a; text_b is asked there.
    replay: every text_a in one tenant, every text_b asked once; a hit is right when the entry it served is the
            same question (the same connected component of label-1 pairs, worker/tools/pairs.py).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from schemas.cache import CacheEntry, MissJob, Scope, WritebackJob, entry_id, normalize_question, question_hash
from schemas.messages import ChatReply, ChatRequest
from schemas.requests import build_request
from worker import pipeline, sqlfiles, writeback
from worker.runtime import Runtime
from worker.settings import Settings
from worker.tools.bound import DEFAULT_CONFIDENCE, Bound, precision_bound
from worker.tools.pairs import Counts, Pair, components, count, groups, numbered
from worker.tools.sweep import asked_questions, stored_questions

Mode = Literal["pairs", "replay"]
Vectors = Mapping[str, npt.NDArray[np.float32]]
# Entries stored at once; bounded so that a large file does not open thousands of requests together.
STORE_BATCH = 64
DELETE_BATCH = 1000


@dataclass
class Report:
    """What one evaluation run measured; `hits`, `right`, `groups` and `served` are per ask, in ask order."""

    mode: Mode
    counts: Counts
    settings: dict[str, Any]
    pairs: int
    entries: int
    hits: npt.NDArray[np.bool_]
    right: npt.NDArray[np.bool_]  # the entry served (or the nearest one) is the same question
    groups: npt.NDArray[np.int64]  # the paraphrase group of each ask (worker.tools.pairs)
    served: list[str | None]  # the stored question each ask was served, None on a miss
    tiers: dict[str, int]
    by_kind: dict[str, Counts] = field(default_factory=dict)
    lookup_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def bound(self, confidence: float = DEFAULT_CONFIDENCE) -> Bound:
        """The precision of the hits with its lower confidence bound, groups as clusters (worker/tools/bound.py)."""
        return precision_bound(self.right[self.hits], self.groups[self.hits], confidence)

    def to_json(self, confidence: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.counts.summary(), **self.bound(confidence).summary(), **self.settings, "pairs": self.pairs,
            "mode": self.mode, "asks": self.counts.asks, "entries": self.entries, "tiers": self.tiers,
            "seconds": round(self.seconds, 1),
        }  # fmt: skip
        if self.lookup_ms:
            out["lookup_ms_p50"] = round(float(np.percentile(self.lookup_ms, 50)), 2)
        if self.by_kind:
            out["by_kind"] = {
                k: {"asks": c.asks, "served": c.right_hits + c.wrong_hits, "rejected": round(1 - c.hit_rate, 4)}
                for k, c in sorted(self.by_kind.items())
            }
        return out


def describe(settings: Settings) -> dict[str, Any]:
    """The settings that decide a hit, as the report states them."""
    profile = settings.profile()
    verifier = profile.verifier
    return {
        "profile": profile.name, "threshold": profile.threshold_redis, "threshold_pgvector": profile.threshold_pgvector,
        "guards": settings.guards, "verifier_threshold": verifier.threshold if verifier else None,
    }  # fmt: skip


def run(
    pairs: Sequence[Pair], mode: Mode, rt: Runtime, progress: bool = False, vectors: Vectors | None = None
) -> Report:
    """Store, ask, count, and delete what was stored (also when interrupted).

    `vectors`: embeddings already computed with this runtime's embedder (make eval embeds each text once);
    the stored questions then skip embedding. Asks are always embedded by the lookup itself.
    """
    start = time.perf_counter()
    tenant = f"eval-{uuid.uuid4().hex[:10]}"
    if mode == "pairs":
        seeds = [(Where(tenant=f"{tenant}-{i}"), p.text_a) for i, p in enumerate(pairs)]
        asks = [(Where(tenant=f"{tenant}-{i}"), p.text_b) for i, p in enumerate(pairs)]
    else:
        seeds = [(Where(tenant=tenant), q) for q in stored_questions(pairs)]
        asks = [(Where(tenant=tenant), q) for q in asked_questions(pairs)]
    stored: dict[str, str] = {}
    try:
        stored = rt.run(_store(seeds, rt, progress, vectors))
        outcomes = rt.run(_ask(asks, rt, progress))
    finally:
        rt.run(_delete(list(stored), rt))
    served = [None if reply is None else stored.get(reply.entry_id or "") for reply, _ in outcomes]
    hits = np.array([q is not None for q in served], dtype=bool)
    tiers: dict[str, int] = {}
    for reply, _ in outcomes:
        if reply is not None:
            tiers[str(reply.tier)] = tiers.get(str(reply.tier), 0) + 1
    if mode == "pairs":
        right = answerable = np.array([p.label == 1 for p in pairs])
        group_ids = groups(pairs)
    else:
        comp = components(pairs)
        have = {comp[normalize_question(q)] for _, q in seeds}
        asked = [comp[normalize_question(q)] for _, q in asks]
        right = np.array(
            [s is not None and comp[normalize_question(s)] == a for s, a in zip(served, asked, strict=True)]
        )
        answerable = np.array([a in have for a in asked])
        group_ids = numbered(asked)
    report = Report(
        mode=mode, counts=count(hits, right, answerable), settings=describe(rt.settings), pairs=len(pairs),
        entries=len(stored), hits=hits, right=right, groups=group_ids, served=served, tiers=tiers,
        lookup_ms=[ms for _, ms in outcomes], seconds=time.perf_counter() - start,
    )  # fmt: skip
    if mode == "pairs":
        kinds = np.array([p.kind or "" for p in pairs])
        report.by_kind = {
            k: count(hits[kinds == k], right[kinds == k], answerable[kinds == k]) for k in set(kinds) if k
        }
    return report


def cross_scope_hits(questions: Sequence[str], rt: Runtime) -> dict[str, int]:
    """Store the questions in one scope, ask each again word for word in scopes that differ in one part only.

    Every count must be 0: an answer never crosses a tenant, a model, a system prompt or a conversation.
    """
    home = Where(tenant=f"eval-{uuid.uuid4().hex[:10]}")
    turns = [{"role": "user", "content": "My father has diabetes."}, {"role": "assistant", "content": "I see."}]
    scopes = {
        "tenant": Where(tenant=home.tenant + "-b"),
        "model": Where(tenant=home.tenant, model="another-model"),
        "system_prompt": Where(tenant=home.tenant, system="You are a pirate."),
        "conversation": Where(tenant=home.tenant, history=tuple(turns)),
        # The control: asked where they were stored, every question is served.
        "same_scope_control": home,
    }
    stored: dict[str, str] = {}
    try:
        stored = rt.run(_store([(home, q) for q in questions], rt, progress=False))
        hits = {}
        for name, where in scopes.items():
            outcomes = rt.run(_ask([(where, q) for q in questions], rt))
            hits[name] = sum(reply is not None for reply, _ in outcomes)
    finally:
        rt.run(_delete(list(stored), rt))
    return hits


@dataclass(frozen=True)
class Where:
    """Everything a request carries besides its question: the parts of its scope."""

    tenant: str
    model: str | None = None
    system: str | None = None
    history: tuple[dict[str, str], ...] = ()

    def request(self, settings: Settings, question: str) -> ChatRequest:
        if self.history:
            messages = [*self.history, {"role": "user", "content": question}]
            return build_request(settings, messages=messages, tenant=self.tenant, model=self.model, system=self.system)
        return build_request(settings, question, tenant=self.tenant, model=self.model, system=self.system)


async def _store(
    seeds: list[tuple[Where, str]], rt: Runtime, progress: bool, known: Vectors | None = None
) -> dict[str, str]:
    """Embed and store every seed through the write-back path; returns entry id -> question."""
    stored: dict[str, str] = {}
    bar = tqdm(total=len(seeds), desc="store", unit="q", disable=not progress, file=sys.stderr)
    for start in range(0, len(seeds), STORE_BATCH):
        batch = seeds[start : start + STORE_BATCH]
        jobs = []
        for where, question in batch:
            # Scoped as a live ask with this tenant, model, system prompt and history would be.
            scope = Scope.of(where.request(rt.settings, question), rt.settings.scope_includes_history)
            qhash = question_hash(question)
            eid = entry_id(scope, qhash)
            if eid in stored:  # the same normalized question twice in one scope: the first one stays
                continue
            stored[eid] = question
            # One at a time, as a live answer's vector is computed (see worker.tools.sweep.embed_texts).
            vector = known[question] if known is not None else rt.embedder.embed_one(question)
            entry = CacheEntry(
                entry_id=eid, scope_id=scope.scope_id, tenant=scope.tenant, model=scope.model,
                system_hash=scope.system_hash, context_hash=scope.context_hash, question=question,
                question_hash=qhash, answer=question, vector=vector.astype(np.float32).tobytes(),
            )  # fmt: skip
            jobs.append(writeback.store(WritebackJob(entry=entry), rt))
        await asyncio.gather(*jobs)
        bar.update(len(batch))
    bar.close()
    return stored


async def _ask(
    asks: list[tuple[Where, str]], rt: Runtime, progress: bool = False
) -> list[tuple[ChatReply | None, float]]:
    """Each ask through pipeline.lookup; the reply on a hit, None on a miss, with the lookup's milliseconds."""
    out: list[tuple[ChatReply | None, float]] = []
    for where, question in tqdm(asks, desc="ask", unit="q", disable=not progress, file=sys.stderr):
        request = where.request(rt.settings, question)
        start = time.perf_counter()
        result = await pipeline.lookup(request, rt)
        ms = (time.perf_counter() - start) * 1000
        # A miss comes back as the job for the LLM queue; it is dropped here, so the LLM is never called.
        out.append((None, ms) if isinstance(result, MissJob) else (result[0], ms))
    return out


async def _delete(ids: list[str], rt: Runtime) -> None:
    """Remove this run's entries from both tiers."""
    query = sqlfiles.query("delete_entries", rt.profile.name)
    for start in range(0, len(ids), DELETE_BATCH):
        batch = ids[start : start + DELETE_BATCH]
        await rt.redis.delete(*(rt.redis_tier.key(i) for i in batch))
        await rt.pg_pool.execute(query, batch)
