"""Exact and semantic tiers in Redis: one hash per entry, indexed by a RediSearch HNSW index.

The exact tier reads the entry's hash by its deterministic id (no embedding needed); the semantic
tier runs KNN 1 over the same hashes, filtered by scope. One write serves both.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from schemas.cache import CacheEntry
from schemas.keys import entry_prefix, index_name
from worker.lua import script
from worker.tiers import Candidate

# HNSW build parameters; query breadth (EF_RUNTIME) is a setting.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200


class RedisTier:
    def __init__(self, client: aioredis.Redis, profile: str, dim: int, ttl_s: int, ef_runtime: int) -> None:
        self.client = client
        self.prefix = entry_prefix(profile)
        self.index = index_name(profile)
        self.dim = dim
        self.ttl_s = ttl_s
        self.ef_runtime = ef_runtime
        self._store = client.register_script(script("store_entry"))

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
        question, answer = await self.client.hmget(self.key(entry_id), ["question", "answer"])
        if not isinstance(answer, bytes) or not isinstance(question, bytes):
            return None
        return Candidate(entry_id, question.decode(), answer.decode(), 1.0)

    async def lookup_similar(self, scope_id: str, vector: npt.NDArray[np.float32]) -> Candidate | None:
        reply = await self.client.execute_command(
            "FT.SEARCH", self.index,
            f"(@scope:{{{scope_id}}})=>[KNN 1 @vec $v EF_RUNTIME {self.ef_runtime} AS dist]",
            "PARAMS", 2, "v", vector.astype(np.float32).tobytes(),
            "RETURN", 3, "dist", "question", "answer",
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
        )

    async def store(self, entry: CacheEntry) -> bool:
        """Store unless present; True when this call wrote it."""
        written = await self._store(
            keys=[self.key(entry.entry_id)],
            args=[
                self.ttl_s,
                "scope", entry.scope_id, "tenant", entry.tenant, "question", entry.question,
                "answer", entry.answer, "vec", entry.vector,
            ],
        )  # fmt: skip
        return bool(written)
