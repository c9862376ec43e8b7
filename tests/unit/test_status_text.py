"""How `dejavu status` words the unfinished backfill jobs it found."""

from __future__ import annotations

from worker.tools.commands.status import _backfills


def test_a_stopped_job_is_named_with_its_progress_and_how_to_finish_it() -> None:
    text = _backfills([{"id": "bf-1", "chunks_done": 12, "chunks": 40, "hnsw_dropped": True,
                        "created_at": "2026-11-26T10:00:00+00:00"}])  # fmt: skip
    assert "1 job(s) unfinished" in text
    assert "bf-1: 12/40 chunks done; the pgvector HNSW index is dropped" in text
    assert "dejavu backfill --resume bf-1" in text


def test_no_job_and_an_unreachable_postgres_are_said_plainly() -> None:
    assert _backfills([]) == "backfill  no job unfinished"
    assert "unreachable (OSError: refused)" in _backfills({"error": "OSError: refused"})
