"""The pool-wide cap on concurrent LLM calls, on the real Redis and through the real workers."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis.asyncio as aioredis

from producer.client import Client
from schemas.keys import LLM_SLOTS_KEY
from tests.conftest import WORKER_ENV, llm_concurrency
from worker.errors import DeadlineExceeded
from worker.llm_slots import LLMSlots
from worker.local.servers import LocalStack

CAP = int(WORKER_ENV["DEJAVU_LLM_MAX_CONCURRENCY"])


def test_a_burst_of_cold_questions_never_exceeds_the_cap_and_all_are_answered(
    client: Client, stack: LocalStack, tenant: str
) -> None:
    llm_concurrency(stack)  # reset the peak
    questions = [f"Cold question {i} for the cap ({tenant})? [[standin:sleep=0.4]]" for i in range(12)]
    with ThreadPoolExecutor(len(questions)) as pool:
        replies = list(pool.map(lambda q: client.ask(q, tenant=tenant, timeout=30), questions))
    assert all(r.ok for r in replies), [r.error for r in replies if not r.ok]
    # The I/O node runs 8 threads, so without the cap 8 calls would be in flight at once.
    assert llm_concurrency(stack)["peak"] == CAP


def test_slots_are_shared_freed_by_a_dead_holder_and_bounded_by_the_deadline(stack: LocalStack) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(stack.redis_url)
        # The real key: tests run one at a time, so no worker holds a slot now.
        slots = LLMSlots(client, limit=2, lease_s=1.0)
        await client.delete(LLM_SLOTS_KEY)
        try:
            held, peak = 0, 0

            async def call() -> None:
                nonlocal held, peak
                async with slots.slot(time.time() + 10):
                    held += 1
                    peak = max(peak, held)
                    await asyncio.sleep(0.05)
                    held -= 1

            await asyncio.gather(*(call() for _ in range(8)))
            assert peak == 2
            # Two holders that died without releasing: the next caller waits out their lease ...
            await client.zadd(LLM_SLOTS_KEY, {uuid.uuid4().hex: time.time() * 1000 + 800 for _ in range(2)})
            with pytest.raises(DeadlineExceeded):
                async with slots.slot(time.time() + 0.3):
                    pass
            # ... and gets a slot once it has lapsed.
            async with slots.slot(time.time() + 5):
                pass
        finally:
            await client.aclose()

    asyncio.run(scenario())
