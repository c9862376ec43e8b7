"""The pool-wide cap on concurrent LLM calls, on the real Redis and through the real workers."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis.asyncio as aioredis

from producer.client import Client
from schemas.keys import COMPLETE_TASK, LLM_SLOTS_KEY
from tests.conftest import WORKER_ENV, llm_concurrency, wait_until, worker_tasks
from worker.errors import DeadlineExceeded
from worker.llm_slots import LLMSlots
from worker.local.servers import LocalStack

CAP = int(WORKER_ENV["DEJAVU_LLM_MAX_CONCURRENCY"])
# The I/O node's threads (tests/conftest.py): without the cap, this many LLM calls would be in flight at once.
IO_THREADS = 8


def test_a_burst_of_cold_questions_never_exceeds_the_cap_and_all_are_answered(
    client: Client, stack: LocalStack, tenant: str
) -> None:
    nodes = client.workers()
    llm_concurrency(stack)  # reset the peak
    # Given as many cold questions at once as the I/O node has threads, each LLM call held after its first token ...
    questions = [f"Cold question {i} for the cap ({tenant})? [[standin:hold-after=1]]" for i in range(IO_THREADS)]

    def held() -> int:
        return sum(1 for s in stack.llm_streams()["in_progress"] if tenant in s["question"] and s["held"])

    def calling() -> bool:
        tasks = worker_tasks(client, nodes, "active")
        return tasks is not None and sum(t["name"] == COMPLETE_TASK for t in tasks) == IO_THREADS

    with ThreadPoolExecutor(len(questions)) as pool:
        asked = [pool.submit(lambda q: list(client.ask_stream(q, tenant=tenant, timeout=60)), q) for q in questions]
        # ... once every thread runs one of them, CAP of them in the LLM and the others waiting for a slot,
        wait_until(lambda: held() == CAP and calling())
        # then only CAP calls are in flight,
        assert llm_concurrency(stack)["in_flight"] == CAP

        def released_all() -> bool:
            stack.release_llm_streams()
            return all(future.done() for future in asked)

        wait_until(released_all, timeout=60)
    # and, let go, every question is answered, never more than CAP at a time.
    replies = [events[-1] for events in (future.result() for future in asked)]
    assert all(r.ok for r in replies), [r.error for r in replies if not r.ok]
    assert llm_concurrency(stack)["peak"] == CAP


def test_slots_are_shared_freed_by_a_dead_holder_and_bounded_by_the_deadline(stack: LocalStack) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(stack.redis_url)
        # Two workers' views of the real key: tests run one at a time, so no worker holds a slot now.
        one, other = (LLMSlots(client, limit=2, lease_s=60.0) for _ in range(2))
        await client.delete(LLM_SLOTS_KEY)
        try:
            # Given one slot held through each view ...
            async with one.slot(time.time() + 10), other.slot(time.time() + 10):
                # ... a third caller waits until its deadline and gives up,
                with pytest.raises(DeadlineExceeded):
                    async with one.slot(time.time() + 0.3):
                        pass
            # and gets a slot as soon as they are released.
            async with other.slot(time.time() + 10):
                pass
            # Two holders that died without releasing: the next caller waits out their lease ...
            dead = [uuid.uuid4().hex for _ in range(2)]
            await client.zadd(LLM_SLOTS_KEY, {token: time.time() * 1000 + 60_000 for token in dead})
            with pytest.raises(DeadlineExceeded):
                async with one.slot(time.time() + 0.3):
                    pass
            # ... and gets a slot once it has lapsed.
            await client.zadd(LLM_SLOTS_KEY, {token: time.time() * 1000 - 1 for token in dead})
            async with one.slot(time.time() + 10):
                assert await client.zcard(LLM_SLOTS_KEY) == 1
        finally:
            await client.aclose()

    asyncio.run(scenario())
