"""Publishing the one reply a request gets, and answering a message that does not validate."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from pydantic import ValidationError

from schemas.keys import REPLIED_PREFIX, REPLY_PREFIX
from schemas.messages import ChatReply, ErrorCode, ForgetReply, ReplyError
from worker.lua import script

log = logging.getLogger(__name__)

Reply = ChatReply | ForgetReply


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
