"""The request path, in the order it runs. Read this file first.

    lookup queue:  intake -> deadline -> exact -> embed -> redis KNN -> pgvector KNN -> reply
                   (a lookup-only request's miss is replied at once; a store is worker.verbs.store)
    llm queue:     (every tier missed) already answered? -> LLM, one call per burst -> reply
    writeback:     store new answers in every tier; promote pgvector hits into Redis

Each stage returns early on a hit. A full miss is handed to the `llm` queue, so the CPU-bound lookup
processes never wait on the LLM. The reply is published before any write-back is scheduled, so
storing answers never delays the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from schemas.cache import CacheEntry, LLMAnswer, MissJob, Scope, WritebackJob, entry_id, question_hash
from schemas.messages import (
    CTX_ALLOW_EXPIRED,
    CTX_MAX_QUESTION_BYTES,
    ChatReply,
    ChatRequest,
    ErrorCode,
    LookupRequest,
    ReplyError,
    Tier,
    Usage,
)
from worker.errors import REDIS_DOWN, UNREACHABLE, DeadlineExceeded, NotCached, ReplyableError
from worker.llm import cacheable
from worker.progress import holding
from worker.refusal import NOT_SIMILAR_REASON, refusal
from worker.runtime import Runtime
from worker.tiers import Candidate

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What the task adapter schedules after a lookup: a write-back, or the LLM call for a miss."""

    writeback: WritebackJob | None = None
    miss: MissJob | None = None


@dataclass
class Stopwatch:
    start: float = field(default_factory=time.perf_counter)
    last: float = 0.0
    laps: dict[str, float] = field(default_factory=dict)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round((now - (self.last or self.start)) * 1000, 3)
        self.last = now

    def done(self) -> dict[str, float]:
        self.laps["total"] = round((time.perf_counter() - self.start) * 1000, 3)
        return self.laps


async def handle(raw: str, rt: Runtime, kind: type[ChatRequest] = ChatRequest) -> Outcome:
    """Look up one raw request: publish its reply on a hit or an error, or hand it on as a miss (a LookupRequest's
    miss is its reply: the caller asks its own LLM)."""
    # 1. intake: a message that does not validate gets an error reply if it names a reply_to.
    try:
        request = kind.model_validate_json(raw, context=_context(rt))
    except ValidationError as exc:
        await rt.replies.reject(raw, exc, lambda request_id, error: ChatReply(request_id=request_id, error=error))
        return Outcome()
    try:
        result = await lookup(request, rt)
    except ReplyableError as exc:
        result = ChatReply(request_id=request.request_id, error=exc.to_reply()), None
    except REDIS_DOWN:
        raise  # the task is retried: with Redis down no reply could be published anyway
    except Exception as exc:
        result = _internal(request, exc), None
    if isinstance(request, LookupRequest):
        result = _lookup_only(request, result)
    if isinstance(result, MissJob):
        return Outcome(miss=result)
    reply, job = result
    await rt.replies.answer(request, reply)
    return Outcome(writeback=job)


async def lookup(request: ChatRequest, rt: Runtime) -> tuple[ChatReply, WritebackJob | None] | MissJob:
    clock = Stopwatch()
    # Before any tier is read: a forget that finishes after this refuses the promotion below (worker.forget).
    as_of = time.time()
    clock.laps["queue_wait"] = round(max(0.0, time.time() - request.enqueued_at) * 1000, 3)
    # 2. deadline: nobody waits for an answer past it, so spend nothing on it.
    if request.expired():
        raise DeadlineExceeded("the request's deadline passed before a worker picked it up")
    scope = Scope.of(request, rt.settings.scope_includes_history)
    qhash = question_hash(request.question)
    eid = entry_id(scope, qhash)

    # `no-cache`: the caller wants the LLM's answer now, not a stored one (it is still stored, unless `no-store`).
    if request.cache.no_cache:
        return _miss(request, rt.embedder.embed_one(request.question), clock, rt)
    fresh = _fresh_enough(request, as_of)

    # 3. exact: the normalized question in this scope, before paying for an embedding.
    hit = fresh(await rt.redis_tier.lookup_exact(eid))
    clock.lap("exact")
    if hit is not None:
        return _served(request, hit, Tier.EXACT, clock), None

    # 4. embed the question (only the last user message).
    vector = rt.embedder.embed_one(request.question)
    clock.lap("embed")

    # 5. Redis KNN in this scope.
    hit = fresh(await rt.redis_tier.lookup_similar(scope.scope_id, vector))
    clock.lap("redis")
    if _accept(request.question, hit, rt.profile.threshold_redis, rt):
        assert hit is not None
        return _served(request, hit, Tier.REDIS, clock), None

    # 6. pgvector KNN; a hit is promoted into Redis so the next ask is served there.
    hit = fresh(await _pg_lookup(rt, scope.scope_id, vector))
    clock.lap("pgvector")
    if _accept(request.question, hit, rt.profile.threshold_pgvector, rt):
        assert hit is not None and hit.vector is not None
        answer = LLMAnswer(answer=hit.answer, meta=hit.meta)
        promote = WritebackJob(
            entry=_entry(scope, hit.entry_id, hit.question, question_hash(hit.question), answer, hit.vector),
            pgvector=False,
            as_of=as_of,
        )
        return _served(request, hit, Tier.PGVECTOR, clock), None if request.cache.no_store else promote

    # Every tier missed: the LLM queue takes it from here, with the vector already computed.
    return _miss(request, vector, clock, rt)


