"""The durable tier: PostgreSQL + pgvector, one HNSW-indexed table per embedding profile."""

from __future__ import annotations

import asyncpg
import numpy as np
import numpy.typing as npt

from schemas.cache import CacheEntry
from worker import sqlfiles
from worker.tiers import Candidate

# Serializes schema creation across workers starting at once (CREATE ... IF NOT EXISTS can race).
SCHEMA_LOCK_ID = 0x64656A61


async def ensure_schema(conn: asyncpg.Connection, profile: str, dim: int) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_ID)
        for statement in sqlfiles.schema(profile, dim):
            await conn.execute(statement)


class PgTier:
    """Opens nothing up front: a worker must start, and answer from the other tiers, while Postgres is down."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, profile: str, dim: int) -> None:
        self.pool = pool
        self.dsn, self.profile, self.dim = dsn, profile, dim
        self._schema_ready = False
        self._knn = sqlfiles.query("knn", profile)
        self._insert = sqlfiles.query("insert_entry", profile)

    async def ready(self) -> None:
        """Create the schema on first use; raises the connection error while Postgres is unreachable."""
        if self._schema_ready:
            return
        # A plain connection: the pool's connections register the vector type, which needs the extension first.
        conn = await asyncpg.connect(self.dsn)
        try:
            await ensure_schema(conn, self.profile, self.dim)
        finally:
            await conn.close()
        self._schema_ready = True

    async def lookup_similar(self, scope_id: str, vector: npt.NDArray[np.float32]) -> Candidate | None:
        await self.ready()
        row = await self.pool.fetchrow(self._knn, vector, scope_id)
        if row is None:
            return None
        return Candidate(
            entry_id=row["id"],
            question=row["question"],
            answer=row["answer"],
            similarity=float(row["similarity"]),
            vector=row["embedding"].to_numpy().astype(np.float32),
        )

    async def store(self, entry: CacheEntry) -> bool:
        """Insert unless present; True when this call wrote it."""
        await self.ready()
        status = await self.pool.execute(
            self._insert,
            entry.entry_id, entry.scope_id, entry.tenant, entry.model, entry.system_hash,
            entry.context_hash, entry.question, entry.question_hash, entry.answer,
            np.frombuffer(entry.vector, dtype=np.float32),
        )  # fmt: skip
        return bool(status.endswith(" 1"))
