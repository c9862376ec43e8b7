"""Lookups taken in batches (DEJAVU_LOOKUP_BATCH, worker.batch) on the real stack: a lookup node with batching on
is the only one on the lookup queue, and requests pushed together in one LPUSH wait there for it, so its first
task takes the others with it."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.base import lookup_message
from producer.client import Client
from schemas.keys import LOOKUP_QUEUE, LOOKUP_TASK, TAKEN_PREFIX, entry_prefix, reply_key
from schemas.messages import ChatReply, ChatRequest, ErrorCode, Tier
from tests.conftest import stack_logs, wait_until
from tests.integration.test_spine import PARAPHRASE, PROFILE, QUESTION, pg_rows, redis_entry_exists
from worker import batch
from worker.local.servers import LocalStack
from worker.lua import script

PAIRS = Path(__file__).parents[1] / "data" / "medical_pairs.jsonl"
BATCH_NODE = "batch1"


def _lookup_nodes(client: Client) -> set[str]:
    return {name.split("@")[0] for name in client.workers()} - {"io1"}


@pytest.fixture(scope="module")
def batching_node(stack: LocalStack, client: Client) -> Iterator[str]:
    """The session's lookup node stopped, and one node of one process with batching on in its place."""
    stack.stop_one("lookup1")
    saved = dict(os.environ)
    os.environ.update({"DEJAVU_LOOKUP_BATCH": "true", "DEJAVU_LOOKUP_BATCH_MAX": "8"})
    try:
        stack.start_worker(BATCH_NODE, "lookup,backfill", "prefork", 1)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        wait_until(lambda: _lookup_nodes(client) == {BATCH_NODE}, timeout=120)
        yield BATCH_NODE
    finally:
        stack.stop_one(BATCH_NODE)
        stack.start_worker("lookup1", "lookup,backfill", "prefork", 2)
        wait_until(lambda: "lookup1" in _lookup_nodes(client), timeout=120)


def push_together(rdb: redis.Redis, requests: list[ChatRequest]) -> None:
    """Every request on the lookup queue in one step, taken in this order (BRPOP takes from the tail)."""
    rdb.lpush(LOOKUP_QUEUE, *(lookup_message(r) for r in requests))


def replies(client: Client, requests: list[ChatRequest]) -> list[ChatReply]:
    return [client.get_reply(r.request_id, timeout=30) for r in requests]


def batched_with_others(stack: LocalStack, requests: list[ChatRequest]) -> set[str]:
    """The requests a batching node served alongside another's task (worker.batch logs each)."""
    found: set[str] = set()
    ids = {r.request_id for r in requests}

    def logged() -> bool:
        found.update(re.findall(r"dejavu\.lookup\[([^\]]+)\] succeeded in a batch of", stack_logs(stack)))
        return len(found & ids) >= len(ids) - 1

    wait_until(logged)
    return found & ids


def stored(client: Client, rdb: redis.Redis, question: str, tenant: str) -> ChatReply:
    """`question` answered by the LLM and written back to both tiers."""
    reply = client.ask(question, tenant=tenant, timeout=30)
    assert reply.ok, reply
    wait_until(lambda: redis_entry_exists(rdb, reply.entry_id or "") and pg_rows("id = $1", reply.entry_id) == 1)
    return reply


def test_a_batch_serves_every_tier_and_misses(
    batching_node: str, client: Client, rdb: redis.Redis, stack: LocalStack, tenant: str
) -> None:
    first = stored(client, rdb, QUESTION, tenant)
    # Given an entry that only Postgres still holds, in another tenant ...
    durable = stored(client, rdb, QUESTION, f"{tenant}-pg")
    rdb.delete(entry_prefix(PROFILE) + (durable.entry_id or ""))
    cold = f"A question nobody asked before ({tenant})?"
    requests = [
        client.request(QUESTION, tenant=tenant, timeout=30),
        client.request(cold, tenant=tenant, timeout=30),
        client.request(PARAPHRASE, tenant=tenant, timeout=30),
        client.request(PARAPHRASE, tenant=f"{tenant}-pg", timeout=30),
    ]
    # ... when an exact repeat, a cold question, a paraphrase and the durable tier's paraphrase wait together ...
    push_together(rdb, requests)
    exact, miss, para, from_pg = replies(client, requests)
    # ... one task took them all, and each got the answer it gets alone.
    assert len(batched_with_others(stack, requests)) == len(requests) - 1
    assert exact.tier == Tier.EXACT and exact.answer == first.answer, exact
    assert miss.tier == Tier.LLM and cold in (miss.answer or ""), miss
    assert para.tier == Tier.REDIS and para.entry_id == first.entry_id, para
    assert from_pg.tier == Tier.PGVECTOR and from_pg.entry_id == durable.entry_id, from_pg
    # Every message taken was acked after its reply: none is left held on the node.
    wait_until(lambda: rdb.zcard("unacked_lookup_index") == 0)


