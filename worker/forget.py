"""Removal, worker side: task `dejavu.forget` on the writeback queue (`dejavu forget`, feedback).

One entry, in order:
    read its Redis hash (tenant, answer) -> one Postgres transaction: take the entry's write lock, delete its
    row, blocklist its answers (feedback), put up its tombstone -> commit -> delete the Redis hash (the exact
    and the KNN tier) and any coalesced answer, copy the blocklist into Redis -> stamp the tombstone.
A tenant: the same with the tenant's write lock and tombstone, one DELETE by tenant, and the Redis hashes found
through the vector index's tenant tag.

Why a tombstone: a write-back queued before the forget ran (an LLM answer, a pgvector hit being promoted into
Redis) carries the entry and would store it again afterwards. Every write-back carries `as_of`, a time before
its content was read, and the store script refuses one not newer than the tombstone (worker/lua/store_entry.lua).
While the forget runs the tombstone refuses every write-back; then it holds the finish time plus the allowed
clock skew, so an answer read after the forget is cached again. The Postgres step of a write-back holds shared
write locks and reads the tombstone under them (sql/queries/lock_writes.sql): it either commits before the
forget's DELETE, which then removes its row, or waits for the forget and sees the tombstone.

Why a blocklist: feedback says an answer is wrong, and a deterministic LLM asked again gives the same answer,
which a forget alone would let the cache store again. The pair (entry id, answer hash) goes to Postgres (the
durable copy) and Redis (the store script's); neither tier stores it again. A different answer may be cached.

Safe to run twice: a second run finds nothing to delete, blocklist inserts are idempotent, and the reply is
published once per request id.

Counted: feedback that removed an entry adds 1 to field FEEDBACK_FIELD of the owning tenant's usage hash for the
day (schemas.keys.usage_key), where the workers count each hit they serve with its reply (`tier:exact`,
`tier:redis`, `tier:pgvector`): `dejavu status` shows the two side by side as a wrong-hit rate. Counted after the
reply is published, and only by the run that published it, so a task run twice counts once; a second feedback
on the same entry finds nothing and is not counted.
"""

from __future__ import annotations

import logging
import time

from pydantic import ValidationError

from schemas.cache import answer_hash
from schemas.keys import FORGOTTEN_PREFIX, FORGOTTEN_TENANT_PREFIX, LANGCHAIN_TENANTS_PREFIX, USAGE_TTL_S, usage_key
from schemas.messages import ErrorCode, ForgetReply, ForgetRequest, Removed, ReplyError
from worker.errors import UNREACHABLE, TransientError
from worker.runtime import Runtime

log = logging.getLogger(__name__)

# A tombstone no write-back's as_of reaches: refuses them all while the forget runs.
IN_PROGRESS = 1e18
# Feedback on a tenant's entries, in its daily usage hash beside the hits served.
FEEDBACK_FIELD = "feedback"


async def handle(raw: str, rt: Runtime) -> None:
    try:
        request = ForgetRequest.model_validate_json(raw)
    except ValidationError as exc:
        await rt.replies.reject(raw, exc, lambda request_id, error: ForgetReply(request_id=request_id, error=error))
        return
    reported: str | None = None  # the tenant whose entry feedback removed
    try:
        if request.entry_id is not None:
            reply, reported = await forget_entry(request, request.entry_id, rt)
        else:
            assert request.tenant is not None  # ForgetRequest names an entry or a tenant
            reply = await forget_tenant(request, request.tenant, rt)
    except UNREACHABLE as exc:
        raise TransientError(f"forget {request.request_id} will be retried: {exc!r}") from exc
    except Exception:
        log.exception("forget %s failed unexpectedly", request.request_id)
        message = f"internal error; the worker log has the details under request id {request.request_id}"
        error = ReplyError(code=ErrorCode.INTERNAL, message=message, retryable=True)
        reply = ForgetReply(request_id=request.request_id, error=error)
    if await rt.replies.publish(request.reply_to, reply) and reported is not None:
        await _count_feedback(reported, rt)


