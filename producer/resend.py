"""Re-sending what the queue lost: the producer's half of "no request is lost" (docs/operations.md).

A request can vanish where no worker can notice: Redis killed within a second of the enqueue (`appendfsync
everysec` had not written it yet), a node killed between kombu's BRPOP and its unacked copy, or a node killed
while it held the request (kombu hands it on only after the visibility timeout). The producer is the one party
that knows the request is still unanswered, so it looks after each one it sent:

- not answered `after_s` after it was sent: one pipelined look at what Redis knows of it (the queue it waits on
  and its place in that queue's count, written with each enqueue and with a miss's hand-off to the LLM queue,
  schemas.enqueue; the mark of the node that holds it, worker.broker; the reply's once-only mark);
- answered, held by a live node (looked at again right after the mark would lapse), or still waiting on a queue
  (its number is above the count taken off it): nothing to do;
- its marker gone with a Redis restart, or taken off a queue with no node holding it, or answered two looks in a
  row without the reply reaching its reader (a pop whose answer a dropped connection lost: its once-only mark is
  cleared first): the same message is sent again, to the end of the lookup queue that the workers take from next.
  The workers answer a request id once (worker.reply), so a copy that was not lost after all costs a lookup,
  never a second reply, LLM call or write-back.

Each re-send doubles the wait before the next look, so a pool that is down is not flooded with copies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from schemas.enqueue import marker_ttl_s, parse_queued
from schemas.keys import (
    LLM_QUEUE,
    LOOKUP_QUEUE,
    QUEUED_PREFIX,
    REPLIED_PREFIX,
    TAKEN_PREFIX,
    enqueued_counter,
    reply_key,
)

log = logging.getLogger(__name__)

# What a look found; the last one is kept per request ("where was it last seen").
QUEUED, TAKEN, REPLIED = "queued", "taken", "answered, not yet read"
MISSING = "missing from Redis"
DROPPED = "taken off the queue, held by no node"
REPLY_LOST = "answered, but the reply never reached its reader"
# The queues a request waits on: lookup, then (a miss) the LLM's.
QUEUES = (LOOKUP_QUEUE, LLM_QUEUE)
# How many of the requests given up at their deadline keep where they were last seen (`seen`).
GAVE_UP_KEPT = 10_000
# How often the watcher wakes to see whether any request is due for a look (a look costs Redis nothing before).
TICK_S = 0.25


@dataclass
class Watched:
    message: bytes
    reply_to: str
    deadline: float
    look_at: float
    wait_s: float
    seen: str = QUEUED


class Resender:
    def __init__(self, redis: aioredis.Redis, after_s: float) -> None:
        self.redis = redis
        self.after_s = after_s
        self._watched: dict[str, Watched] = {}
        self._loop: asyncio.Task[None] | None = None
        # Re-sends by what the look found, and where the last requests given up at their deadline were last seen:
        # what `make chaos` reports of a lost request.
        self.resent: Counter[str] = Counter()
        self.gave_up: OrderedDict[str, str] = OrderedDict()

    def watch(self, request_id: str, message: bytes, reply_to: str, deadline: float) -> None:
        """Look after a request just enqueued (its message, as sent, and where its reply goes)."""
        if self.after_s <= 0:
            return
        now = time.time()
        self._watched[request_id] = Watched(message, reply_to, deadline, now + self.after_s, self.after_s)
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._run(), name="dejavu re-sender")

    def done(self, request_id: str) -> None:
        """The reply was read, or nobody waits for it any more: stop looking."""
        self._watched.pop(request_id, None)

    def seen(self, request_id: str) -> str | None:
        """Where the last look found a request still watched, or given up at its deadline not long ago."""
        watched = self._watched.get(request_id)
        return watched.seen if watched is not None else self.gave_up.get(request_id)

    async def _run(self) -> None:
        while self._watched:
            await asyncio.sleep(TICK_S)
            now = time.time()
            for rid in [rid for rid, w in self._watched.items() if w.deadline <= now]:
                self.gave_up[rid] = self._watched.pop(rid).seen
                while len(self.gave_up) > GAVE_UP_KEPT:
                    self.gave_up.popitem(last=False)
            due = [rid for rid, w in self._watched.items() if w.look_at <= now]
            if not due:
                continue
            try:
                await self._look(due)
            except RedisError as exc:  # Redis restarting: the next look finds out what it lost
                log.warning("re-sender: could not look at %d request(s): %s", len(due), exc)

    async def _look(self, due: list[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in QUEUES:
                pipe.get(enqueued_counter(queue))
                pipe.llen(queue)
            for rid in due:
                pipe.get(QUEUED_PREFIX + rid)
                pipe.get(TAKEN_PREFIX + rid)
                pipe.pttl(TAKEN_PREFIX + rid)
                pipe.exists(REPLIED_PREFIX + rid)
                pipe.llen(self._watched[rid].reply_to)
            found = await pipe.execute()
        # On each queue, every request numbered up to this has left it (a queue is a FIFO; restored or re-sent
        # messages only lengthen it, which errs towards "still queued").
        taken_off = {q: int(found[2 * i] or 0) - int(found[2 * i + 1]) for i, q in enumerate(QUEUES)}
        found = found[2 * len(QUEUES) :]
        now, lost = time.time(), []
        for i, rid in enumerate(due):
            watched = self._watched.get(rid)
            if watched is None:
                continue
            queued, taken, taken_ms, replied, waiting = found[5 * i : 5 * i + 5]
            if replied and waiting and watched.reply_to == reply_key(rid):
                self.done(rid)  # the reply waits on its own list for whoever reads it
            elif replied and watched.seen == REPLIED:
                # Answered a look ago and still not read: taken off its list (a pop whose answer a dropped
                # connection lost) and never delivered. The once-only mark goes, so the copy is answered again.
                lost.append((rid, REPLY_LOST))
            elif replied:
                watched.seen = REPLIED
                watched.look_at = now + self.after_s
            elif taken:
                watched.seen = f"{TAKEN} by {taken.decode(errors='replace')}"
                # Next, right after the mark would lapse: a node that died is noticed at once.
                watched.look_at = now + max(0, int(taken_ms)) / 1000 + TICK_S
            elif not queued:
                watched.seen = MISSING
                lost.append((rid, MISSING))
            else:
                queue, place = parse_queued(queued)
                if place > taken_off.get(queue, place):
                    watched.seen = f"{QUEUED} on {queue}"
                    watched.look_at = now + self.after_s
                else:
                    watched.seen = f"{DROPPED} ({queue})"
                    lost.append((rid, DROPPED))
        if lost:
            await self._resend(lost, now)

    async def _resend(self, lost: list[tuple[str, str]], now: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid, why in lost:
                watched = self._watched[rid]
                # At the end BRPOP takes from: it waited its turn once already.
                if why == REPLY_LOST:
                    pipe.delete(REPLIED_PREFIX + rid)
                pipe.rpush(LOOKUP_QUEUE, watched.message)
                pipe.set(QUEUED_PREFIX + rid, f"{LOOKUP_QUEUE}:0", ex=marker_ttl_s(watched.deadline))
            await pipe.execute()
        for rid, why in lost:
            watched = self._watched[rid]
            log.warning("request %s re-sent: %s", rid, watched.seen)
            self.resent[why] += 1
            watched.wait_s *= 2
            watched.look_at = now + watched.wait_s

    async def aclose(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