def _miss(request: ChatRequest, vector: npt.NDArray[np.float32], clock: Stopwatch, rt: Runtime) -> MissJob:
    if request.cache.only_if_cached:  # no-cache too: a contradiction, answered the same way
        raise NotCached("no cached answer, and the request asked for a cached one only (only-if-cached)")
    # With the worker's context: the deadline may pass during the lookup, and the LLM task answers that.
    miss = {"request": request, "vector": vector.astype(np.float32).tobytes(), "timings_ms": clock.laps}
    return MissJob.model_validate(miss, context=_context(rt))


def _lookup_only(
    request: LookupRequest, result: tuple[ChatReply, WritebackJob | None] | MissJob
) -> tuple[ChatReply, WritebackJob | None]:
    if isinstance(result, MissJob):
        laps = result.timings_ms
        timings = {**laps, "total": round(sum(v for k, v in laps.items() if k != "queue_wait"), 3)}
        return ChatReply(request_id=request.request_id, hit=False, timings_ms=timings), None
    reply, job = result
    return (reply.model_copy(update={"hit": True}) if reply.ok else reply), job


def _fresh_enough(request: ChatRequest, now: float) -> Callable[[Candidate | None], Candidate | None]:
    """`max-age`: an entry made longer ago than the caller accepts is not served (nor one of unknown age)."""
    max_age = request.cache.max_age_s
    return lambda hit: hit if hit is None or hit.meta.younger_than(max_age, now) else None


async def complete(raw: str, rt: Runtime, node: str) -> WritebackJob | None:
    """7. the LLM, only when every tier missed; publish its answer and store it in every tier."""
    job = MissJob.model_validate_json(raw, context=_context(rt))
    # A redelivered task whose request was already answered must not pay for the LLM again.
    if await rt.replies.answered(job.request.request_id):
        return None
    # Marked held by this node while it waits on the LLM: if the node dies, its producer sends it again.
    async with holding(rt.redis, job.request.request_id, f"llm {node}", rt.settings.taken_ttl_s):
        return await _complete(job, rt)