async def forget_entry(request: ForgetRequest, eid: str, rt: Runtime) -> tuple[ForgetReply, str | None]:
    """Remove (and with feedback, block) one entry; also the tenant whose entry feedback removed, if any."""
    only = request.tenant
    cached = await rt.redis_tier.owner(eid)
    # (tenant, answer) of what is stored under the id, within the tenant restriction if there is one.
    found = [cached] if cached is not None and only in (None, cached[0]) else []
    hashes: list[str] = []
    tombstone = FORGOTTEN_PREFIX + eid
    async with rt.pg_tier.transaction() as pg:
        rows = await pg.forget([eid], only)
        found += rows
        # An operator (no restriction) may remove any entry; a tenant only one found in its own entries.
        owned = only is None or bool(found)
        # '' blocks the pair for whichever tenant owns the id: an operator's feedback on an entry not stored yet.
        tenant = only or (found[0][0] if found else "")
        if request.bad:
            answers = {answer for _, answer in found} | ({request.answer} if request.answer is not None else set())
            hashes = sorted(answer_hash(answer) for answer in answers)
            await pg.block(eid, hashes, tenant, request.reason)
        if owned:
            await rt.redis_tier.tombstone(tombstone, IN_PROGRESS, rt.settings.forget_tombstone_s)
    removed_redis = len(await rt.redis_tier.forget([eid])) if owned else 0
    await rt.redis_tier.block(eid, hashes, tenant)
    if owned:
        await _finish(tombstone, rt)
    log.info("forgot entry %s: redis %d, pgvector %d, blocked %d%s", eid, removed_redis, len(rows), len(hashes),
             f" (reason: {request.reason})" if request.reason else "")  # fmt: skip
    reply = ForgetReply(
        request_id=request.request_id, removed=Removed(redis=removed_redis, pgvector=len(rows)), blocked=len(hashes)
    )
    return reply, tenant if request.bad and found else None


async def forget_tenant(request: ForgetRequest, tenant: str, rt: Runtime) -> ForgetReply:
    # A LangChain cache keeps each model's entries under a tenant of its own below the cache's, listed in a set
    # (producer.langchain): forgetting the tenant forgets those too.
    listed = await rt.redis.smembers(LANGCHAIN_TENANTS_PREFIX + tenant)
    below = sorted(t.decode() if isinstance(t, bytes) else t for t in listed)
    removed = Removed(redis=0, pgvector=0)
    for name in [tenant, *below]:
        tombstone = FORGOTTEN_TENANT_PREFIX + name
        async with rt.pg_tier.transaction() as pg:
            removed_pg = await pg.forget_tenant(name)
            await rt.redis_tier.tombstone(tombstone, IN_PROGRESS, rt.settings.forget_tombstone_s)
        removed_redis = await rt.redis_tier.forget_tenant(name)
        await _finish(tombstone, rt)
        log.info("forgot tenant %s: redis %d, pgvector %d", name, removed_redis, removed_pg)
        removed = Removed(redis=removed.redis + removed_redis, pgvector=removed.pgvector + removed_pg)
    return ForgetReply(request_id=request.request_id, removed=removed)


async def _count_feedback(tenant: str, rt: Runtime) -> None:
    key = usage_key(tenant, time.strftime("%Y-%m-%d", time.gmtime()))
    async with rt.redis.pipeline(transaction=False) as pipe:
        pipe.hincrby(key, FEEDBACK_FIELD, 1)
        pipe.expire(key, USAGE_TTL_S)
        await pipe.execute()


async def _finish(tombstone: str, rt: Runtime) -> None:
    # From now on only content read after the forget (allowing for clock skew between workers) is stored again.
    until = time.time() + rt.settings.clock_skew_s
    await rt.redis_tier.tombstone(tombstone, until, rt.settings.forget_tombstone_s)
