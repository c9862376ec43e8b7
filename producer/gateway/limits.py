"""Per-tenant limits, per API key (producer.settings.TenantLimits): requests in flight, LLM answers and tokens
per minute, and whether `no-cache` is honoured. Counted in Redis, so every gateway in front of the same Redis
enforces one budget per tenant, and a gateway that restarts forgets nothing.

Cache hits count against none of the per-minute limits: a request counts when its answer came from the LLM.
A tenant over an LLM limit is still served what the cache holds: its requests go out `only_if_cached`, and a miss
is answered 429 instead of asking the LLM.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from producer.base import REPLY_GRACE_S
from producer.gateway.errors import GatewayError
from producer.gateway.state import CLIENT, METRICS
from producer.lua import TENANT_ADMIT
from producer.settings import TenantKey
from schemas.messages import ChatReply, ChatRequest, ErrorCode, Tier

PREFIX = "dejavu:limits:"
# A minute's counters outlive it a little: the admission of the next minute never reads them.
WINDOW_TTL_S = 120
# What a caller over its in-flight limit waits: one answer of its own frees a place.
IN_FLIGHT_RETRY_S = 1
OVER = {
    1: ("requests", "this API key has too many requests in flight"),
    2: ("requests", "this API key's LLM calls per minute are used up (cached answers are still served)"),
    3: ("tokens", "this API key's LLM tokens per minute are used up (cached answers are still served)"),
}


def _keys(tenant: str, now: float) -> list[str]:
    minute = int(now // 60)
    return [f"{PREFIX}{tenant}:inflight", f"{PREFIX}{tenant}:calls:{minute}", f"{PREFIX}{tenant}:tokens:{minute}"]


@dataclass
class Admission:
    """A request let in: `chat` is what to send; `over`, the 429 its miss gets when an LLM limit is used up."""

    chat: ChatRequest
    over: GatewayError | None = None
    # Whether its LLM answers count against per-minute limits (a key without them writes no counters).
    metered: bool = False

    def check(self, reply: ChatReply) -> None:
        if self.over is not None and reply.error is not None and reply.error.code == ErrorCode.NOT_CACHED:
            raise self.over


@asynccontextmanager
async def admitted(request: web.Request, key: TenantKey, chat: ChatRequest) -> AsyncIterator[Admission]:
    """Hold a place for `chat` under its key's limits while it is answered: 429 with too many in flight, 403 for a
    `no-cache` the key may not send; over an LLM limit, the request is sent for a cached answer only."""
    limits = key.limits
    if chat.cache.no_cache and not limits.allow_no_cache:
        message = "this API key may not send Cache-Control: no-cache; send the request without it"
        raise GatewayError(403, "no_cache_not_allowed", message)
    if limits.max_in_flight is None and limits.llm_calls_per_minute is None and limits.tokens_per_minute is None:
        yield Admission(chat)
        return
    client, now = request.app[CLIENT], time.time()
    keys = _keys(key.tenant, now)
    over = int(await client.redis.eval(
        TENANT_ADMIT, 3, *keys, now, chat.request_id, chat.deadline + REPLY_GRACE_S, limits.max_in_flight or 0,
        limits.llm_calls_per_minute or 0, limits.tokens_per_minute or 0,
    ))  # fmt: skip
    if over == 1:
        raise _limited(over, IN_FLIGHT_RETRY_S)
    metered = limits.llm_calls_per_minute is not None or limits.tokens_per_minute is not None
    admission = Admission(chat, metered=metered)
    if over:
        cache_only = chat.cache.model_copy(update={"only_if_cached": True})
        limited = _limited(over, math.ceil(60 - now % 60))
        admission = Admission(chat.model_copy(update={"cache": cache_only}), limited, metered)
    try:
        yield admission
    finally:
        if limits.max_in_flight is not None:
            await client.redis.zrem(keys[0], chat.request_id)


def _limited(over: int, wait: int) -> GatewayError:
    kind, message = OVER[over]
    text = f"rate limit exceeded: {message}; retry after {max(1, wait)}s"
    error = {"message": text, "type": kind, "param": None, "code": "rate_limit_exceeded"}
    return GatewayError(429, "rate_limit_exceeded", text, headers={"Retry-After": str(max(1, wait))}, error=error)


async def served(request: web.Request, admission: Admission, reply: ChatReply) -> None:
    """Count an answered request: in the metrics, and (an LLM answer) against its tenant's per-minute limits."""
    request.app[METRICS].answered(reply, admission.chat.tenant)
    if reply.tier != Tier.LLM or not admission.metered:
        return
    _, calls, tokens = _keys(admission.chat.tenant, time.time())
    async with request.app[CLIENT].redis.pipeline(transaction=False) as pipe:
        pipe.incr(calls)
        pipe.expire(calls, WINDOW_TTL_S)
        pipe.incrby(tokens, reply.usage.total_tokens if reply.usage is not None else 0)
        pipe.expire(tokens, WINDOW_TTL_S)
        await pipe.execute()
