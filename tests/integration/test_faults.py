"""Faults underneath: answers keep coming, and nothing accepted is lost."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import redis

from producer.client import Client
from schemas.keys import entry_prefix
from schemas.messages import Tier
from tests.conftest import wait_until
from worker.local.servers import LocalStack
from worker.settings import Settings


def pg_has(entry_id: str) -> bool:
    async def query() -> bool:
        conn = await asyncpg.connect(Settings().pg_dsn)
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM dejavu_entries_minilm WHERE id = $1", entry_id))
        finally:
            await conn.close()

    try:
        return asyncio.run(query())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False


def test_postgres_down_answers_still_come_and_writeback_lands_after(
    client: Client, rdb: redis.Redis, stack: LocalStack, tenant: str
) -> None:
    # Given Postgres is stopped ...
    stack.stop_one("postgres", signal.SIGINT)
    try:
        # ... a cold question is still answered (the durable tier is skipped) ...
        cold = client.ask("Does a cold answer survive a Postgres outage?", tenant=tenant, timeout=20)
        assert cold.ok and cold.tier == Tier.LLM
        # ... and the same question again is served from Redis, which the write-back did reach.
        wait_until(lambda: rdb.exists(entry_prefix("minilm") + (cold.entry_id or "")))
        again = client.ask("Does a cold answer survive a Postgres outage?", tenant=tenant, timeout=20)
        assert again.ok and again.tier == Tier.EXACT
        assert not pg_has(cold.entry_id or "")
    finally:
        stack.start_postgres()
    # When Postgres is back, the retried write-back lands: nothing was lost.
    wait_until(lambda: pg_has(cold.entry_id or ""), timeout=90)
