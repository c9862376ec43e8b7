"""The `dejavu` command as a script would run it, against the real stack."""

from __future__ import annotations

import json
import uuid

from tests.integration.conftest import dejavu
from worker.local.servers import LocalStack, free_port


def test_ask_prints_the_answer_then_a_hit(stack: LocalStack, tenant: str) -> None:
    question = f"What does {uuid.uuid4().hex[:8]} mean?"
    cold = dejavu(stack, "ask", question, "--tenant", tenant)
    assert cold.returncode == 0, cold.stderr
    assert question in cold.stdout and "tier=llm" in cold.stderr and "latency=" in cold.stderr
    for _ in range(50):  # the write-back is asynchronous
        hit = dejavu(stack, "ask", question, "--tenant", tenant, "--json")
        reply = json.loads(hit.stdout)
        if reply["tier"] == "exact":
            break
    assert reply["tier"] == "exact" and reply["similarity"] == 1.0 and reply["latency_ms"] > 0


def test_ask_exit_codes(stack: LocalStack, tenant: str) -> None:
    assert dejavu(stack, "ask", "   ", "--tenant", tenant).returncode == 2
    assert dejavu(stack, "ask").returncode == 2
    failed = dejavu(stack, "ask", f"Fail {uuid.uuid4().hex} [[standin:status=500]]", "--tenant", tenant)
    assert failed.returncode == 3 and "llm_error" in failed.stderr  # the LLM's outage: asking later may work
    too_slow = dejavu(stack, "ask", f"Slow {uuid.uuid4().hex}?", "--tenant", tenant, "--timeout", "0.03")
    assert too_slow.returncode == 3 and ("deadline" in too_slow.stderr or "llm_timeout" in too_slow.stderr)


def test_status_shows_queues_workers_and_entries(stack: LocalStack) -> None:
    out = dejavu(stack, "status", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    status = json.loads(out.stdout)
    assert set(status["queues"]) == {"lookup", "llm", "writeback"} and status["workers"]
    assert isinstance(status["redis_entries"], int | None) and isinstance(status["pgvector_entries"], int | None)
    assert isinstance(status["backfills"], list)
    text = dejavu(stack, "status")
    assert text.returncode == 0 and "workers" in text.stdout and "pgvector=" in text.stdout
    assert "backfill  " in text.stdout
    assert status["status"] == "ok" and status["reasons"] == []


def test_status_with_redis_unreachable_exits_3(stack: LocalStack) -> None:
    out = dejavu(stack, "status", env={"DEJAVU_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert out.returncode == 3 and "unreachable" in out.stdout and "status    down" in out.stdout
