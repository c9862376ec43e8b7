"""Exact and semantic tiers in Redis: one hash per entry, indexed by a RediSearch HNSW index.

The exact tier reads the entry's hash by its deterministic id (no embedding needed); the semantic
tier runs KNN 1 over the same hashes, filtered by scope. One write serves both.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from schemas.cache import AnswerMeta, CacheEntry, answer_hash
from schemas.keys import (
    BLOCKED_PREFIX,
    COALESCED_ANSWER_PREFIX,
    FORGOTTEN_PREFIX,
    FORGOTTEN_TENANT_PREFIX,
    entry_prefix,
    index_name,
)
from worker.lua import script
from worker.tiers import Candidate, Owner, Stored, Vector

# HNSW build parameters; query breadth (EF_RUNTIME) is a setting.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
# The KNN plan. RediSearch answers a scope-filtered KNN by ad-hoc brute force over the scope (cost grows with the
# scope) or by walking HNSW in batches and filtering (cost grows as the scope's share of the index shrinks); its
# own planner picks brute force for a scope that is all of an index below ~40k entries, where batches cost ~9x
# less (10k entries: 0.28 vs 2.5 ms of Redis CPU per lookup, same top-1 on 500 of 500), but batches over a sliver
# cost ~90x more (100 of 10k: 3.7 vs 0.04 ms). So batches are forced only for a large scope holding most of the
# index, else the planner chooses. Sizes are counted at most once a minute per scope in each process: a stale
# plan costs time, never a wrong answer (both plans serve only entries of the scope).
BATCHES_MIN_SCOPE = 2000
BATCHES_MIN_SHARE = 0.5
PLAN_TTL_S = 60.0
PLANS_KEPT = 10_000
# Entries deleted per round when forgetting a tenant.
FORGET_BATCH = 1000
_STORED = {1: Stored.STORED, 0: Stored.PRESENT, -1: Stored.BLOCKED, -2: Stored.FORGOTTEN}
_TAG_SPECIAL = re.compile(r"([^A-Za-z0-9_])")


def _tag(value: str) -> str:
    """A value for a TAG query, escaped (tenants may hold '.' and '-')."""
    return _TAG_SPECIAL.sub(r"\\\1", value)


class RedisTier:
    def __init__(self, client: aioredis.Redis, profile: str, dim: int, ttl_s: int, ef_runtime: int) -> None:
        self.client = client
        self.prefix = entry_prefix(profile)
        self.index = index_name(profile)
        self.dim = dim
        self.ttl_s = ttl_s
        self.ef_runtime = ef_runtime
        self._store = client.register_script(script("store_entry"))
        self._plans: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._index_size: tuple[float, int] = (float("-inf"), 0)  # (valid until, entries), for every scope's plan

    def key(self, entry_id: str) -> str:
        return self.prefix + entry_id

    async def ensure_index(self) -> None:
        try:
            await self.client.execute_command("FT.INFO", self.index)
            return
        except ResponseError:
            pass
        try:
            await self.client.execute_command(
                "FT.CREATE", self.index, "ON", "HASH", "PREFIX", 1, self.prefix,
                "SCHEMA", "scope", "TAG", "tenant", "TAG",
                "vec", "VECTOR", "HNSW", 10, "TYPE", "FLOAT32", "DIM", self.dim,
                "DISTANCE_METRIC", "COSINE", "M", HNSW_M, "EF_CONSTRUCTION", HNSW_EF_CONSTRUCTION,
            )  # fmt: skip
        except ResponseError as exc:
            if "already exists" not in str(exc):  # another worker created it first
                raise

    async def lookup_exact(self, entry_id: str) -> Candidate | None:
        question, answer, meta = await self.client.hmget(self.key(entry_id), ["question", "answer", "meta"])
        if not isinstance(answer, bytes) or not isinstance(question, bytes):
            return None
        return Candidate(entry_id, question.decode(), answer.decode(), 1.0, meta=_meta(meta))

    async def plan(self, scope_id: str) -> str:
        """The hybrid policy clause for KNN in this scope: " HYBRID_POLICY BATCHES", or "" for the planner's."""
        now = time.monotonic()
        cached = self._plans.get(scope_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        # Counting "*" walks the whole index: once per PLAN_TTL_S for all scopes, in the same round trip.
        queries = [f"@scope:{{{scope_id}}}"] + (["*"] if self._index_size[0] <= now else [])
        async with self.client.pipeline(transaction=False) as pipe:
            for query in queries:
                pipe.execute_command("FT.SEARCH", self.index, query, "NOCONTENT", "LIMIT", 0, 0, "DIALECT", 2)
            (in_scope, *_), *index = await pipe.execute()
        if index:
            self._index_size = (now + PLAN_TTL_S, index[0][0])
        batches = in_scope >= BATCHES_MIN_SCOPE and in_scope >= BATCHES_MIN_SHARE * self._index_size[1]
        policy = " HYBRID_POLICY BATCHES" if batches else ""
        self._plans[scope_id] = (now + PLAN_TTL_S, policy)
        self._plans.move_to_end(scope_id)
        if len(self._plans) > PLANS_KEPT:
            self._plans.popitem(last=False)
        return policy

    async def lookup_similar(self, scope_id: str, vector: Vector) -> Candidate | None:
        policy = await self.plan(scope_id)
        reply = await self.client.execute_command(
            "FT.SEARCH", self.index,
            f"(@scope:{{{scope_id}}})=>[KNN 1 @vec $v EF_RUNTIME {self.ef_runtime}{policy} AS dist]",
            "PARAMS", 2, "v", vector.astype(np.float32).tobytes(),
            "RETURN", 4, "dist", "question", "answer", "meta",
            "SORTBY", "dist", "LIMIT", 0, 1, "DIALECT", 2,
        )  # fmt: skip
        if not reply or reply[0] == 0 or len(reply) < 3:
            return None
        key, flat = reply[1].decode(), reply[2]
        fields = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
        if "answer" not in fields:  # expired between the index scan and the read
            return None
        return Candidate(
            entry_id=key.removeprefix(self.prefix),
            question=fields["question"].decode(),
            answer=fields["answer"].decode(),
            similarity=1.0 - float(fields["dist"]),
            meta=_meta(fields.get("meta")),
        )

    async def store(self, entry: CacheEntry, as_of: float) -> Stored:
        """Store unless present, blocklisted, or forgotten after `as_of` (worker/lua/store_entry.lua)."""
        result = await self._store(
            keys=[self.key(entry.entry_id), BLOCKED_PREFIX + entry.entry_id, FORGOTTEN_PREFIX + entry.entry_id,
                  FORGOTTEN_TENANT_PREFIX + entry.tenant],
            args=[
                self.ttl_s, repr(as_of), answer_hash(entry.answer), entry.tenant,
                "scope", entry.scope_id, "tenant", entry.tenant, "question", entry.question,
                "answer", entry.answer, "vec", entry.vector, "meta", entry.meta.model_dump_json(exclude_none=True),
            ],
        )  # fmt: skip
        return _STORED[int(result)]

    async def forgotten(self, entry: CacheEntry, as_of: float) -> bool:
        """The store script's tombstone test, for the Postgres step of a write-back (run under its lock)."""
        marks = await self.client.mget([FORGOTTEN_PREFIX + entry.entry_id, FORGOTTEN_TENANT_PREFIX + entry.tenant])
        return any(mark is not None and as_of <= float(mark) for mark in marks)

    # --- removal (worker.forget) ---

    async def owner(self, entry_id: str) -> Owner | None:
        """The stored entry's tenant and answer, or None."""
        return _owner(await self.client.hmget(self.key(entry_id), ["tenant", "answer"]))

    async def forget(self, entry_ids: Sequence[str], tenant: str | None = None) -> list[Owner]:
        """Delete entries (only of `tenant`, if given) and any coalesced answer still waiting for followers."""
        if tenant is not None:
            owners = [await self.owner(i) for i in entry_ids]
            entry_ids = [i for i, o in zip(entry_ids, owners, strict=True) if o is not None and o[0] == tenant]
        if not entry_ids:
            return []
        async with self.client.pipeline(transaction=True) as pipe:
            for entry_id in entry_ids:
                pipe.hmget(self.key(entry_id), ["tenant", "answer"])
            pipe.delete(*(self.key(i) for i in entry_ids))
            pipe.delete(*(COALESCED_ANSWER_PREFIX + i for i in entry_ids))
            *read, _, _ = await pipe.execute()
        return [owner for owner in map(_owner, read) if owner is not None]

    async def drop_coalesced(self, entry_id: str) -> None:
        await self.client.delete(COALESCED_ANSWER_PREFIX + entry_id)

    async def forget_tenant(self, tenant: str) -> int:
        """Delete every entry of `tenant`, found through the index's tenant tag, in rounds of FORGET_BATCH."""
        removed = 0
        while True:
            reply = await self.client.execute_command(
                "FT.SEARCH", self.index, f"@tenant:{{{_tag(tenant)}}}",
                "NOCONTENT", "LIMIT", 0, FORGET_BATCH, "DIALECT", 2,
            )  # fmt: skip
            ids = [key.decode().removeprefix(self.prefix) for key in reply[1:]]
            deleted = len(await self.forget(ids))
            removed += deleted
            # An index that still lists keys already gone (expired) must not spin this loop.
            if len(ids) < FORGET_BATCH or deleted == 0:
                return removed

    async def block(self, entry_id: str, answer_hashes: Sequence[str], tenant: str, reason: str | None = None) -> None:
        """Copy blocklist pairs into Redis, where the store script checks them; tenant '' blocks for any tenant.
        The reason is kept by Postgres only (PgTier.block)."""
        if answer_hashes:
            # One field per tenant: a tenant's block never overwrites another's (worker/lua/store_entry.lua).
            await self.client.hset(BLOCKED_PREFIX + entry_id, mapping={f"{tenant}/{h}": 1 for h in answer_hashes})

    async def tombstone(self, key: str, until: float, ttl_s: int) -> None:
        """Refuse write-backs of content read up to `until`; `key` is an entry's or a tenant's tombstone."""
        await self.client.set(key, repr(until), ex=ttl_s)


def _owner(fields: Sequence[object]) -> Owner | None:
    tenant, answer = fields
    if not isinstance(tenant, bytes) or not isinstance(answer, bytes):
        return None
    return tenant.decode(), answer.decode()


def _meta(raw: object) -> AnswerMeta:
    # Entries stored before the field existed have none.
    return AnswerMeta.model_validate_json(raw) if isinstance(raw, bytes) else AnswerMeta()
