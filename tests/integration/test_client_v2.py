"""Version 2 through the Python clients and raw queue producers: parameters, streaming, cache control, usage,
`dejavu report`, and version 1 messages still answered during a rolling upgrade."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import redis

from producer import AsyncClient, Client
from producer.settings import ProducerSettings
from schemas.keys import LOOKUP_QUEUE, LOOKUP_TASK, reply_key
from schemas.messages import ChatDelta, ChatReply, ReplyEvent, Tier
from schemas.taskwire import task_message
from tests.conftest import llm_calls, wait_until
from tests.integration.conftest import dejavu
from worker.local.servers import LocalStack


def fresh(text: str = "How is measles spread") -> str:
    return f"{text} ({uuid.uuid4().hex[:8]})?"


def text_of(events: list[ReplyEvent]) -> str:
    return "".join(str(e.delta.get("content") or "") for e in events if isinstance(e, ChatDelta))


def test_sync_ask_stream_yields_deltas_then_the_reply_and_a_hit_whole(client: Client, tenant: str) -> None:
    question = fresh()
    miss = list(client.ask_stream(question, tenant=tenant))
    reply = miss[-1]
    assert isinstance(reply, ChatReply) and reply.tier == Tier.LLM and len(miss) > 3
    assert [e.seq for e in miss if isinstance(e, ChatDelta)] == list(range(len(miss) - 1))
    assert text_of(miss) == reply.answer and reply.usage is not None and reply.usage.completion_tokens > 0
    wait_until(lambda: client.ask(question, tenant=tenant).tier == Tier.EXACT)
    hit = list(client.ask_stream(question, tenant=tenant))
    assert len(hit) == 1 and isinstance(hit[0], ChatReply) and hit[0].answer == reply.answer
    assert hit[0].saved == reply.usage and hit[0].usage is not None and hit[0].usage.total_tokens == 0


def test_async_ask_stream_relays_a_miss(stack: LocalStack, tenant: str) -> None:
    async def scenario() -> list[ReplyEvent]:
        async with AsyncClient(ProducerSettings()) as client:
            return [event async for event in client.ask_stream(fresh(), tenant=tenant, params={"seed": 3})]

    events = asyncio.run(scenario())
    reply = events[-1]
    assert isinstance(reply, ChatReply) and reply.ok and len(events) > 3 and text_of(events) == reply.answer


def test_params_reach_the_llm_and_the_scope(client: Client, tenant: str, stack: LocalStack) -> None:
    question = fresh("Name three symptoms of flu")
    cut = client.ask(question, tenant=tenant, params={"max_tokens": 4})
    assert cut.finish_reason == "length" and cut.usage is not None and cut.usage.completion_tokens == 4
    whole = client.ask(question, tenant=tenant)
    assert whole.tier == Tier.LLM and whole.finish_reason == "stop" and llm_calls(stack, question) == 2


def test_cache_field_no_cache_asks_the_llm_again(client: Client, tenant: str, stack: LocalStack) -> None:
    question = fresh("What is a fever")
    client.ask(question, tenant=tenant)
    wait_until(lambda: client.ask(question, tenant=tenant).tier == Tier.EXACT)
    again = client.ask(question, tenant=tenant, cache={"no_cache": True})
    assert again.tier == Tier.LLM and llm_calls(stack, question) == 2


def test_a_version_1_message_on_the_queue_gets_a_version_1_reply(rdb: redis.Redis, tenant: str) -> None:
    rid = uuid.uuid4().hex
    v1 = {"version": 1, "request_id": rid, "messages": [{"role": "user", "content": fresh()}], "tenant": tenant,
          "model": "standin-1", "reply_to": reply_key(rid), "deadline": time.time() + 30}  # fmt: skip
    rdb.lpush(LOOKUP_QUEUE, task_message(LOOKUP_TASK, LOOKUP_QUEUE, [json.dumps(v1)], task_id=rid))
    popped = rdb.blpop([reply_key(rid)], timeout=30)
    assert popped is not None
    reply = json.loads(popped[1])
    assert reply["version"] == 1 and reply["answer"] and not {"usage", "saved", "finish_reason"} & reply.keys()


def test_dejavu_report_counts_requests_tiers_and_tokens_saved(client: Client, stack: LocalStack, tenant: str) -> None:
    question = fresh("What is a migraine")
    first = client.ask(question, tenant=tenant)
    wait_until(lambda: client.ask(question, tenant=tenant).tier == Tier.EXACT)
    done = dejavu(stack, "report", "--tenant", tenant, "--json")
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)[tenant]
    assert counts["tier:llm"] == 1 and counts["tier:exact"] >= 1
    # Every request is counted under the one tier that served it. A repeat may also come from the Redis KNN tier:
    # its exact lookup can run just before the write-back lands and its KNN just after.
    assert counts["requests"] == sum(n for key, n in counts.items() if key.startswith("tier:"))
    assert first.usage is not None
    served_from_cache = counts["requests"] - counts["tier:llm"]
    assert counts["saved_completion:standin-1"] == first.usage.completion_tokens * served_from_cache
    table = dejavu(stack, "report", "--tenant", tenant)
    assert tenant in table.stdout and "cost saved" not in table.stdout  # no price table, no cost column
