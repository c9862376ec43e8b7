"""A cap on concurrent LLM calls across the whole pool, so a spike of misses does not hammer the provider.

Holders live in one Redis sorted set scored by lease expiry: any worker on any machine counts them, and a
worker that dies mid-call frees its slot when the lease (one attempt's timeout plus a margin) ends. A call
beyond the cap polls for a free slot until its request's deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from schemas.keys import LLM_SLOTS_KEY
from worker.errors import DeadlineExceeded
from worker.lua import script

POLL_S = 0.02


class LLMSlots:
    def __init__(self, client: aioredis.Redis, limit: int, lease_s: float) -> None:
        self.client = client
        self.limit = limit
        self.lease_ms = int(lease_s * 1000)
        self._take = client.register_script(script("take_llm_slot"))

    @asynccontextmanager
    async def slot(self, deadline: float) -> AsyncIterator[None]:
        """Hold one slot for one HTTP attempt (not across the back-off between attempts)."""
        if self.limit <= 0:
            yield
            return
        token = uuid.uuid4().hex
        while not await self._take(keys=[LLM_SLOTS_KEY], args=[token, self.lease_ms, self.limit]):
            if time.time() >= deadline:
                raise DeadlineExceeded(f"the deadline passed while all {self.limit} LLM call slots were busy")
            # Jitter keeps waiting workers from polling in lockstep.
            await asyncio.sleep(POLL_S * random.uniform(0.5, 1.5))
        try:
            yield
        finally:
            await self.client.zrem(LLM_SLOTS_KEY, token)