async def _complete(job: MissJob, rt: Runtime) -> WritebackJob | None:
    request, start, as_of = job.request, time.perf_counter(), time.time()
    scope = Scope.of(request, rt.settings.scope_includes_history)
    qhash = question_hash(request.question)
    eid = entry_id(scope, qhash)
    # A streaming caller sees the answer as the LLM writes it: each delta goes on its reply list at once.
    relay = rt.replies.relay(request) if request.stream else None

    async def ask_llm() -> str:
        return (await rt.llm.complete(request, relay)).model_dump_json()

    try:
        if request.expired():
            raise DeadlineExceeded("the deadline passed while it waited for the LLM queue")
        if request.cache.no_cache:  # a fresh answer of its own, not a concurrent caller's
            made, led = await ask_llm(), True
        else:
            made, led = await rt.coalescer.answer(eid, ask_llm, request.deadline, publish=not request.cache.no_store)
        answer = LLMAnswer.model_validate_json(made)
        if not led and not answer.meta.younger_than(request.cache.max_age_s, as_of):
            # Another caller's answer, older than this one accepts.
            answer, led = LLMAnswer.model_validate_json(await ask_llm()), True
    except ReplyableError as exc:
        await rt.replies.answer(request, ChatReply(request_id=request.request_id, error=exc.to_reply()))
        return None
    except REDIS_DOWN:
        raise
    except Exception as exc:
        await rt.replies.answer(request, _internal(request, exc))
        return None
    timings = {**job.timings_ms, "llm": round((time.perf_counter() - start) * 1000, 3)}
    timings["total"] = round(sum(v for k, v in timings.items() if k != "queue_wait"), 3)
    tier = Tier.LLM if led else Tier.COALESCED
    usage = answer.meta.usage if led else Usage()
    reply = ChatReply(
        request_id=request.request_id, answer=answer.answer, tier=tier, entry_id=eid, timings_ms=timings,
        tool_calls=answer.meta.tool_calls, finish_reason=answer.meta.finish_reason, usage=usage,
        saved=None if led else answer.meta.usage, refusal=answer.meta.refusal, audio=answer.meta.audio,
    )  # fmt: skip
    if answer.meta.refusal is not None or answer.meta.audio is not None:
        reply.answer = answer.answer or None  # content null, as the LLM sent it
    await rt.replies.answer(request, reply)
    if led and not cacheable(answer):  # cut short, a refusal, broken tool arguments: nobody gets it again
        await rt.coalescer.withdraw(eid)
        return None
    if not led or request.cache.no_store:  # the leader stores the entry, unless its caller said not to
        return None
    vector = np.frombuffer(job.vector, dtype=np.float32)
    return WritebackJob(entry=_entry(scope, eid, request.question, qhash, answer, vector), as_of=as_of)


def _internal(request: ChatRequest, exc: Exception) -> ChatReply:
    """The last resort: a request is never left without a reply, even when the worker has a bug."""
    log.exception("request %s failed unexpectedly", request.request_id)
    message = f"internal error; the worker log has the details under request id {request.request_id}"
    error = ReplyError(code=ErrorCode.INTERNAL, message=message, retryable=True)
    return ChatReply(request_id=request.request_id, error=error)


def _context(rt: Runtime) -> dict[str, object]:
    # Workers accept expired requests so that they can answer them with a `deadline` error.
    return {CTX_MAX_QUESTION_BYTES: rt.settings.max_question_bytes, CTX_ALLOW_EXPIRED: True}


def _accept(question: str, hit: Candidate | None, threshold: float, rt: Runtime) -> bool:
    """A neighbour is served only when the refusal rule (worker.refusal) finds nothing against it."""
    if hit is None:
        return False
    reason = refusal(question, hit.question, hit.similarity, rt.settings.guards, rt.profile.verifier, threshold)
    if reason is not None and reason != NOT_SIMILAR_REASON:
        log.info("%s refused entry %s (similarity %.3f)", reason, hit.entry_id, hit.similarity)
    return reason is None


async def _pg_lookup(rt: Runtime, scope_id: str, vector: npt.NDArray[np.float32]) -> Candidate | None:
    # The durable tier is an optimization on the reply path: if Postgres is down, fall through to the LLM.
    try:
        found = await rt.pg_tier.lookup_similar(scope_id, vector)
    except UNREACHABLE as exc:
        log.warning("pgvector lookup skipped, Postgres unreachable: %r", exc)
        await rt.report_pg_down(exc)
        return None
    await rt.report_pg_up()
    return found


def _served(request: ChatRequest, hit: Candidate, tier: Tier, clock: Stopwatch) -> ChatReply:
    return ChatReply(
        request_id=request.request_id,
        answer=hit.answer,
        tier=tier,
        similarity=round(hit.similarity, 6),
        entry_id=hit.entry_id,
        timings_ms=clock.done(),
        tool_calls=hit.meta.tool_calls,
        finish_reason=hit.meta.finish_reason,
        usage=Usage(),
        saved=hit.meta.usage,
        message_extra=hit.meta.message_extra,
    )


def _entry(
    scope: Scope, eid: str, question: str, qhash: str, answer: LLMAnswer, vector: npt.NDArray[np.float32]
) -> CacheEntry:
    return CacheEntry(
        entry_id=eid,
        scope_id=scope.scope_id,
        tenant=scope.tenant,
        model=scope.model,
        system_hash=scope.system_hash,
        context_hash=scope.context_hash,
        question=question,
        question_hash=qhash,
        answer=answer.answer,
        vector=vector.astype(np.float32).tobytes(),
        meta=answer.meta,
    )
