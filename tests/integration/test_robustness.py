"""Promises that hold whatever happens underneath: one reply per request, servers locked down."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
import redis

from producer import AsyncClient, Client, Overloaded
from producer.settings import ProducerSettings
from schemas.keys import LOOKUP_QUEUE, reply_key
from schemas.messages import Tier
from schemas.taskwire import task_message
from tests.conftest import llm_calls, wait_idle
from worker.local.servers import PG_DB, PG_USER, LocalStack


def test_a_lookup_task_run_twice_publishes_one_reply(client: Client, rdb: redis.Redis, tenant: str) -> None:
    # Given the same request delivered twice (a broker redelivery, a retrying producer) ...
    request = client.request("Is this answered once?", tenant=tenant)
    client.send(request)
    client.send(request)
    # ... the first reply arrives and no second one ever follows.
    first = client.get_reply(request.request_id, timeout=15)
    assert first.ok
    wait_idle(client)
    assert rdb.llen(reply_key(request.request_id)) == 0


def test_same_task_message_twice_is_one_reply(client: Client, rdb: redis.Redis, tenant: str) -> None:
    request = client.request("What is gout, asked twice?", tenant=tenant)
    message = task_message("dejavu.lookup", LOOKUP_QUEUE, [request.model_dump_json()])
    rdb.lpush(LOOKUP_QUEUE, message, message)
    assert client.get_reply(request.request_id, timeout=15).ok
    wait_idle(client)
    assert rdb.llen(reply_key(request.request_id)) == 0


def test_embedded_redis_refuses_without_password(stack: LocalStack) -> None:
    anonymous = redis.Redis(host="127.0.0.1", port=stack.redis_port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()


def test_embedded_postgres_refuses_without_password(stack: LocalStack) -> None:
    async def connect(password: str | None) -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=stack.pg_port, user=PG_USER, database=PG_DB, password=password
        )
        await conn.close()

    with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
        asyncio.run(connect(None))
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(connect("wrong"))
    asyncio.run(connect(stack.secrets["PG_PASSWORD"]))


def test_producers_refuse_at_once_when_the_queue_is_too_deep(stack: LocalStack, tenant: str) -> None:
    # Database 1 has no worker: its lookup queue only grows, as under a backlog.
    db1 = stack.redis_url.removesuffix("/0") + "/1"
    settings = ProducerSettings(redis_url=db1, max_queue_depth=2, overloaded_retry_after_s=3)
    client = Client(settings)
    raw = redis.Redis.from_url(db1)
    try:
        client.submit("first?", tenant=tenant)
        client.submit("second?", tenant=tenant)
        # Refused by the enqueue itself (submit never waits for a reply), not after a timeout.
        with pytest.raises(Overloaded) as refused:
            client.submit("third?", tenant=tenant)
        assert refused.value.queue_depth == 2 and refused.value.retry_after_s == 3
        assert "retry in 3s" in str(refused.value)
        assert raw.llen(LOOKUP_QUEUE) == 2  # the refused request was not queued

        async def async_refused() -> None:
            async with AsyncClient(settings) as aclient:
                with pytest.raises(Overloaded):
                    await aclient.submit("fourth?", tenant=tenant)

        asyncio.run(async_refused())
    finally:
        raw.delete(LOOKUP_QUEUE)  # never FLUSHDB: RediSearch drops its indexes on any flush
        raw.close()
        client.close()


def test_a_burst_of_identical_misses_costs_one_llm_call(client: Client, stack: LocalStack, tenant: str) -> None:
    # Given 10 producers asking the same cold question at the same moment ...
    question = f"What is the boiling point of water on Everest ({tenant})?"
    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda _: client.ask(question, tenant=tenant, timeout=20), range(10)))
    # ... the LLM is asked once, and every reply carries that one answer.
    seen = [(r.tier, r.error, r.timings_ms.get("llm")) for r in replies]
    assert llm_calls(stack, question) == 1, seen
    assert all(r.ok for r in replies) and len({r.answer for r in replies}) == 1
    tiers = Counter(r.tier for r in replies)
    # Late arrivals may find the leader's answer already stored and be served by any tier; never a 2nd call.
    assert tiers[Tier.LLM] == 1 and tiers[Tier.COALESCED] + tiers[Tier.LLM] >= 2
