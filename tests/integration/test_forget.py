"""Removal against the real stack: `dejavu forget` by id, by question and by tenant; feedback through the clients,
the CLI and the gateway; write-backs that race a forget; backfill and the blocklist."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
import redis
from redis.commands.search.query import Query

from producer import AsyncClient
from producer.client import Client
from producer.settings import ProducerSettings
from schemas.cache import CacheEntry, Scope, WritebackJob, entry_id, question_hash
from schemas.keys import BLOCKED_PREFIX, COALESCED_ANSWER_PREFIX, entry_prefix, index_name
from schemas.messages import ChatReply, Removed, Tier
from tests.conftest import llm_calls, wait_idle, wait_until
from tests.integration.conftest import Gateway, dejavu, post
from tests.integration.test_backfill import pg
from worker import writeback
from worker.local.servers import LocalStack
from worker.runtime import Runtime
from worker.settings import Settings
from worker.tools import backfill
from worker.tools.backfill_read import WARM_ALL, Fields

PROFILE = "minilm"


def fresh_question() -> str:
    return f"What is the usual dose of {uuid.uuid4().hex[:10]} for adults?"


def in_pg(eid: str) -> int:
    return int(pg(f"SELECT count(*) FROM dejavu_entries_{PROFILE} WHERE id = $1", eid)[0])


def in_redis(rdb: redis.Redis, eid: str) -> bool:
    return bool(rdb.exists(entry_prefix(PROFILE) + eid))


def indexed(rdb: redis.Redis, tenant: str) -> int:
    """Documents of a tenant in the vector index (what Redis KNN could still serve)."""
    tag = tenant.replace("-", "\\-")
    found = rdb.ft(index_name(PROFILE)).search(Query(f"@tenant:{{{tag}}}").no_content().paging(0, 0))
    return int(found.total)


def assert_gone(rdb: redis.Redis, eid: str, tenant: str) -> None:
    assert not in_redis(rdb, eid) and in_pg(eid) == 0 and indexed(rdb, tenant) == 0


def ask_and_store(client: Client, rdb: redis.Redis, question: str, tenant: str, **options: Any) -> ChatReply:
    reply = client.ask(question, tenant=tenant, **options)
    assert reply.ok and reply.tier == Tier.LLM and reply.entry_id, reply
    eid = reply.entry_id
    wait_until(lambda: in_redis(rdb, eid) and in_pg(eid) == 1)
    return reply


def assert_not_cached_again(
    client: Client, rdb: redis.Redis, stack: LocalStack, question: str, reply: ChatReply, tenant: str
) -> None:
    """Asked again, the stand-in gives the same answer; its write-back is refused and drops the coalescer's copy."""
    eid = reply.entry_id or ""
    before = llm_calls(stack, question)
    again = client.ask(question, tenant=tenant)
    assert again.tier == Tier.LLM and again.answer == reply.answer, again
    wait_until(lambda: not rdb.exists(COALESCED_ANSWER_PREFIX + eid))
    assert not in_redis(rdb, eid) and in_pg(eid) == 0
    third = client.ask(question, tenant=tenant)
    assert third.tier == Tier.LLM and llm_calls(stack, question) == before + 2


# --- forget ---


def test_forget_by_id_removes_every_tier_and_the_next_ask_misses(
    client: Client, rdb: redis.Redis, stack: LocalStack, tenant: str
) -> None:
    question = fresh_question()
    reply = ask_and_store(client, rdb, question, tenant)
    assert indexed(rdb, tenant) == 1

    gone = client.forget(reply.entry_id)
    assert gone.ok and gone.removed == Removed(redis=1, pgvector=1) and gone.blocked == 0
    assert_gone(rdb, reply.entry_id or "", tenant)
    # Safe to repeat: nothing is left to find.
    assert not client.forget(reply.entry_id).found
    again = client.ask(question, tenant=tenant)
    assert again.tier == Tier.LLM and llm_calls(stack, question) == 2


