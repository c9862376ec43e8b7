"""`dejavu backfill` against the real stack: load a MedQuAD excerpt, then ask through the normal request path."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import redis
from celery import Celery

from producer.base import make_celery, ping
from producer.client import Client
from schemas.cache import entry_id, question_hash
from schemas.keys import BACKFILL_QUEUE, entry_prefix
from schemas.messages import Tier
from tests.conftest import llm_calls, wait_until
from worker import sqlfiles
from worker.backfill import drop_hnsw
from worker.embed import Embedder
from worker.local.servers import LocalStack
from worker.settings import Settings
from worker.tiers.pgvector import ensure_schema
from worker.tools import backfill
from worker.tools.backfill_read import WARM_ALL, Fields, plan, read_rows
from worker.tools.probes import unfinished_backfills

MEDQUAD = Path(__file__).resolve().parents[1] / "data" / "medquad_excerpt.jsonl"
SYSTEM = "You answer questions about health."
PROFILE = "minilm"
EXACT = "What are the symptoms of Hairy Cell Leukemia ?"
PARAPHRASED = ("What are the symptoms of Gastrointestinal Stromal Tumors ?",
               "What are the signs and symptoms of gastrointestinal stromal tumors?")  # fmt: skip


def medquad() -> list[dict[str, Any]]:
    with MEDQUAD.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def numbered(n: int) -> list[dict[str, Any]]:
    """Made-up rows, for tests of the loading itself (chunks, kills, resumes) rather than of what matches what.
    Every test loads into a tenant of its own, so the same rows never meet."""
    return [{"qid": f"n{i}", "question": f"What does code {i} on a lab report mean?", "answer": f"Code {i} means ..."}
            for i in range(n)]  # fmt: skip


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def options(path: Path, tenant: str, **change: Any) -> backfill.Options:
    fields = Fields("question", "answer", "qid")
    return backfill.Options(source=str(path), fields=fields, tenant=tenant, system=SYSTEM, **change)


def unique_questions(path: Path) -> int:
    with path.open("rb") as f:
        return len(plan(read_rows(f, "jsonl", Fields(), Settings().max_question_bytes), "keep-first").rows)


def pg(query: str, *args: object) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(Settings().pg_dsn)
        try:
            return await conn.fetchrow(query, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def stored(opts: backfill.Options) -> tuple[int, int]:
    """Rows in the scope, and distinct questions among them."""
    scope = backfill.scope_of(opts, Settings())
    row = pg(f"SELECT count(*), count(DISTINCT question_hash) FROM dejavu_entries_{PROFILE} WHERE scope_id = $1",
             scope.scope_id)  # fmt: skip
    return int(row[0]), int(row[1])


def chunks_done(job_id: str) -> tuple[int, int]:
    row = pg("SELECT count(*) FILTER (WHERE done), count(*) FROM dejavu_backfill_chunks WHERE job_id = $1", job_id)
    return int(row[0]), int(row[1])


@contextmanager
def backfill_paused() -> Iterator[Celery]:
    """The running nodes take no backfill chunk until the block ends; chunks queued meanwhile wait for them."""
    celery = make_celery(Settings())
    celery.control.cancel_consumer(BACKFILL_QUEUE, reply=True, timeout=5)
    try:
        yield celery
    finally:
        celery.control.add_consumer(BACKFILL_QUEUE, reply=True, timeout=5)
        celery.close()


def test_backfill_then_ask_exact_and_paraphrased_without_the_llm(
    client: Client, stack: LocalStack, tenant: str, tmp_path: Path
) -> None:
    rows = medquad()
    path = write_jsonl(tmp_path / "medquad.jsonl", rows)
    expected = unique_questions(path)
    opts = options(path, tenant)

    summary = backfill.run(opts, Settings())
    assert (summary.read, summary.inserted, summary.rejected, summary.present) == (len(rows), expected, 0, 0)
    assert summary.duplicates_in_file == len(rows) - expected > 0 and not summary.hnsw_rebuilt
    assert stored(opts) == (expected, expected)
    assert 0 < summary.embed_share < 1

    first_answer = {r["question"]: r["answer"] for r in reversed(rows)}  # keep-first: the first one wins
    exact = client.ask(EXACT, tenant=tenant, system=SYSTEM)
    assert exact.tier == Tier.PGVECTOR and exact.answer == first_answer[EXACT], exact
    original, paraphrase = PARAPHRASED
    para = client.ask(paraphrase, tenant=tenant, system=SYSTEM)
    assert para.tier == Tier.PGVECTOR and para.answer == first_answer[original], para
    assert para.similarity is not None and para.similarity < 1.0
    assert llm_calls(stack, EXACT) == 0 and llm_calls(stack, paraphrase) == 0
    # Another system prompt is another scope: nothing was loaded there.
    assert client.ask(EXACT, tenant=tenant, system="Other.").tier == Tier.LLM

    again = backfill.run(opts, Settings())
    assert (again.inserted, again.updated, again.present) == (0, 0, expected)
    assert stored(opts) == (expected, expected)


def test_a_backfilled_vector_is_the_one_its_question_gets_when_asked(tenant: str, tmp_path: Path) -> None:
    """The backfill embeds a chunk's rows together; each row's vector must not depend on the others in it
    (dynamic int8 quantizes activations per batch: batched, a vector moved to cosine ~0.98 of its own)."""
    rows = medquad()[:40]
    opts = options(write_jsonl(tmp_path / "few.jsonl", rows), tenant)
    settings = Settings()
    backfill.run(opts, settings)
    embedder = Embedder(settings.profile(), settings.model_cache_dir)
    scope = backfill.scope_of(opts, settings)
    questions = list(dict.fromkeys(r["question"] for r in rows))
    for question in questions:
        eid = entry_id(scope, question_hash(question))
        text = pg(f"SELECT embedding::text FROM dejavu_entries_{PROFILE} WHERE id = $1", eid)[0]
        cosine = float(np.dot(np.array(json.loads(text), dtype=np.float32), embedder.embed_one(question)))
        assert cosine > 0.9999, (question, cosine)


def test_duplicates_policy_and_redis_warming(client: Client, rdb: redis.Redis, tenant: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    question = f"What is code {tag} used for?"
    rows = [{"qid": str(i), "question": f"What does marker {tag}-{i} mean?", "answer": f"marker {i}"} for i in range(4)]
    rows.insert(1, {"qid": "first", "question": question, "answer": "the first answer"})
    rows.append({"qid": "last", "question": f"  what is CODE {tag} used for? ", "answer": "the last answer"})
    path = write_jsonl(tmp_path / "dups.jsonl", rows)

    # keep-first, the last 2 kept rows warmed: the question's first answer is in Redis, the early markers not.
    opts = options(path, tenant, warm_last=2)
    first = backfill.run(opts, Settings())
    assert (first.inserted, first.duplicates_in_file, first.warmed) == (5, 1, 2)
    scope = backfill.scope_of(opts, Settings())
    in_redis = [bool(rdb.exists(entry_prefix(PROFILE) + entry_id(scope, question_hash(r["question"])))) for r in rows]
    assert in_redis == [False, False, False, True, True, False]
    reply = client.ask(f"What does marker {tag}-3 mean?", tenant=tenant, system=SYSTEM)
    assert reply.tier == Tier.EXACT and reply.answer == "marker 3"
    assert client.ask(question, tenant=tenant, system=SYSTEM).answer == "the first answer"

    # keep-last: the file's last answer replaces the stored one, in Postgres and in Redis; a re-run changes nothing.
    last = backfill.run(options(path, tenant, on_duplicate="keep-last", warm_last=WARM_ALL), Settings())
    assert (last.inserted, last.updated, last.present, last.warmed) == (0, 1, 4, 5)
    reply = client.ask(question, tenant=tenant, system=SYSTEM)
    assert reply.tier == Tier.EXACT and reply.answer == "the last answer"
    again = backfill.run(options(path, tenant, on_duplicate="keep-last"), Settings())
    assert (again.inserted, again.updated) == (0, 0)
    assert stored(opts) == (5, 5)


def test_worker_killed_mid_backfill_then_resume_loads_exactly_once(
    stack: LocalStack, tenant: str, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "kill.jsonl", numbered(1200))
    expected = unique_questions(path)
    opts = options(path, tenant)
    settings = Settings()
    # Only the node about to be killed takes backfill chunks, so it dies holding one.
    with backfill_paused() as celery:
        try:
            stack.start_worker("bfkill", "lookup,backfill", "solo", 1)
            wait_until(lambda: any(name.startswith("bfkill@") for name in ping(celery, 0.5)), timeout=60)
            started = backfill.start(opts, settings)
            wait_until(lambda: chunks_done(started.job_id)[0] >= 3, timeout=60)
            stack.stop_one("bfkill", signal.SIGKILL)
            done, total = chunks_done(started.job_id)
            assert 3 <= done < total
        finally:
            stack.stop_one("bfkill", signal.SIGKILL)

    # The dead node's chunk is unacked until the visibility timeout: resume hands it out again now.
    summary = backfill.resume(started.job_id, settings)
    assert summary.inserted == expected and summary.present == 0
    assert chunks_done(started.job_id) == (total, total)
    assert stored(opts) == (expected, expected)


def dejavu(stack: LocalStack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", "backfill", *args],
        env={**os.environ, **stack.env()}, input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_broken_rows_are_rejected_and_the_good_ones_loaded(stack: LocalStack, tenant: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    good = [{"qid": f"g{i}", "question": f"What is fact {tag}-{i}?", "answer": f"fact {i}"} for i in range(6)]
    lines = [json.dumps(good[0]).encode(), b"{broken json", json.dumps(good[1]).encode(),
             json.dumps({"qid": "no-answer", "question": "Where is the answer?"}).encode(),
             json.dumps({"qid": "empty", "question": " ", "answer": "x"}).encode(),
             json.dumps({"qid": "long", "question": "x" * 9000, "answer": "x"}).encode(),
             b'{"qid": "latin1", "question": "caf\xe9?", "answer": "x"}',
             *(json.dumps(g).encode() for g in good[2:])]  # fmt: skip
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "rejects.jsonl"

    out = dejavu(stack, str(path), "--tenant", tenant, "--system", SYSTEM, "--id-field", "qid",
                 "--rejects", str(rejects), "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "6 loaded" in out.stdout and "5 rejected" in out.stdout and str(rejects) in out.stdout
    listed = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["line"], r["id"]) for r in listed] == [(2, None), (4, "no-answer"), (5, "empty"), (6, "long"),
                                                      (7, None)]  # fmt: skip
    assert listed[0]["reason"].startswith("invalid JSON") and listed[1]["reason"] == "missing field 'answer'"
    assert listed[3]["reason"].startswith("question too long") and listed[4]["reason"].startswith("bad encoding")
    assert stored(options(path, tenant)) == (6, 6)

    # CSV on stdin, with other column names.
    csv_text = "id,q,a\n" + "".join(f'{i},"What is CSV row {tag}-{i}?","row {i}"\n' for i in range(3)) + "9,,x\n"
    out = dejavu(stack, "-", "--tenant", tenant, "--question-field", "q", "--answer-field", "a",
                 "--rejects", str(tmp_path / "csv.rejects.jsonl"), "--no-progress", stdin=csv_text)  # fmt: skip
    assert out.returncode == 0 and "3 loaded" in out.stdout and "1 rejected" in out.stdout, out.stderr


def test_cli_usage_errors(stack: LocalStack, tmp_path: Path) -> None:
    assert dejavu(stack).returncode == 2
    assert dejavu(stack, "--resume", "bf-nosuchjob").returncode == 2
    assert dejavu(stack, str(tmp_path / "missing.jsonl")).returncode == 2
    (tmp_path / "x.csv").write_text("question,reply\nq?,a\n")
    out = dejavu(stack, str(tmp_path / "x.csv"))
    assert out.returncode == 2 and "'answer'" in out.stderr


def test_ctrl_c_of_the_producer_then_resume(stack: LocalStack, tenant: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ctrlc.jsonl", numbered(400))
    expected = unique_questions(path)
    # No node loads a chunk before the resume, so the Ctrl-C always lands while the producer is still waiting.
    with backfill_paused():
        proc = subprocess.Popen(
            [sys.executable, "-m", "producer.cli", "backfill", str(path), "--tenant", tenant, "--system", SYSTEM],
            env={**os.environ, **stack.env()}, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stderr is not None
        first = proc.stderr.readline()  # "backfill <id>: ... rows read ..." once the job is registered
        job_id = first.split()[1].rstrip(":")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "interrupted:" in err and f"dejavu backfill --resume {job_id}" in err, err
        done, total = chunks_done(job_id)
        assert done == 0 < total
    out = dejavu(stack, "--resume", job_id, "--no-progress")
    assert out.returncode == 0 and job_id in out.stdout, out.stderr
    assert chunks_done(job_id) == (total, total)
    assert stored(options(path, tenant)) == (expected, expected)


def test_a_worker_starting_mid_load_leaves_the_dropped_hnsw_index_to_the_backfill(stack: LocalStack) -> None:
    """The schema a worker ensures on first use must not build back the index a large load dropped: every row of
    the load would then go through the graph, and the build after the load would have nothing to do."""
    profile, job = f"t{uuid.uuid4().hex[:8]}", f"bf-{uuid.uuid4().hex[:12]}"
    table = sqlfiles.table_name(profile)

    async def hnsw_indexes(conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE "
                                       "'%USING hnsw%'", table))  # fmt: skip

    async def go() -> tuple[list[int], list[list[dict[str, Any]]]]:
        dsn = Settings().pg_dsn
        conn = await asyncpg.connect(dsn)
        try:
            await ensure_schema(conn, profile, 8)
            counts = [await hnsw_indexes(conn)]
            indexdef = await drop_hnsw(conn, profile)
            await conn.execute(
                "INSERT INTO dejavu_backfill_jobs (id, profile, source, tenant, model, system_hash, context_hash, "
                "on_duplicate, rows_read, rows_kept, duplicates_in_file, rejected, chunks, hnsw_rebuild) "
                "VALUES ($1, $2, 'test', 't', 'm', 's', 'c', 'keep-first', 0, 0, 0, 0, 0, $3)",
                job, profile, indexdef,
            )  # fmt: skip
            await ensure_schema(conn, profile, 8)  # a worker's first use of Postgres, mid-load
            counts.append(await hnsw_indexes(conn))
            # `dejavu status` names the unfinished job and says the index is dropped.
            seen = [await unfinished_backfills(dsn, profile)]
            await conn.execute("UPDATE dejavu_backfill_jobs SET finished_at = now() WHERE id = $1", job)
            await ensure_schema(conn, profile, 8)  # once the job is over, the index is the schema's again
            counts.append(await hnsw_indexes(conn))
            seen.append(await unfinished_backfills(dsn, profile))
            await conn.execute("DELETE FROM dejavu_backfill_jobs WHERE id = $1", job)
            await conn.execute(f"DROP TABLE {table}")
            return counts, seen
        finally:
            await conn.close()

    counts, seen = asyncio.run(go())
    assert counts == [1, 0, 1]
    assert [(j["id"], j["hnsw_dropped"], j["chunks_done"], j["chunks"]) for j in seen[0]] == [(job, True, 0, 0)]
    assert seen[1] == []
