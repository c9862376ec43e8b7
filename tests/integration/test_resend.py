"""No request lost at the queue's edges: a request lost in each window is sent again by its producer
(producer.resend) and answered once, and a copy that was not lost after all costs no second reply or LLM call.

Each window is set up as the fault leaves it in Redis (the message gone, its marks as they would be), since a
real fault cannot be timed to land inside a window of microseconds; the workers, Redis and the LLM are real.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest
import redis

from producer.aclient import AsyncClient
from producer.base import lookup_message
from producer.resend import DROPPED, MISSING, REPLY_LOST
from producer.settings import ProducerSettings
from schemas.keys import LLM_QUEUE, QUEUED_PREFIX, REPLIED_PREFIX, TAKEN_PREFIX, enqueued_counter, reply_key
from schemas.messages import ChatReply, ChatRequest, Tier
from tests.conftest import llm_calls, stack_logs, wait_until
from worker.local.servers import LocalStack

# Short, so each test takes seconds: the producer looks at a request this long after sending it.
RESEND_AFTER_S = 0.5


def with_client(body: Callable[[AsyncClient], Awaitable[ChatReply]], after_s: float = RESEND_AFTER_S) -> ChatReply:
    async def run() -> ChatReply:
        async with AsyncClient(ProducerSettings(resend_after_s=after_s)) as aclient:
            return await body(aclient)

    return asyncio.run(run())


def lost_in_window(rdb: redis.Redis, request: ChatRequest, queued_on: str | None, taken_by: str | None = None) -> None:
    """What Redis holds of a request lost after its enqueue: its message is on no queue; with `queued_on`, its
    numbered marker on that queue survived (it was taken off the queue); with `taken_by`, a node's mark that lapses
    in 1 s."""
    if queued_on is not None:
        place = int(rdb.incr(enqueued_counter(queued_on)))
        rdb.set(QUEUED_PREFIX + request.request_id, f"{queued_on}:{place}", ex=60)
    if taken_by is not None:
        rdb.set(TAKEN_PREFIX + request.request_id, taken_by, ex=1)


def ask_lost(
    rdb: redis.Redis, question: str, tenant: str, queued_on: str | None, taken_by: str | None = None
) -> ChatReply:
    async def body(aclient: AsyncClient) -> ChatReply:
        request = aclient.request(question, tenant=tenant, timeout=20)
        lost_in_window(rdb, request, queued_on, taken_by)
        aclient.resender.watch(request.request_id, lookup_message(request), request.reply_to, request.deadline)
        reply = await aclient.get_reply(request.request_id, timeout=20)
        assert dict(aclient.resender.resent) == {DROPPED if queued_on else MISSING: 1}, aclient.resender.resent
        return reply

    return with_client(body)


# Each window, as the fault leaves the request in Redis: (queue its marker names, the mark of a node that holds it).
WINDOWS = {
    # Redis killed within a second of the enqueue: the message and its marker were never written.
    "enqueue, then a Redis crash": (None, None),
    # A node took the message (BRPOP) and died before it wrote the unacked copy and its mark.
    "BRPOP, then the node's death": ("lookup", None),
    # A node marked the request held and was killed: its unacked copy waits for the visibility timeout.
    "held by a node that died": ("lookup", "lookup dead@nowhere"),
    # A miss handed to the LLM queue, taken off it by an LLM node that died before its unacked copy.
    "the LLM queue, then the node's death": (LLM_QUEUE, None),
}


@pytest.mark.parametrize("window", WINDOWS)
def test_a_request_lost_in_a_window_is_sent_again_and_answered_once(
    rdb: redis.Redis, stack: LocalStack, tenant: str, window: str
) -> None:
    # Given a request lost in the window ...
    queued_on, taken_by = WINDOWS[window]
    question = f"Is a request lost at {window} answered ({tenant})?"
    reply = ask_lost(rdb, question, tenant, queued_on, taken_by)
    # ... its producer sent it again (once its mark lapsed, if a node held it), and it was answered by one LLM call.
    assert reply.ok and reply.tier == Tier.LLM and question in (reply.answer or "")
    assert llm_calls(stack, question) == 1


def test_a_miss_waiting_for_an_llm_node_is_not_sent_again(rdb: redis.Redis, tenant: str) -> None:
    async def body(aclient: AsyncClient) -> None:
        request = aclient.request(f"Is a miss that waits its turn sent again ({tenant})?", tenant=tenant, timeout=20)
        # Given a miss still waiting on the LLM queue (its place is above the count taken off it) ...
        place = int(rdb.get(enqueued_counter(LLM_QUEUE)) or 0) + 1000
        rdb.set(QUEUED_PREFIX + request.request_id, f"{LLM_QUEUE}:{place}", ex=60)
        aclient.resender.watch(request.request_id, lookup_message(request), request.reply_to, request.deadline)
        # ... its producer's looks find it there, and send nothing.
        await asyncio.to_thread(
            wait_until, lambda: aclient.resender.seen(request.request_id) == f"queued on {LLM_QUEUE}"
        )
        await asyncio.sleep(3 * RESEND_AFTER_S)
        assert aclient.resender.seen(request.request_id) == f"queued on {LLM_QUEUE}"
        assert not aclient.resender.resent
        aclient.resender.done(request.request_id)

    async def run() -> None:
        async with AsyncClient(ProducerSettings(resend_after_s=RESEND_AFTER_S)) as aclient:
            await body(aclient)

    asyncio.run(run())


def test_a_reply_redis_lost_is_published_again(rdb: redis.Redis, stack: LocalStack, tenant: str) -> None:
    question = f"Is a reply lost with a Redis crash published again ({tenant})?"

    async def body(aclient: AsyncClient) -> ChatReply:
        request = aclient.request(question, tenant=tenant, timeout=20)
        await aclient.send(request)
        # Given a reply that was published, then lost with its once-only mark (Redis killed before it wrote them) ...
        await asyncio.to_thread(wait_until, lambda: rdb.exists(REPLIED_PREFIX + request.request_id))
        rdb.delete(reply_key(request.request_id), REPLIED_PREFIX + request.request_id)
        # ... the producer, which saw no reply, sends the request again once no node holds it, and gets its answer.
        reply = await aclient.get_reply(request.request_id, timeout=20)
        assert aclient.resender.resent[DROPPED] == 1, aclient.resender.resent
        return reply

    # The first look comes after the reply was published and taken away.
    reply = with_client(body, after_s=2.0)
    assert reply.ok and question in (reply.answer or "")
    assert llm_calls(stack, question) == 1


def test_a_reply_taken_off_its_list_but_never_read_is_published_again(
    rdb: redis.Redis, stack: LocalStack, tenant: str
) -> None:
    question = f"Is a reply popped and lost on the wire published again ({tenant})?"

    async def body(aclient: AsyncClient) -> ChatReply:
        request = aclient.request(question, tenant=tenant, timeout=20)
        await aclient.send(request)
        # Given a reply taken off its list by a pop whose answer never reached the reader (Redis killed after the
        # pop was written, before the reply went out) ...
        await asyncio.to_thread(wait_until, lambda: rdb.lpop(reply_key(request.request_id)) is not None)
        # ... the producer, which sees it answered a look ago and still unread, has it answered again.
        reply = await aclient.get_reply(request.request_id, timeout=20)
        assert aclient.resender.resent[REPLY_LOST] == 1, aclient.resender.resent
        return reply

    reply = with_client(body)
    assert reply.ok and question in (reply.answer or "")
    assert llm_calls(stack, question) == 1


def lookups_done(stack: LocalStack, request_id: str) -> int:
    return stack_logs(stack).count(f"dejavu.lookup[{request_id}] succeeded")


def llm_node_idle(rdb: redis.Redis) -> bool:
    # Every LLM task taken has been acked (acks late: after it ran), and none waits.
    return rdb.llen(LLM_QUEUE) == 0 and rdb.zcard("unacked_index") == 0


def test_a_copy_that_was_not_lost_costs_no_second_reply_nor_llm_call(
    rdb: redis.Redis, stack: LocalStack, tenant: str
) -> None:
    question = f"Does a duplicate of a request cost a second LLM call ({tenant})?"

    async def body(aclient: AsyncClient) -> ChatReply:
        # Given a request sent again although it was not lost (its node was only slow) ...
        request = aclient.request(question, tenant=tenant, timeout=20)
        await aclient.send(request)
        rdb.rpush("lookup", lookup_message(request))
        reply = await aclient.get_reply(request.request_id, timeout=20)
        # ... once both copies went through the lookup and the LLM node ...
        await asyncio.to_thread(wait_until, lambda: lookups_done(stack, request.request_id) == 2)
        await asyncio.to_thread(wait_until, lambda: llm_node_idle(rdb))
        # ... the caller has had one reply, and the LLM was asked once.
        assert rdb.llen(reply_key(request.request_id)) == 0
        return reply

    reply = with_client(body)
    assert reply.ok and reply.tier == Tier.LLM
    assert llm_calls(stack, question) == 1


def test_a_duplicate_hit_is_answered_once(rdb: redis.Redis, client: object, tenant: str, stack: LocalStack) -> None:
    question = f"Is a duplicated hit answered twice ({uuid.uuid4().hex[:6]})?"

    async def body(aclient: AsyncClient) -> ChatReply:
        await aclient.ask(question, tenant=tenant, timeout=20)
        await asyncio.to_thread(wait_until, lambda: llm_node_idle(rdb))
        request = aclient.request(question, tenant=tenant, timeout=20)
        # Given two copies of a request that the exact tier answers ...
        rdb.lpush("lookup", lookup_message(request), lookup_message(request))
        reply = await aclient.get_reply(request.request_id, timeout=20)
        await asyncio.to_thread(wait_until, lambda: lookups_done(stack, request.request_id) == 2)
        # ... one reply was published.
        assert rdb.llen(reply_key(request.request_id)) == 0
        return reply

    reply = with_client(body)
    assert reply.ok and reply.tier == Tier.EXACT
