"""Publishing the one reply a request gets, and answering a message that does not validate."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError

from schemas.keys import REPLIED_PREFIX, REPLY_PREFIX, TAKEN_PREFIX, USAGE_TTL_S, usage_key
from schemas.messages import (
    ChatDelta,
    ChatReply,
    ChatRequest,
    ErrorCode,
    ForgetReply,
    ReplyError,
    StoreRequest,
    Tier,
)
from worker.lua import script

log = logging.getLogger(__name__)

Reply = ChatReply | ForgetReply
# Takes one delta of a streamed answer (worker.llm).
OnDelta = Callable[[dict[str, Any]], Awaitable[None]]


def usage_counts(request: ChatRequest, reply: ChatReply) -> dict[str, int]:
    """What one reply adds to its tenant's usage hash: the request, its tier (or error), and the tokens the LLM
    spent on it or that the cache saved, per model (a price table prices them by model: `dejavu report`). A store
    counts as a store, not a request; a lookup-only hit also counts as a lookup hit, and its miss as tier `miss`."""
    if isinstance(request, StoreRequest):
        return {"stores": 1}
    # A lookup-only request's miss is not an error: its caller asks its own LLM.
    outcome = reply.tier.value if reply.tier else "miss" if reply.hit is False else "error"
    counts = {"requests": 1, f"tier:{outcome}": 1}
    if reply.hit:
        counts["lookup_hits"] = 1
    if reply.tier == Tier.LLM and reply.usage is not None:
        counts |= {f"spent_prompt:{request.model}": reply.usage.prompt_tokens,
                   f"spent_completion:{request.model}": reply.usage.completion_tokens}  # fmt: skip
    elif reply.saved is not None:
        counts |= {f"saved_prompt:{request.model}": reply.saved.prompt_tokens,
                   f"saved_completion:{request.model}": reply.saved.completion_tokens}  # fmt: skip
    return counts


def _day() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


class ReplyPublisher:
    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._publish = client.register_script(script("publish_reply"))

    async def answered(self, request_id: str) -> bool:
        return bool(await self.client.exists(REPLIED_PREFIX + request_id))

    async def publish(self, reply_to: str, reply: Reply) -> bool:
        """Push the reply unless this request was already answered; False when it was."""
        sent = await self._publish(
            keys=[REPLIED_PREFIX + reply.request_id, reply_to],
            args=[self.ttl_s, reply.model_dump_json(exclude_none=True)],
        )
        return bool(sent)

    async def answer(self, request: ChatRequest, reply: ChatReply) -> bool:
        """Publish a chat request's one reply, in the version the request was sent in, and count it in its
        tenant's usage in the same script: a task run twice counts once."""
        counts = usage_counts(request, reply)
        sent = await self._publish(
            keys=[REPLIED_PREFIX + reply.request_id, request.reply_to, usage_key(request.tenant, _day()),
                  TAKEN_PREFIX + reply.request_id],
            args=[self.ttl_s, reply.for_version(request.version).model_dump_json(exclude_none=True), USAGE_TTL_S,
                  *(x for pair in counts.items() for x in pair)],
        )  # fmt: skip
        return bool(sent)

    def relay(self, request: ChatRequest) -> OnDelta:
        """Where a streamed answer's deltas go: pushed on the request's reply list in order, ahead of its reply.
        Not once-only like the reply: a redelivered task streams again, and the caller sees the seq restart."""
        seq = itertools.count()

        async def push(delta: dict[str, Any]) -> None:
            event = ChatDelta(request_id=request.request_id, seq=next(seq), delta=delta)
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.rpush(request.reply_to, event.model_dump_json())
                pipe.expire(request.reply_to, self.ttl_s)
                await pipe.execute()

        return push

    async def reject(self, raw: str, exc: ValidationError, make: Callable[[str, ReplyError], Reply]) -> None:
        """Answer a message that failed validation with `invalid_request`, if it names a usable reply_to."""
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors())
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        fields = data if isinstance(data, dict) else {}
        reply_to, request_id = fields.get("reply_to"), fields.get("request_id")
        # Only a well-formed reply key can be answered; anything else could write over other keys.
        if not (isinstance(reply_to, str) and reply_to.startswith(REPLY_PREFIX) and isinstance(request_id, str)):
            log.warning("dropped a message with no usable reply_to: %s", problems[:500])
            return
        error = ReplyError(code=ErrorCode.INVALID_REQUEST, message=f"invalid request: {problems}")
        await self.publish(reply_to, make(request_id[:128], error))
