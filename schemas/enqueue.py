"""The queue's edge that both sides write: a task message enqueued, numbered and marked (schemas/lua/enqueue.lua).

Producers enqueue lookups with it, and lookup nodes hand misses on to the LLM queue with it, so that a producer can
tell from Redis alone whether its request waits on a queue, was taken off one, or was lost (producer.resend).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from schemas.keys import QUEUED_PREFIX, TAKEN_PREFIX, enqueued_counter

# LPUSH a task message unless the queue is at its limit; answers {new depth, place} or {minus the depth, 0}.
ENQUEUE_SCRIPT = (Path(__file__).parent / "lua" / "enqueue.lua").read_text(encoding="utf-8")


def marker_ttl_s(deadline: float) -> int:
    """How long a queued marker is kept: until the request's deadline (nobody waits for it after that)."""
    return max(1, math.ceil(deadline - time.time()) + 1)


def enqueue_call(
    queue: str,
    request_id: str,
    message: bytes,
    deadline: float,
    limit: int = 0,
    max_bytes: int = 0,
    handed_on: bool = False,
) -> tuple[list[str], list[Any]]:
    """The script's keys and arguments: refused past `limit` messages or `max_bytes` (0: no limit); `handed_on`: a
    node hands the request on, and its taken mark goes."""
    keys = [queue, enqueued_counter(queue), QUEUED_PREFIX + request_id]
    if handed_on:
        keys.append(TAKEN_PREFIX + request_id)
    return keys, [limit, message, marker_ttl_s(deadline), max_bytes]


def parse_queued(marker: bytes) -> tuple[str, int]:
    """A queued marker's queue and place in that queue's count."""
    queue, _, place = marker.decode().rpartition(":")
    return queue, int(place)
