"""Two more worker nodes, as on two more machines, against the same Redis and Postgres: they share the
lookups, a backfill and a coalesced burst, and the answers stay right."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from producer.base import make_celery
from producer.client import Client
from producer.settings import ProducerSettings
from schemas.keys import BACKFILL_TASK, COMPLETE_TASK, LOOKUP_TASK
from tests.conftest import llm_calls
from tests.integration.test_backfill import numbered, options, stored, unique_questions, write_jsonl
from worker.local.servers import LocalStack
from worker.settings import Settings
from worker.tools import backfill

EXTRA = ("lookup-b", "io-b")


@pytest.fixture(scope="module")
def two_machines(stack: LocalStack, client: Client) -> Iterator[None]:
    stack.start_worker("lookup-b", "lookup,backfill", "prefork", 1)
    stack.start_worker("io-b", "llm,writeback", "threads", 8)
    try:
        client.wait_for_workers(4)
        yield
    finally:
        for name in EXTRA:
            stack.stop_one(name)


def tasks_per_node() -> dict[str, Counter[str]]:
    celery = make_celery(ProducerSettings())
    # A connection of its own: kombu's process-wide pool may still hold one from before the Redis restart.
    with celery.connection_for_write() as connection:
        stats = celery.control.inspect(timeout=3, connection=connection).stats() or {}
    celery.close()
    return {node.split("@")[0]: Counter(s.get("total", {})) for node, s in stats.items()}


def test_two_nodes_share_lookups_a_burst_and_a_backfill(
    two_machines: None, client: Client, stack: LocalStack, tenant: str, tmp_path: Path
) -> None:
    before = tasks_per_node()
    # Lookups: 40 cold questions from 8 producers.
    questions = [f"Scale-out question {i} ({tenant})?" for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda q: client.ask(q, tenant=tenant, timeout=30), questions))
    assert all(r.ok and q in (r.answer or "") for q, r in zip(questions, replies, strict=True))
    # A burst of one cold question: one LLM call, whichever I/O node leads.
    burst = f"One call for both machines ({tenant})?"
    with ThreadPoolExecutor(12) as pool:
        answers = {r.answer for r in pool.map(lambda _: client.ask(burst, tenant=tenant, timeout=30), range(12))}
    assert llm_calls(stack, burst) == 1 and len(answers) == 1
    # A backfill of 1,000 rows (16 chunks): exact counts, shared by both lookup nodes.
    path = write_jsonl(tmp_path / "rows.jsonl", numbered(1000))
    opts = options(path, f"{tenant}-bf")
    summary = backfill.run(opts, Settings())
    expected = unique_questions(path)
    assert summary.inserted == expected and stored(opts) == (expected, expected)

    after = tasks_per_node()
    done = {node: after.get(node, Counter()) - before.get(node, Counter()) for node in after}
    for task, nodes in ((LOOKUP_TASK, ("lookup1", "lookup-b")), (BACKFILL_TASK, ("lookup1", "lookup-b")),
                        (COMPLETE_TASK, ("io1", "io-b"))):  # fmt: skip
        assert all(done[node][task] > 0 for node in nodes), (task, done)


def test_a_request_is_unique_across_nodes(two_machines: None, client: Client, tenant: str) -> None:
    # The same request sent twice lands on different nodes at once: still one reply.
    request = client.request(f"Sent twice to two machines {uuid.uuid4().hex}?", tenant=tenant)
    client.send(request)
    client.send(request)
    assert client.get_reply(request.request_id, timeout=20).ok
    with pytest.raises(TimeoutError):
        client.get_reply(request.request_id, timeout=2)
