"""Publishing the one reply a request gets."""

from __future__ import annotations

import redis.asyncio as aioredis

from schemas.keys import REPLIED_PREFIX
from schemas.messages import ChatReply
from worker.lua import script


class ReplyPublisher:
    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._publish = client.register_script(script("publish_reply"))

    async def answered(self, request_id: str) -> bool:
        return bool(await self.client.exists(REPLIED_PREFIX + request_id))

    async def publish(self, reply_to: str, reply: ChatReply) -> bool:
        """Push the reply unless this request was already answered; False when it was."""
        sent = await self._publish(
            keys=[REPLIED_PREFIX + reply.request_id, reply_to],
            args=[self.ttl_s, reply.model_dump_json(exclude_none=True)],
        )
        return bool(sent)