def test_a_request_past_its_deadline_in_a_batch_is_answered_deadline(
    batching_node: str, client: Client, rdb: redis.Redis, stack: LocalStack, tenant: str
) -> None:
    first = stored(client, rdb, QUESTION, tenant)
    late = client.request(f"Is this answered after its deadline ({tenant})?", tenant=tenant, timeout=0.3)
    wait_until(late.expired)
    requests = [client.request(QUESTION, tenant=tenant, timeout=30), late, client.request(PARAPHRASE, tenant=tenant)]
    push_together(rdb, requests)
    hit, expired, para = replies(client, requests)
    assert len(batched_with_others(stack, requests)) == len(requests) - 1
    assert expired.error is not None and expired.error.code == ErrorCode.DEADLINE, expired
    assert hit.tier == Tier.EXACT and para.tier == Tier.REDIS and para.entry_id == first.entry_id


def labelled_pairs(per_label: int) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["label"] == 1][:per_label] + [r for r in rows if r["label"] == 0][:per_label]


def test_batched_and_alone_decide_the_same(
    batching_node: str, client: Client, rdb: redis.Redis, stack: LocalStack, tenant: str
) -> None:
    pairs = labelled_pairs(per_label=4)
    # Given each pair's first question stored (or served by an earlier one, as it would be) ...
    for pair in pairs:
        reply = client.ask(pair["text_a"], tenant=tenant, timeout=30)
        if reply.tier == Tier.LLM:
            wait_until(lambda r=reply: redis_entry_exists(rdb, r.entry_id or ""))  # type: ignore[misc]
    asks = [p["text_b"] for p in pairs]
    # ... each second question asked alone, storing nothing (a miss must not change what the batch finds) ...
    alone = [client.ask(q, tenant=tenant, timeout=30, cache={"no_store": True}) for q in asks]
    # ... and then all of them waiting together.
    together = [client.request(q, tenant=tenant, timeout=30, cache={"no_store": True}) for q in asks]
    push_together(rdb, together)
    batched = replies(client, together)
    assert len(batched_with_others(stack, together)) == len(together) - 1
    decisions = [(r.tier, r.entry_id, r.similarity) for r in alone]
    assert [(r.tier, r.entry_id, r.similarity) for r in batched] == decisions
    # Not a trivial set: it holds hits and misses.
    assert {Tier.REDIS, Tier.LLM} <= {tier for tier, _, _ in decisions}


def test_requests_taken_by_a_node_that_died_mid_batch_are_restored_and_answered_once(
    batching_node: str, client: Client, rdb: redis.Redis, stack: LocalStack, tenant: str
) -> None:
    first = stored(client, rdb, QUESTION, tenant)
    requests = [client.request(QUESTION, tenant=tenant, timeout=30), client.request(PARAPHRASE, tenant=tenant)]
    # Given two lookups a node took for its batch (their unacked copies and taken marks written, as the script
    # leaves them) and was then killed before it answered them, long enough ago for kombu's sweep ...
    staging = f"{LOOKUP_QUEUE}-staging-{tenant}"
    rdb.lpush(staging, *(lookup_message(r) for r in requests))
    take = rdb.register_script(script("take_lookups"))
    taken = take(
        keys=[staging, "unacked_lookup", "unacked_lookup_index"],
        args=[8, repr(time.time() - 3600), LOOKUP_TASK, TAKEN_PREFIX, "lookup dead@nowhere", 1],
    )
    assert len(taken) == 2 and rdb.llen(staging) == 0
    # ... the live node's sweep puts them back on the lookup queue, and each is answered once.
    hit, para = replies(client, requests)
    assert hit.tier == Tier.EXACT and para.tier == Tier.REDIS and para.entry_id == first.entry_id
    wait_until(lambda: rdb.zcard("unacked_lookup_index") == 0)
    assert all(rdb.llen(reply_key(r.request_id)) == 0 for r in requests)


def test_a_message_taken_for_a_batch_reads_back_as_the_request_it_carries(client: Client, tenant: str) -> None:
    request = client.request(QUESTION, tenant=tenant)
    taken = batch.read_message(lookup_message(request))
    assert (taken.request_id, ChatRequest.model_validate_json(taken.payload)) == (request.request_id, request)