def test_cli_forget_by_question_in_its_scope(client: Client, rdb: redis.Redis, stack: LocalStack, tenant: str) -> None:
    question, system = fresh_question(), "Answer for a pharmacist."
    reply = ask_and_store(client, rdb, question, tenant, system=system)
    eid = reply.entry_id or ""

    # Without the system prompt the question names another scope's entry: nothing there.
    other = dejavu(stack, "forget", "--question", question, "--tenant", tenant)
    assert other.returncode == 0 and "nothing stored" in other.stdout, other.stderr
    assert in_redis(rdb, eid) and in_pg(eid) == 1

    out = dejavu(stack, "forget", "--question", question.upper(), "--tenant", tenant, "--system", system, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["removed"] == {"redis": 1, "pgvector": 1}
    assert_gone(rdb, eid, tenant)
    assert client.ask(question, tenant=tenant, system=system).tier == Tier.LLM

    assert dejavu(stack, "forget").returncode == 2
    bad_id = dejavu(stack, "forget", "not-an-entry-id")
    assert bad_id.returncode == 2 and "entry_id" in bad_id.stderr
    assert dejavu(stack, "forget", "--all").returncode == 2


def fabricate(rdb: redis.Redis, tenant: str, n: int) -> None:
    """`n` entries of `tenant` straight into both tiers, as n write-backs would leave them."""
    vectors = np.random.default_rng(11).standard_normal((n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    records = [(uuid.uuid4().hex, f"s-{tenant}", tenant, "m", "s", "c", f"q{i}?", f"h{i}", f"a{i}", vectors[i])
               for i in range(n)]  # fmt: skip
    pipe = rdb.pipeline(transaction=False)
    for eid, scope, _, _, _, _, q, _, a, vec in records:
        fields = {"scope": scope, "tenant": tenant, "question": q, "answer": a, "vec": vec.tobytes()}
        pipe.hset(entry_prefix(PROFILE) + eid, mapping=fields)  # type: ignore[arg-type]
    pipe.execute()

    async def copy() -> None:
        conn = await asyncpg.connect(Settings().pg_dsn)
        try:
            rows = [(*r[:9], "[" + ",".join(map(str, r[9])) + "]") for r in records]
            await conn.executemany(
                f"INSERT INTO dejavu_entries_{PROFILE} (id, scope_id, tenant, model, system_hash, context_hash, "
                "question, question_hash, answer, embedding) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::vector)",
                rows,
            )
        finally:
            await conn.close()

    asyncio.run(copy())


def test_forget_tenant_removes_all_of_its_entries_and_nothing_else(
    client: Client, rdb: redis.Redis, tenant: str
) -> None:
    question = fresh_question()
    mine = ask_and_store(client, rdb, question, tenant)
    theirs = ask_and_store(client, rdb, question, f"{tenant}-b")
    fabricate(rdb, tenant, 1100)  # more than one round of the Redis side (FORGET_BATCH)
    assert indexed(rdb, tenant) == 1101

    gone = client.forget(all_entries=True, tenant=tenant, timeout=60)
    assert gone.ok and gone.removed == Removed(redis=1101, pgvector=1101), gone
    assert_gone(rdb, mine.entry_id or "", tenant)
    assert pg(f"SELECT count(*) FROM dejavu_entries_{PROFILE} WHERE tenant = $1", tenant)[0] == 0
    # The other tenant keeps its entry, and is served from it.
    assert in_redis(rdb, theirs.entry_id or "") and in_pg(theirs.entry_id or "") == 1
    assert client.ask(question, tenant=f"{tenant}-b").tier == Tier.EXACT
    assert client.ask(question, tenant=tenant).tier == Tier.LLM


# --- feedback ---


def test_feedback_with_the_sync_client_blocks_the_pair(
    client: Client, rdb: redis.Redis, stack: LocalStack, tenant: str
) -> None:
    question = fresh_question()
    reply = ask_and_store(client, rdb, question, tenant)
    eid = reply.entry_id or ""

    bad = client.feedback(reply, reason="wrong dose")
    assert bad.ok and bad.removed == Removed(redis=1, pgvector=1) and bad.blocked == 1
    assert_gone(rdb, eid, tenant)
    assert pg("SELECT reason FROM dejavu_blocked WHERE entry_id = $1 AND tenant = $2", eid, tenant)[0] == "wrong dose"
    assert_not_cached_again(client, rdb, stack, question, reply, tenant)


def test_feedback_with_the_async_client_right_after_the_answer(
    client: Client, rdb: redis.Redis, stack: LocalStack, tenant: str
) -> None:
    question = fresh_question()

    async def scenario() -> ChatReply:
        async with AsyncClient(ProducerSettings()) as aclient:
            reply = await aclient.ask(question, tenant=tenant)
            # At once: the write-back may not have landed; the answer the reply carries is blocked either way.
            bad = await aclient.feedback(reply, reason="too early to tell")
            assert bad.ok and bad.blocked == 1, bad
            return reply

    reply = asyncio.run(scenario())
    eid = reply.entry_id or ""
    wait_idle(client)  # the write-back of the answer has landed, or been refused
    assert not rdb.exists(COALESCED_ANSWER_PREFIX + eid)
    assert_gone(rdb, eid, tenant)
    assert_not_cached_again(client, rdb, stack, question, reply, tenant)


def test_cli_feedback(client: Client, rdb: redis.Redis, stack: LocalStack, tenant: str) -> None:
    question = fresh_question()
    reply = ask_and_store(client, rdb, question, tenant)
    eid = reply.entry_id or ""

    out = dejavu(stack, "feedback", eid, "--reason", "outdated guidance")
    assert out.returncode == 0 and "blocklisted" in out.stdout, out.stderr
    assert_gone(rdb, eid, tenant)
    # Nothing is stored under it any more: feedback on it says so.
    again = dejavu(stack, "feedback", eid)
    assert again.returncode == 1 and "nothing was removed" in again.stderr
    assert_not_cached_again(client, rdb, stack, question, reply, tenant)


def test_gateway_feedback_reaches_only_the_keys_tenant(
    gateway: Gateway, client: Client, rdb: redis.Redis, stack: LocalStack
) -> None:
    question = fresh_question()
    status, _, body = post(gateway, "/v1/ask", {"question": question}, gateway.key_a)
    assert status == 200
    asked = ChatReply.model_validate_json(body)
    eid, tenant_a = asked.entry_id or "", gateway.keys[gateway.key_a]
    wait_until(lambda: in_redis(rdb, eid) and in_pg(eid) == 1)

    # Tenant B cannot remove, or block, tenant A's entry, even knowing its id and answer.
    status, _, body = post(gateway, "/v1/feedback", {"entry_id": eid}, gateway.key_b)
    assert status == 404 and json.loads(body)["error"]["code"] == "entry_not_found"
    status, _, body = post(gateway, "/v1/feedback", {"entry_id": eid, "answer": asked.answer}, gateway.key_b)
    assert status == 200 and json.loads(body)["removed"] == {"redis": 0, "pgvector": 0}
    assert in_redis(rdb, eid) and in_pg(eid) == 1

    status, _, body = post(gateway, "/v1/feedback", {"entry_id": eid, "reason": "wrong"}, gateway.key_a)
    assert status == 200, body
    result = json.loads(body)
    assert result["removed"] == {"redis": 1, "pgvector": 1} and result["blocked"] == 1
    assert not in_redis(rdb, eid) and in_pg(eid) == 0
    # B's block was its own: A's pair is blocked for A (by A's feedback), not by B's.
    assert pg("SELECT count(*) FROM dejavu_blocked WHERE entry_id = $1 AND tenant = $2", eid, tenant_a)[0] == 1

    for _ in range(2):
        status, headers, _ = post(gateway, "/v1/ask", {"question": question}, gateway.key_a)
        assert status == 200 and headers["x-dejavu-tier"] == "llm"
        wait_until(lambda: not rdb.exists(COALESCED_ANSWER_PREFIX + eid))
    assert not in_redis(rdb, eid) and in_pg(eid) == 0


@pytest.mark.parametrize(
    ("body", "key", "status", "says"),
    [
        (b"{nope", "a", 400, "not valid JSON"),
        ({}, "a", 400, "entry_id: Field required"),
        ({"entry_id": "xyz"}, "a", 400, "entry_id: String should match pattern"),
        ({"entry_id": "0" * 32, "tenant": "other"}, "a", 400, "tenant: Extra inputs are not permitted"),
        ({"entry_id": "0" * 32, "reason": "x" * 1001}, "a", 400, "reason: String should have at most 1000"),
        ({"entry_id": "0" * 32}, None, 401, "API key"),
        ({"entry_id": "0" * 32}, "a", 404, "no entry 000"),
    ],
    ids=["invalid-json", "no-entry", "bad-entry-id", "tenant-in-body", "long-reason", "no-key", "unknown-entry"],
)
def test_gateway_feedback_bad_input(
    gateway: Gateway, body: bytes | dict[str, Any], key: str | None, status: int, says: str
) -> None:
    got, _, raw = post(gateway, "/v1/feedback", body, gateway.key_a if key else None)
    assert got == status and says in json.loads(raw)["error"]["message"], raw


# --- races and the other ways in ---


@pytest.fixture(scope="module")
def rt(stack: LocalStack) -> Iterator[Runtime]:
    """A worker runtime in the test process: the write-back code, run here against the real servers."""
    runtime = Runtime.open(Settings())
    yield runtime
    runtime.close()


def made_entry(tenant: str, answer: str = "Two tablets.") -> CacheEntry:
    vector = np.random.default_rng(5).standard_normal(384).astype(np.float32)
    vector /= np.linalg.norm(vector)
    scope = Scope(tenant, "m", "s", "c")
    qhash = question_hash("How many tablets?")
    return CacheEntry(
        entry_id=entry_id(scope, qhash), scope_id=scope.scope_id, tenant=tenant, model="m", system_hash="s",
        context_hash="c", question="How many tablets?", question_hash=qhash, answer=answer, vector=vector.tobytes(),
    )  # fmt: skip


def test_a_writeback_in_flight_when_forget_runs_does_not_bring_it_back(
    client: Client, rdb: redis.Redis, rt: Runtime, tenant: str
) -> None:
    entry = made_entry(tenant)
    read_before = time.time()
    stored = rt.run(writeback.store(WritebackJob(entry=entry, as_of=read_before), rt))
    assert stored == {"redis": "stored", "pgvector": "stored"}
    assert client.forget(entry.entry_id).removed == Removed(redis=1, pgvector=1)

    # Queued before the forget finished: an LLM answer, a promotion, a Postgres-only retry. All refused.
    for job in (WritebackJob(entry=entry, as_of=read_before),
                WritebackJob(entry=entry, as_of=read_before, pgvector=False),
                WritebackJob(entry=entry, as_of=read_before, redis=False)):  # fmt: skip
        done = rt.run(writeback.store(job, rt))
        assert set(done.values()) == {"forgotten"}, done
    assert_gone(rdb, entry.entry_id, tenant)
    # Content read after the forget (past the allowed clock skew) is cached again.
    later = time.time() + Settings().clock_skew_s + 0.5
    done = rt.run(writeback.store(WritebackJob(entry=entry, as_of=later), rt))
    assert done == {"redis": "stored", "pgvector": "stored"}

    # The same for a whole tenant.
    read_before = time.time()
    assert client.forget(all_entries=True, tenant=tenant).removed == Removed(redis=1, pgvector=1)
    done = rt.run(writeback.store(WritebackJob(entry=entry, as_of=read_before), rt))
    assert set(done.values()) == {"forgotten"}
    assert_gone(rdb, entry.entry_id, tenant)


def test_blocklist_holds_when_redis_lost_its_copy(client: Client, rdb: redis.Redis, rt: Runtime, tenant: str) -> None:
    entry = made_entry(tenant, answer="Ten tablets.")
    rt.run(writeback.store(WritebackJob(entry=entry), rt))
    assert client.feedback(entry.entry_id, reason="overdose").blocked == 1
    later = time.time() + Settings().clock_skew_s + 0.5
    assert rt.run(writeback.store(WritebackJob(entry=entry, as_of=later), rt)) == {"redis": "blocked"}
    # A Redis restart without persistence loses the copy: Postgres refuses, and the Redis copy is taken back.
    rdb.delete(BLOCKED_PREFIX + entry.entry_id)
    done = rt.run(writeback.store(WritebackJob(entry=entry, as_of=later), rt))
    assert done == {"redis": "stored", "pgvector": "blocked"}
    assert not in_redis(rdb, entry.entry_id) and rdb.hlen(BLOCKED_PREFIX + entry.entry_id) == 1
    # Another answer to the same question may be cached.
    better = made_entry(tenant, answer="One tablet.")
    assert rt.run(writeback.store(WritebackJob(entry=better, as_of=later), rt)) == {
        "redis": "stored",
        "pgvector": "stored",
    }


def test_backfill_leaves_out_blocklisted_pairs(client: Client, rdb: redis.Redis, tenant: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    rows = [{"question": f"What is remedy {tag}-{i}?", "answer": f"remedy {i}"} for i in range(3)]
    path = tmp_path / "remedies.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    opts = backfill.Options(source=str(path), fields=Fields(), tenant=tenant, warm_last=WARM_ALL)
    assert backfill.run(opts, Settings()).inserted == 3
    scope = backfill.scope_of(opts, Settings())
    bad = entry_id(scope, question_hash(rows[1]["question"]))
    assert client.feedback(bad, reason="not a remedy").removed == Removed(redis=1, pgvector=1)

    again = backfill.run(opts, Settings())
    assert (again.inserted, again.blocked, again.present, again.warmed) == (0, 1, 2, 2)
    assert not in_redis(rdb, bad) and in_pg(bad) == 0
    # Another answer to that question loads.
    path.write_text(json.dumps({"question": rows[1]["question"], "answer": "rest and fluids"}) + "\n")
    assert backfill.run(opts, Settings()).inserted == 1
