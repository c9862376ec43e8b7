"""One request through every tier, against the real servers and a real worker."""

from __future__ import annotations

import ast
import asyncio
import json
import time
import urllib.request
from base64 import b64encode
from typing import Any

import asyncpg
import numpy as np
import pytest
import redis

from producer.client import Client
from schemas.cache import CacheEntry, WritebackJob
from schemas.keys import LOOKUP_QUEUE, LOOKUP_TASK, WRITEBACK_QUEUE, WRITEBACK_TASK, entry_prefix, reply_key
from schemas.messages import ErrorCode, Tier
from tests.conftest import llm_calls, stack_logs, task_result, wait_idle, wait_until
from worker.local.servers import LocalStack
from worker.settings import Settings
from worker.tiers import Stored

QUESTION = "What are the symptoms of glaucoma?"
PARAPHRASE = "What are the signs and symptoms of glaucoma?"
PROFILE = "minilm"
# What a lookup node logs when it drops a broker message that is not a task (worker/broker.py).
NOT_AN_ENVELOPE = "not a Kombu envelope"


def redis_entry_exists(rdb: redis.Redis, entry_id: str) -> bool:
    return bool(rdb.exists(entry_prefix(PROFILE) + entry_id))


def pg_rows(where: str, *args: object) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(Settings().pg_dsn)
        try:
            return int(await conn.fetchval(f"SELECT count(*) FROM dejavu_entries_{PROFILE} WHERE {where}", *args))
        finally:
            await conn.close()

    return asyncio.run(count())


def test_cold_then_exact_then_paraphrase(client: Client, rdb: redis.Redis, stack: LocalStack, tenant: str) -> None:
    # Given an empty scope, when a question is asked, the LLM answers it once.
    cold = client.ask(QUESTION, tenant=tenant)
    assert cold.ok and cold.tier == Tier.LLM
    assert "stand-in LLM" in (cold.answer or "")
    assert llm_calls(stack, QUESTION) >= 1
    calls = llm_calls(stack, QUESTION)
    wait_until(lambda: redis_entry_exists(rdb, cold.entry_id or ""))

    # The same question again (other case, extra spaces) is an exact hit, with no LLM call.
    again = client.ask("  what are the SYMPTOMS of   glaucoma? ", tenant=tenant)
    assert again.tier == Tier.EXACT and again.answer == cold.answer and again.similarity == 1.0
    assert "embed" not in again.timings_ms
    # A paraphrase is a semantic hit in Redis, carrying the original answer.
    para = client.ask(PARAPHRASE, tenant=tenant)
    assert para.tier == Tier.REDIS, para
    assert para.answer == cold.answer and para.entry_id == cold.entry_id
    assert para.similarity is not None and 0.9 <= para.similarity < 1.0
    assert {"exact", "embed", "redis", "total"} <= set(para.timings_ms)
    assert llm_calls(stack, QUESTION) == calls and llm_calls(stack, PARAPHRASE) == 0


def test_pgvector_hit_is_promoted_to_redis(client: Client, rdb: redis.Redis, tenant: str) -> None:
    cold = client.ask(QUESTION, tenant=tenant)
    entry_key = entry_prefix(PROFILE) + (cold.entry_id or "")
    wait_until(lambda: pg_rows("id = $1", cold.entry_id) == 1 and redis_entry_exists(rdb, cold.entry_id or ""))
    # Given Redis lost the entry, the durable tier serves it ...
    rdb.delete(entry_key)
    from_pg = client.ask(PARAPHRASE, tenant=tenant)
    assert from_pg.tier == Tier.PGVECTOR and from_pg.answer == cold.answer
    # ... and promotes it back into Redis, which serves the next ask.
    wait_until(lambda: redis_entry_exists(rdb, cold.entry_id or ""))
    assert client.ask(PARAPHRASE, tenant=tenant).tier == Tier.REDIS
    assert client.ask(QUESTION, tenant=tenant).tier == Tier.EXACT


