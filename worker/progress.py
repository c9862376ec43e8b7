"""A node's mark that it holds a request, kept while its LLM call runs (producer.resend reads it).

Lookup requests are marked as kombu takes them (worker.broker), which covers a lookup of milliseconds. A miss
then waits on the LLM for seconds to minutes, so its LLM task marks the request itself and renews the mark
until it is done; if the node dies the mark lapses within `ttl_s`, and the producer sends the request again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from schemas.keys import TAKEN_PREFIX

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def holding(client: aioredis.Redis, request_id: str, holder: str, ttl_s: int) -> AsyncIterator[None]:
    key = TAKEN_PREFIX + request_id

    async def renew() -> None:
        while True:
            try:
                await client.set(key, holder, ex=ttl_s)
            except RedisError as exc:  # Redis restarting: the task's own Redis calls decide what happens
                log.debug("could not renew the taken mark of %s: %s", request_id, exc)
            await asyncio.sleep(ttl_s / 3)

    task = asyncio.create_task(renew(), name=f"dejavu holding {request_id}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
