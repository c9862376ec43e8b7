"""Handing a miss on to the LLM queue, numbered and marked as a producer enqueues (schemas.enqueue).

With its queued marker moved to the LLM queue and the lookup node's taken mark cleared in the same script, the
request's producer can tell a miss waiting for an LLM node from one that was lost (producer.resend).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from schemas.cache import MissJob
from schemas.enqueue import ENQUEUE_SCRIPT, enqueue_call
from schemas.keys import COMPLETE_TASK, LLM_QUEUE, REQUEST_HEADER
from schemas.taskwire import task_message


class LLMQueue:
    def __init__(self, client: aioredis.Redis) -> None:
        self._enqueue = client.register_script(ENQUEUE_SCRIPT)

    async def put(self, miss: MissJob) -> None:
        rid = miss.request.request_id
        # The request id in a header: the LLM node that takes it marks it held (worker.broker).
        message = task_message(COMPLETE_TASK, LLM_QUEUE, [miss.model_dump_json()], headers={REQUEST_HEADER: rid})
        keys, args = enqueue_call(LLM_QUEUE, rid, message, miss.request.deadline, handed_on=True)
        await self._enqueue(keys=keys, args=args)