@pytest.mark.parametrize(
    "other",
    [{"tenant": "other-tenant"}, {"model": "another-model"}, {"system": "You are a pirate."}],
    ids=["tenant", "model", "system-prompt"],
)
def test_other_scope_never_hits(client: Client, rdb: redis.Redis, tenant: str, other: dict[str, str]) -> None:
    first = client.ask(QUESTION, tenant=tenant)
    wait_until(lambda: redis_entry_exists(rdb, first.entry_id or ""))
    kwargs: dict[str, Any] = {"tenant": tenant, **other}
    if other.get("tenant"):
        kwargs["tenant"] = f"{tenant}-b"
    reply = client.ask(QUESTION, **kwargs)
    assert reply.tier == Tier.LLM and reply.entry_id != first.entry_id


def test_multi_turn_does_not_hit_single_turn_entry(client: Client, rdb: redis.Redis, tenant: str) -> None:
    first = client.ask(QUESTION, tenant=tenant)
    wait_until(lambda: redis_entry_exists(rdb, first.entry_id or ""))
    history = [
        {"role": "user", "content": "My father has diabetes."},
        {"role": "assistant", "content": "I am sorry to hear that."},
        {"role": "user", "content": QUESTION},
    ]
    assert client.ask(messages=history, tenant=tenant).tier == Tier.LLM


def test_a_conversation_entry_is_served_only_there(client: Client, rdb: redis.Redis, tenant: str) -> None:
    turns = [{"role": "user", "content": "My father has diabetes."}, {"role": "assistant", "content": "I am sorry."}]
    first = client.ask(messages=[*turns, {"role": "user", "content": QUESTION}], tenant=tenant)
    assert first.tier == Tier.LLM
    wait_until(lambda: redis_entry_exists(rdb, first.entry_id or ""))
    # Only the last user message is the cached question (and the only text embedded).
    assert rdb.hget(entry_prefix(PROFILE) + (first.entry_id or ""), "question") == QUESTION.encode()
    # The same conversation: exact, and a paraphrase of the last message, hit.
    again = client.ask(messages=[*turns, {"role": "user", "content": QUESTION}], tenant=tenant)
    assert again.tier == Tier.EXACT and again.entry_id == first.entry_id
    para = client.ask(messages=[*turns, {"role": "user", "content": PARAPHRASE}], tenant=tenant)
    assert para.tier == Tier.REDIS and para.entry_id == first.entry_id
    # Another conversation, or none, with the same last question: a miss.
    other = [{"role": "user", "content": "My mother has asthma."}, {"role": "assistant", "content": "I see."}]
    assert client.ask(messages=[*other, {"role": "user", "content": QUESTION}], tenant=tenant).tier == Tier.LLM
    assert client.ask(QUESTION, tenant=tenant).tier == Tier.LLM


@pytest.mark.parametrize(
    ("marker", "code"),
    [("[[standin:status=500]]", ErrorCode.LLM_ERROR), ("[[standin:sleep=9]]", ErrorCode.LLM_TIMEOUT),
     ("[[standin:malformed]]", ErrorCode.LLM_ERROR)],
    ids=["http-500", "timeout", "malformed-body"],
)  # fmt: skip
def test_llm_failure_is_an_error_reply_and_nothing_is_cached(
    client: Client, stack: LocalStack, tenant: str, marker: str, code: ErrorCode
) -> None:
    question = f"Is this answer cached {marker}?"
    reply = client.ask(question, tenant=tenant, timeout=20)
    assert not reply.ok and reply.error is not None and reply.error.code == code
    assert reply.answer is None
    # Retried once (DEJAVU_LLM_MAX_RETRIES=1), then given up.
    assert llm_calls(stack, question) == 2
    wait_idle(client)  # a write-back, had one been scheduled, has run
    assert pg_rows("tenant = $1", tenant) == 0
    again = client.ask(question, tenant=tenant, timeout=20)
    assert again.error is not None and again.error.code == code


def send_raw(client: Client, payload: str) -> str:
    """Send `payload` as the lookup task's argument, unchecked; returns the task id."""
    return str(client.celery.send_task(LOOKUP_TASK, args=[payload], queue=LOOKUP_QUEUE).id)


def valid_payload(client: Client, tenant: str, question: str) -> dict[str, Any]:
    return json.loads(client.request(question, tenant=tenant).model_dump_json())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"messages": [{"role": "user", "content": "   "}]}, "empty"),
        ({"messages": [{"role": "user", "content": "x" * 9000}]}, "over the limit"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
        ({"tenant": None}, "tenant"),
        ({"surprise": 1}, "surprise"),
    ],
    ids=["whitespace", "oversized", "unknown-role", "wrong-type", "unknown-field"],
)
def test_malformed_request_gets_an_error_reply(
    client: Client, tenant: str, change: dict[str, Any], expected: str
) -> None:
    payload = {**valid_payload(client, tenant, "placeholder?"), **change}
    send_raw(client, json.dumps(payload))
    reply = client.get_reply(payload["request_id"], timeout=10)
    assert reply.error is not None and reply.error.code == ErrorCode.INVALID_REQUEST
    assert expected in reply.error.message


