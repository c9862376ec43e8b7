"""The Python clients, sync and async, against the real stack: ask, fire-and-forget, timeouts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid

import pytest
import redis

from producer import AsyncClient, Client, ReplyTimeout
from producer.settings import ProducerSettings
from schemas.keys import LOOKUP_QUEUE, reply_key
from schemas.messages import ChatReply, Tier
from worker.local.servers import LocalStack


def fresh_question() -> str:
    return f"Is {uuid.uuid4().hex[:10]} contagious?"


def test_sync_submit_then_get_reply(client: Client, tenant: str) -> None:
    question = fresh_question()
    request_id = client.submit(question, tenant=tenant)
    reply = client.get_reply(request_id, timeout=10)
    assert reply.ok and reply.request_id == request_id and question in (reply.answer or "")


def test_sync_client_is_safe_to_share_across_threads(client: Client, tenant: str) -> None:
    questions = [fresh_question() for _ in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda q: client.ask(q, tenant=tenant), questions))
    assert all(q in (r.answer or "") for q, r in zip(questions, replies, strict=True))


def test_async_ask_submit_and_get_reply(stack: LocalStack, tenant: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(ProducerSettings()) as client:
            question = fresh_question()
            cold = await client.ask(question, tenant=tenant)
            assert cold.ok and cold.tier == Tier.LLM and question in (cold.answer or "")
            # Many concurrent asks on one client share its pools.
            many = [fresh_question() for _ in range(8)]
            replies = await asyncio.gather(*(client.ask(q, tenant=tenant) for q in many))
            assert all(q in (r.answer or "") for q, r in zip(many, replies, strict=True))
            # Fire and forget, then read.
            request_id = await client.submit(question, tenant=tenant, system="Answer in French.")
            later = await client.get_reply(request_id, timeout=10)
            assert later.ok and later.request_id == request_id

    asyncio.run(scenario())


def test_sync_timeout_says_what_happened_and_the_late_reply_does_not_leak(client: Client, tenant: str) -> None:
    slow = fresh_question()
    request_id = client.submit(slow, tenant=tenant)
    # The stand-in LLM takes ~100 ms: 10 ms is too short.
    with pytest.raises(ReplyTimeout) as timed_out:
        client.get_reply(request_id, timeout=0.01)
    err = timed_out.value
    assert err.request_id == request_id and err.queue_depth is not None and err.workers
    assert f"the {LOOKUP_QUEUE} queue holds" in str(err) and "answer a ping" in str(err)
    # The next call gets its own answer, not the late one ...
    other = fresh_question()
    reply = client.ask(other, tenant=tenant)
    assert other in (reply.answer or "") and slow not in (reply.answer or "")
    # ... which waits on its own list for whoever asks for it.
    late = client.get_reply(request_id, timeout=10)
    assert late.request_id == request_id and slow in (late.answer or "")


def test_async_timeout_and_the_late_reply_does_not_leak(stack: LocalStack, tenant: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(ProducerSettings()) as client:
            slow = fresh_question()
            request_id = await client.submit(slow, tenant=tenant)
            with pytest.raises(ReplyTimeout) as timed_out:
                await client.get_reply(request_id, timeout=0.01)
            assert timed_out.value.workers
            other = fresh_question()
            reply = await client.ask(other, tenant=tenant)
            assert other in (reply.answer or "") and slow not in (reply.answer or "")
            assert slow in ((await client.get_reply(request_id, timeout=10)).answer or "")

    asyncio.run(scenario())


def test_timeout_with_no_worker_consuming_says_so(stack: LocalStack, tenant: str) -> None:
    # Redis database 1 of the same server: no worker consumes its queues or answers its pings.
    db1 = stack.redis_url.removesuffix("/0") + "/1"

    async def scenario() -> tuple[ReplyTimeout, ReplyTimeout]:
        async with AsyncClient(ProducerSettings(redis_url=db1)) as client:
            request_id = await client.submit(fresh_question(), tenant=tenant)
            with pytest.raises(ReplyTimeout) as timed_out:
                await client.get_reply(request_id, timeout=0.2)
            # An ask waits on the client's inbox instead, and says the same.
            with pytest.raises(ReplyTimeout) as ask_timed_out:
                await client.ask(fresh_question(), tenant=tenant, timeout=0.2)
            return timed_out.value, ask_timed_out.value

    r = redis.Redis.from_url(db1)
    try:
        err, ask_err = asyncio.run(scenario())
    finally:
        # Key by key: FLUSHDB would also drop RediSearch's indexes, which live outside any one database.
        for key in r.scan_iter():
            r.delete(key)
        r.close()
    assert err.queue_depth == 1 and err.workers == []
    assert "holds 1 message(s)" in str(err) and "no worker answers a ping" in str(err)
    assert ask_err.queue_depth == 2 and ask_err.workers == [] and "no worker answers a ping" in str(ask_err)


def test_non_positive_timeout_only_looks(client: Client) -> None:
    with pytest.raises(ReplyTimeout):
        client.get_reply(f"never-sent-{uuid.uuid4().hex}", timeout=0)


def test_reply_lists_are_per_request(client: Client, rdb: redis.Redis, tenant: str) -> None:
    first = client.submit(fresh_question(), tenant=tenant)
    second = client.submit(fresh_question(), tenant=tenant)
    assert client.get_reply(second, timeout=10).request_id == second
    assert client.get_reply(first, timeout=10).request_id == first
    assert not rdb.exists(reply_key(first)) and not rdb.exists(reply_key(second))


def test_more_waiting_requests_than_connections_wait_their_turn(rdb: redis.Redis, tenant: str) -> None:
    # A sync ask awaiting its reply holds a Redis connection; with only 3, twelve concurrent asks queue for
    # one instead of failing (redis-py's default pool raises MaxConnectionsError past its limit). Async asks
    # hold none while they wait: their replies come to the client's inbox, read by one connection.
    settings = ProducerSettings(client_max_connections=3)
    questions = [fresh_question() for _ in range(12)]
    many = [fresh_question() for _ in range(40)]

    async def asks() -> list[str]:
        async with AsyncClient(settings) as client:
            replies = await asyncio.gather(*(client.ask(q, tenant=tenant, timeout=30) for q in many))
        assert all(q in (r.answer or "") for q, r in zip(many, replies, strict=True))
        return [r.request_id for r in replies]

    request_ids = asyncio.run(asks())
    assert not any(rdb.exists(reply_key(rid)) for rid in request_ids)
    client = Client(settings)
    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(lambda q: client.ask(q, tenant=tenant, timeout=30), questions))
    finally:
        client.close()
    assert all(r.ok for r in replies)


def test_a_reply_nobody_waits_for_is_dropped_not_handed_to_the_next_ask(rdb: redis.Redis, tenant: str) -> None:
    # As a worker would publish it for an ask that has since timed out or been cancelled.
    stale = ChatReply(request_id=uuid.uuid4().hex, answer="the stale answer", tier=Tier.EXACT)

    async def scenario() -> tuple[str, ChatReply]:
        async with AsyncClient(ProducerSettings()) as client:
            rdb.rpush(client.inbox.key, stale.model_dump_json())
            question = fresh_question()
            reply = await client.ask(question, tenant=tenant)
            assert question in (reply.answer or "")
            return client.inbox.key, reply

    inbox, reply = asyncio.run(scenario())
    assert reply.request_id != stale.request_id and reply.answer != stale.answer
    assert rdb.llen(inbox) == 0  # popped with the ask's own reply, and dropped
