"""The coalescer against the real Redis: many concurrent misses for one key make one call."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis.asyncio as aioredis

from worker.coalesce import Coalescer
from worker.local.servers import LocalStack


def test_many_rounds_of_concurrent_misses_never_make_a_second_call(stack: LocalStack) -> None:
    # Arrivals are staggered so some land exactly while the leader publishes and releases its lease:
    # the window between a follower's GET of the answer and its SET NX of the lease.
    async def rounds() -> list[int]:
        client = aioredis.Redis.from_url(stack.redis_url)
        coalescer = Coalescer(client, lease_s=5)
        counts = []
        try:
            for _ in range(30):
                key = f"test-coalesce:{uuid.uuid4().hex}"
                calls = 0

                async def call() -> str:
                    nonlocal calls
                    calls += 1
                    await asyncio.sleep(0.02)
                    return "the one answer"

                async def arrive(i: int, key: str) -> tuple[str, bool]:
                    await asyncio.sleep(i * 0.002)
                    return await coalescer.answer(key, call, deadline=time.time() + 10)

                results = await asyncio.gather(*(arrive(i, key) for i in range(20)))
                assert {text for text, _ in results} == {"the one answer"}
                assert sum(led for _, led in results) == calls
                counts.append(calls)
        finally:
            await client.aclose()
        return counts

    assert asyncio.run(rounds()) == [1] * 30
