"""The durable tier: PostgreSQL + pgvector, one HNSW-indexed table per embedding profile."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg
import numpy as np
import numpy.typing as npt

from schemas.cache import AnswerMeta, CacheEntry, answer_hash
from worker import sqlfiles
from worker.tiers import Candidate, Stored

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
        self._lock_writes = sqlfiles.query("lock_writes", profile)

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
            meta=AnswerMeta.model_validate_json(row["meta"]),
        )

    @asynccontextmanager
    async def writing(self, tenant: str, entry_ids: Sequence[str]) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that holds the write locks of `tenant` and `entry_ids`, which a forget waits for."""
        await self.ready()
        conn: asyncpg.Connection
        async with self.pool.acquire() as conn, conn.transaction():
            await self.lock_writes(conn, tenant, entry_ids)
            yield conn

    async def lock_writes(self, conn: asyncpg.Connection, tenant: str, entry_ids: Sequence[str]) -> None:
        """Shared, until the transaction ends (sql/queries/lock_writes.sql)."""
        await conn.execute(self._lock_writes, tenant, list(entry_ids))

    async def insert(self, conn: asyncpg.Connection, entry: CacheEntry) -> Stored:
        """Insert unless present or blocklisted."""
        row = await conn.fetchrow(
            self._insert,
            entry.entry_id, entry.scope_id, entry.tenant, entry.model, entry.system_hash,
            entry.context_hash, entry.question, entry.question_hash, entry.answer,
            np.frombuffer(entry.vector, dtype=np.float32), answer_hash(entry.answer),
            entry.meta.model_dump_json(exclude_none=True),
        )  # fmt: skip
        if row["blocked"]:
            return Stored.BLOCKED
        return Stored.STORED if row["inserted"] else Stored.PRESENT

    # --- removal (worker.forget) ---

    @asynccontextmanager
    async def forgetting(
        self, *, entry_id: str | None = None, tenant: str | None = None
    ) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that holds the entry's (or else the tenant's) write lock: writes of it wait until commit."""
        await self.ready()
        conn: asyncpg.Connection
        async with self.pool.acquire() as conn, conn.transaction():
            if entry_id is not None:
                await conn.execute(sqlfiles.query("forget_lock_entry", self.profile), entry_id)
            else:
                await conn.execute(sqlfiles.query("forget_lock_tenant", self.profile), tenant)
            yield conn

    async def delete_entry(self, conn: asyncpg.Connection, entry_id: str, tenant: str | None) -> list[tuple[str, str]]:
        """Delete one entry (only of `tenant`, if given); returns the (tenant, answer) of the row deleted."""
        rows = await conn.fetch(sqlfiles.query("forget_entry", self.profile), entry_id, tenant)
        return [(row["tenant"], row["answer"]) for row in rows]

    async def delete_tenant(self, conn: asyncpg.Connection, tenant: str) -> int:
        status = await conn.execute(sqlfiles.query("forget_tenant", self.profile), tenant)
        return int(status.split()[-1])

    async def block(
        self, conn: asyncpg.Connection, entry_id: str, answer_hashes: Sequence[str], tenant: str, reason: str | None
    ) -> None:
        """Put question/answer pairs on the durable blocklist; tenant '' blocks them for any tenant."""
        await conn.executemany(
            sqlfiles.query("block_answer", self.profile), [(entry_id, h, tenant, reason) for h in answer_hashes]
        )
