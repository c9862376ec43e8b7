"""The durable tier: PostgreSQL + pgvector, one HNSW-indexed table per embedding profile."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import asyncpg
import numpy as np

from schemas.cache import AnswerMeta, CacheEntry, answer_hash
from worker import sqlfiles
from worker.tiers import Candidate, Owner, Stored, Vector

# The Redis tier's tombstone test (RedisTier.forgotten): was this content read before a forget of it finished?
Tombstones = Callable[[CacheEntry, float], Awaitable[bool]]
# Serializes schema creation across workers starting at once (CREATE ... IF NOT EXISTS can race).
SCHEMA_LOCK_ID = 0x64656A61


async def ensure_schema(conn: asyncpg.Connection, profile: str, dim: int) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_ID)
        for statement in sqlfiles.schema(profile, dim):
            await conn.execute(statement)


class PgTier:
    """Opens nothing up front: a worker must start, and answer from the other tiers, while Postgres is down.

    Each verb runs in a transaction of its own, or in the caller's (`transaction`): a forget deletes, blocklists
    and puts up its tombstone under the locks it took, and commits once.
    """

    def __init__(self, pool: asyncpg.Pool, dsn: str, profile: str, dim: int, forgotten: Tombstones) -> None:
        self.pool = pool
        self.dsn, self.profile, self.dim = dsn, profile, dim
        self._forgotten = forgotten
        self._conn: asyncpg.Connection | None = None  # set on the copy `transaction` yields
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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgTier]:
        """This tier with every verb in one transaction: the locks they take are held until it commits."""
        async with self._transaction() as conn:
            bound = copy.copy(self)
            bound._conn = conn
            yield bound

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        if self._conn is not None:
            yield self._conn
            return
        await self.ready()
        conn: asyncpg.Connection
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    async def lookup_similar(self, scope_id: str, vector: Vector) -> Candidate | None:
        await self.ready()
        row = await (self._conn or self.pool).fetchrow(self._knn, vector, scope_id)
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

    async def store(self, entry: CacheEntry, as_of: float) -> Stored:
        """Insert unless present, blocklisted, or forgotten after `as_of`."""
        async with self._transaction() as conn:
            await self.lock_writes(conn, entry.tenant, [entry.entry_id])
            # Under the write locks: a forget that began before has put up its tombstone, a later one waits.
            if await self._forgotten(entry, as_of):
                return Stored.FORGOTTEN
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

    async def lock_writes(self, conn: asyncpg.Connection, tenant: str, entry_ids: Sequence[str]) -> None:
        """Shared, until the transaction ends; a forget waits for them (sql/queries/lock_writes.sql)."""
        await conn.execute(self._lock_writes, tenant, list(entry_ids))

    # --- removal (worker.forget) ---

    async def forget(self, entry_ids: Sequence[str], tenant: str | None = None) -> list[Owner]:
        """Delete entries (only of `tenant`, if given) under their write locks, taken exclusively: writes wait."""
        removed: list[Owner] = []
        async with self._transaction() as conn:
            for entry_id in entry_ids:
                await conn.execute(sqlfiles.query("forget_lock_entry", self.profile), entry_id)
                rows = await conn.fetch(sqlfiles.query("forget_entry", self.profile), entry_id, tenant)
                removed += [(row["tenant"], row["answer"]) for row in rows]
        return removed

    async def forget_tenant(self, tenant: str) -> int:
        """Delete every entry of `tenant` under its write lock, taken exclusively: its writes wait."""
        async with self._transaction() as conn:
            await conn.execute(sqlfiles.query("forget_lock_tenant", self.profile), tenant)
            status = await conn.execute(sqlfiles.query("forget_tenant", self.profile), tenant)
        return int(status.split()[-1])

    async def block(self, entry_id: str, answer_hashes: Sequence[str], tenant: str, reason: str | None = None) -> None:
        """Put question/answer pairs on the durable blocklist; tenant '' blocks them for any tenant."""
        async with self._transaction() as conn:
            await conn.executemany(
                sqlfiles.query("block_answer", self.profile), [(entry_id, h, tenant, reason) for h in answer_hashes]
            )
