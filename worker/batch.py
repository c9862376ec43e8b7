"""Lookups taken in batches under load (DEJAVU_LOOKUP_BATCH, docs/performance.md).

A lookup task, as it starts, takes up to DEJAVU_LOOKUP_BATCH_MAX - 1 more lookup messages waiting on the queue
(worker/lua/take_lookups.lua: each with its unacked copy and its taken mark, atomically, as kombu takes one) in
the same round trip as its own exact lookup. Every request of the batch then runs the pipeline it would run
alone (worker.pipeline.handle), one coroutine each, on a Redis client that sends the commands issued in one
turn of the loop as one pipeline (worker.autopipe): one round trip for the exact lookups, one for the KNN
queries, one for the reply scripts, where alone each request pays its own. Each question is still embedded
alone, so a vector never depends on the batch, and each request meets its own deadline check.

With none waiting the batch is the task's own request, served at once: no timer, nothing waited for. Under
load a request's reply goes out with the next pipeline of its batch, after the embeddings of the others taken
with it (at most N-1, each a few ms): what it would otherwise have waited on the queue for, behind the same
requests.

A message this module took is acked (its unacked copy removed) only after its reply was published or its miss
handed to the LLM queue and its write-back handed on; the task's own message is acked by Celery after the task
returns, as always. A node killed mid-batch leaves the rest in the unacked hash, restored by kombu's sweep, and
their taken marks lapse, so their producers send them again; the reply script answers a request id once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.cache import WritebackJob
from schemas.keys import LOOKUP_QUEUE, LOOKUP_TASK, TAKEN_PREFIX
from worker import pipeline
from worker.app import app
from worker.autopipe import AutoPipeline
from worker.lua import script
from worker.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Taken:
    """A lookup message this module took off the queue."""

    request_id: str
    delivery_tag: str
    payload: str


class Taker:
    """Takes waiting lookup messages with kombu's bookkeeping, under the node's unacked keys (worker.app)."""

    def __init__(self, client: AutoPipeline, options: dict[str, Any]) -> None:
        self.client = client
        self.unacked = str(options.get("unacked_key", "unacked"))
        self.index = str(options.get("unacked_index_key", "unacked_index"))
        self.mark = f"lookup {options.get('node_name', '?')}"
        self.mark_ttl = int(options.get("taken_ttl", 0))
        self._take = client.register_script(script("take_lookups"))

    async def take(self, count: int) -> list[Taken]:
        if count <= 0:
            return []
        raws = await self._take(
            keys=[LOOKUP_QUEUE, self.unacked, self.index],
            args=[count, repr(time.time()), LOOKUP_TASK, TAKEN_PREFIX, self.mark, self.mark_ttl],
        )
        return [read_message(raw) for raw in raws]

    async def ack(self, taken: list[Taken]) -> None:
        if not taken:
            return
        tags = [t.delivery_tag for t in taken]
        # The copy first, then its index entry: a node killed between the two leaves an index entry that kombu's
        # sweep drops, never a copy that nothing would ever restore or remove.
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hdel(self.unacked, *tags)
            pipe.zrem(self.index, *tags)
            await pipe.execute()


def read_message(raw: bytes) -> Taken:
    """The request in a lookup task message (schemas.taskwire writes them: its body is [args, kwargs, embed])."""
    envelope = json.loads(raw)
    args, _, _ = json.loads(base64.b64decode(envelope["body"]))
    return Taken(envelope["headers"]["id"], envelope["properties"]["delivery_tag"], args[0])


async def look_up(raw: str, rt: Runtime) -> pipeline.Outcome:
    """One request's lookup: its reply published, or its miss handed to the LLM queue."""
    outcome = await pipeline.handle(raw, rt)
    if outcome.miss is not None:
        # A Redis that is down raises here, and the lookup is retried (REDIS_RETRY); it is idempotent.
        await rt.llm_queue.put(outcome.miss)
    return outcome


def serve_in_batch(raw: str, rt: Runtime, hand_off: Callable[[WritebackJob], None]) -> None:
    """Serve the task's own request and any others waiting; raises what the first failed request raised (the task
    is retried; the others that failed stay unacked and come back)."""
    client = rt.redis
    assert isinstance(client, AutoPipeline), "the runtime's Redis client is a worker.autopipe.AutoPipeline"
    taker = Taker(client, dict(app.conf.broker_transport_options or {}))
    taken, results = rt.run(_serve(raw, rt, taker))
    served: list[Taken] = []
    failed: BaseException | None = None
    for item, result in zip([None, *taken], results, strict=True):
        if isinstance(result, BaseException):
            failed = failed or result
            continue
        if result.writeback is not None:
            hand_off(result.writeback)
        if item is not None:
            served.append(item)
    rt.run(taker.ack(served))
    for item in served:  # Celery logs the task's own request; these are the others, in the shape of its line.
        log.info("%s[%s] succeeded in a batch of %d: None", LOOKUP_TASK, item.request_id, len(results))
    if failed is not None:
        raise failed


async def _serve(raw: str, rt: Runtime, taker: Taker) -> tuple[list[Taken], list[pipeline.Outcome | BaseException]]:
    assert isinstance(rt.redis, AutoPipeline)
    with rt.redis.batched():
        # Started first, so that its exact lookup goes out with the take, in one round trip.
        own = asyncio.ensure_future(look_up(raw, rt))
        try:
            taken = await taker.take(rt.settings.lookup_batch_max - 1)
        except Exception:
            await asyncio.gather(own, return_exceptions=True)
            raise
        others = [asyncio.ensure_future(look_up(t.payload, rt)) for t in taken]
        results = await asyncio.gather(own, *others, return_exceptions=True)
    return taken, results