def test_worker_survives_garbage_and_keeps_serving(
    client: Client, rdb: redis.Redis, stack: LocalStack, tenant: str
) -> None:
    envelopes_dropped = stack_logs(stack).count(NOT_AN_ENVELOPE)
    # No usable reply_to in these: the worker logs and drops them.
    garbage = ["{not json", "[]", "null", json.dumps({"reply_to": "victim:key", "request_id": "x"})]
    task_ids = [send_raw(client, payload) for payload in garbage]
    # A raw non-Celery message on the queue, as a broken producer might push.
    rdb.lpush(LOOKUP_QUEUE, b"\x00\xffnot a celery message")
    # Once each task has run to its end and the raw message has been read and dropped, nothing was written.
    assert [task_result(stack, task_id) for task_id in task_ids] == ["None"] * len(garbage)
    wait_until(lambda: stack_logs(stack).count(NOT_AN_ENVELOPE) > envelopes_dropped)
    assert not rdb.exists("victim:key")
    assert client.ask(QUESTION, tenant=tenant).ok


def test_expired_deadline_gets_deadline_error_and_no_llm_call(client: Client, stack: LocalStack, tenant: str) -> None:
    question = f"Will anyone wait for this {tenant}?"
    payload = {**valid_payload(client, tenant, question), "deadline": time.time() - 1}
    send_raw(client, json.dumps(payload))
    reply = client.get_reply(payload["request_id"], timeout=10)
    assert reply.error is not None and reply.error.code == ErrorCode.DEADLINE
    assert llm_calls(stack, question) == 0


def test_reply_waits_for_a_late_listener(client: Client, rdb: redis.Redis, tenant: str) -> None:
    request_id = client.submit(QUESTION, tenant=tenant)
    wait_until(lambda: rdb.exists(reply_key(request_id)))
    ttl = rdb.ttl(reply_key(request_id))
    assert 0 < ttl <= Settings().reply_ttl_s
    assert client.get_reply(request_id, timeout=5).ok


def test_writeback_twice_stores_one_entry(client: Client, rdb: redis.Redis, stack: LocalStack, tenant: str) -> None:
    vector = np.random.default_rng(7).standard_normal(384).astype(np.float32)
    vector /= np.linalg.norm(vector)
    entry = CacheEntry(
        entry_id=f"wb-{tenant}", scope_id=f"scope-{tenant}", tenant=tenant, model="m", system_hash="s",
        context_hash="c", question="Run me twice?", question_hash=f"q-{tenant}", answer="Once.",
        vector=vector.tobytes(),
    )  # fmt: skip
    payload = WritebackJob(entry=entry).model_dump_json()
    assert json.loads(payload)["entry"]["vector"] == b64encode(vector.tobytes()).decode()
    task_ids = [client.celery.send_task(WRITEBACK_TASK, args=[payload], queue=WRITEBACK_QUEUE).id for _ in range(2)]
    # Each run returns what it did per tier. First write wins: one run stored the entry, the other found it there
    # (a run that wrote over it would say "stored" too).
    done = [ast.literal_eval(task_result(stack, str(task_id))) for task_id in task_ids]
    assert sorted(d["redis"] for d in done) == sorted(d["pgvector"] for d in done) == [Stored.PRESENT, Stored.STORED]
    assert pg_rows("id = $1", entry.entry_id) == 1 and redis_entry_exists(rdb, entry.entry_id)


def test_flower_api_lists_the_worker(stack: LocalStack) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{stack.flower_port}/api/workers?refresh=1")  # type: ignore[attr-defined]
    token = b64encode(f"dejavu:{stack.flower_password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")

    def listed() -> bool:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return any(name.startswith("lookup1@") for name in json.load(resp))

    wait_until(listed, timeout=30)
    # Without the password, Flower refuses.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{stack.flower_port}/api/workers", timeout=10)
    assert refused.value.code == 401
    refused.value.close()
