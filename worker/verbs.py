"""The store verb, worker side: an answer the caller got from its own model, stored like an LLM answer.

    lookup queue (task dejavu.store):  intake -> deadline -> embed -> queue the write-back -> reply with the entry id

A store redelivered after a crash queues its write-back again, which stores nothing new (the first write wins).

The entry is the one an LLM answer to the same request would make (same scope, entry id and meta), and goes through
the same write-back task, so idempotence, tombstones, the blocklist and forget apply unchanged. The reply is
published once the write-back is queued, not when it is written. (The lookup-only verb is a flag on the lookup path:
worker.pipeline.handle.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import ValidationError

from schemas.cache import AnswerMeta, LLMAnswer, Scope, WritebackJob, entry_id, question_hash
from schemas.messages import ChatReply, StoreRequest
from worker.errors import REDIS_DOWN, DeadlineExceeded, ReplyableError
from worker.pipeline import Stopwatch, _context, _entry, _internal
from worker.runtime import Runtime

# Hands a write-back job to the writeback queue (worker.tasks.write_back); returns once it is queued.
Enqueue = Callable[[WritebackJob], None]


async def store(raw: str, rt: Runtime, enqueue: Enqueue) -> None:
    """Validate a store request, queue its write-back, and publish its one reply (or a typed error)."""
    try:
        request = StoreRequest.model_validate_json(raw, context=_context(rt))
    except ValidationError as exc:
        await rt.replies.reject(raw, exc, lambda request_id, error: ChatReply(request_id=request_id, error=error))
        return
    try:
        reply = await _store(request, rt, enqueue)
    except ReplyableError as exc:
        reply = ChatReply(request_id=request.request_id, error=exc.to_reply())
    except REDIS_DOWN:
        raise  # retried, as a lookup is
    except Exception as exc:
        reply = _internal(request, exc)
    await rt.replies.answer(request, reply)


async def _store(request: StoreRequest, rt: Runtime, enqueue: Enqueue) -> ChatReply:
    clock = Stopwatch()
    # Before the answer is read: a forget that finishes after this refuses the write-back (worker.forget).
    as_of = time.time()
    if request.expired():
        raise DeadlineExceeded("the store's deadline passed before a worker picked it up")
    scope = Scope.of(request, rt.settings.scope_includes_history)
    qhash = question_hash(request.question)
    eid = entry_id(scope, qhash)
    vector = rt.embedder.embed_one(request.question)
    clock.lap("embed")
    given = request.answer
    meta = AnswerMeta(
        tool_calls=list(given.message.tool_calls) if given.message.tool_calls else None,
        finish_reason=given.finish_reason, usage=given.usage, created_at=as_of,
        message_extra=given.message_extra,
    )  # fmt: skip
    entry = _entry(scope, eid, request.question, qhash, LLMAnswer(answer=given.text, meta=meta), vector)
    enqueue(WritebackJob(entry=entry, as_of=as_of))
    clock.lap("writeback")
    return ChatReply(request_id=request.request_id, entry_id=eid, timings_ms=clock.done())
