"""One LLM call per burst: concurrent misses for the same entry share the first one's answer.

The first task to miss takes a short lease in Redis (SET NX) and renews it while its LLM call runs;
the others poll for the answer it publishes. A leader that dies stops renewing, its lease lapses
within `lease_s`, and a follower takes over. State lives in Redis, so this holds across processes and
machines. Only identical (normalized) questions in one scope coalesce: a paraphrase of a pending
question is a different entry and pays its own call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from schemas.keys import COALESCED_ANSWER_PREFIX, PENDING_PREFIX
from worker.errors import DeadlineExceeded

# How long a published answer waits for followers; after that the stored entry serves them.
ANSWER_TTL_S = 60
POLL_S = 0.05
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Coalescer:
    def __init__(self, client: aioredis.Redis, lease_s: float) -> None:
        self.client = client
        self.lease_ms = int(lease_s * 1000)

    async def answer(
        self, key: str, call: Callable[[], Awaitable[str]], deadline: float, publish: bool = True
    ) -> tuple[str, bool]:
        """The answer for `key`, and whether this caller made the call (False: it followed another's). A leader
        that must not keep its answer (`publish=False`: its caller said no-store) leaves its followers to call."""
        pending, published = PENDING_PREFIX + key, COALESCED_ANSWER_PREFIX + key
        token = uuid.uuid4().hex
        while True:
            ready = await self.client.get(published)
            if isinstance(ready, bytes):
                return ready.decode(), False
            if await self.client.set(pending, token, nx=True, px=self.lease_ms):
                # A leader may have published and released between our GET and SET NX (one MULTI does
                # both), so look once more before paying for a second call.
                ready = await self.client.get(published)
                if isinstance(ready, bytes):
                    await self._release(pending, token)
                    return ready.decode(), False
                return await self._lead(pending, published if publish else None, token, call), True
            if time.time() >= deadline:
                raise DeadlineExceeded("the deadline passed while waiting for the same question's LLM answer")
            await asyncio.sleep(POLL_S)

    async def _lead(self, pending: str, published: str | None, token: str, call: Callable[[], Awaitable[str]]) -> str:
        renew = asyncio.create_task(self._renew(pending, token))
        try:
            text = await call()
            async with self.client.pipeline(transaction=True) as pipe:
                if published is not None:
                    pipe.set(published, text, ex=ANSWER_TTL_S)
                pipe.delete(pending)
                await pipe.execute()
            return text
        except BaseException:
            # Let a follower try at once instead of waiting for the lease to lapse.
            await self._release(pending, token)
            raise
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew

    async def withdraw(self, key: str) -> None:
        """Take back a published answer that must not be served again (worker.llm.cacheable)."""
        await self.client.delete(COALESCED_ANSWER_PREFIX + key)

    async def _release(self, pending: str, token: str) -> None:
        # Compare-and-delete: a lapsed lease may belong to a follower by now.
        await self.client.eval(_RELEASE, 1, pending, token)

    async def _renew(self, pending: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            # Only while the lease is still ours (a lapsed lease may belong to a follower by now).
            if await self.client.get(pending) != token.encode():
                return
            await self.client.pexpire(pending, self.lease_ms)
