"""`dejavu eval` and `dejavu calibrate` against the real stack: the numbers on fixed slices, the real path
against the offline rule ask by ask, nothing left behind, and no answer crossing a scope."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

from schemas.keys import entry_prefix
from worker.local.servers import LocalStack
from worker.refusal import GUARD, NOT_SIMILAR, SERVED, VERIFIER
from worker.runtime import Runtime
from worker.settings import Settings
from worker.tools import evaluate
from worker.tools.pairs import read_pairs
from worker.tools.sweep import counts, decisions, embed_texts, pairs_asks, replay_asks, served, verifier_scores

# Labelled pairs from RQE and MedQuAD (tests/data/README.md): paraphrases, same-text pairs and their look-alikes.
PAIRS = Path(__file__).resolve().parents[1] / "data" / "medical_pairs.jsonl"
PROFILE = "minilm"
# Pairs whose outcome is far from any threshold, so the expected counts below hold for the shipped profile.
FIXED = [
    ("What is gout?", "what is   GOUT?", 1),  # exact tier
    ("What are the symptoms of glaucoma?", "What are the signs and symptoms of glaucoma?", 1),  # paraphrase
    ("What is the capital of France?", "What is the capital city of France?", 1),  # paraphrase
    ("How do I get rid of acne?", "How do I get rid of acne?", 0),  # a noisy label: the exact tier serves it
    ("Is measles contagious?", "Is measles not contagious?", 0),  # negation guard
    ("What is the dose of ibuprofen for a 5-year-old?", "What is the dose of ibuprofen for a 50-year-old?", 0),
    ("What causes gout?", "How to prevent gout?", 0),  # question kind
    ("What is the capital of France?", "How do I bake sourdough bread?", 0),  # far apart
    ("Why do cats purr?", "What does it mean when my cat makes a rumbling sound?", 1),  # missed: too far apart
]


def dejavu(stack: LocalStack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        env={**os.environ, **stack.env(), **(env or {})}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def write_pairs(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    path.write_text("".join(json.dumps({"text_a": a, "text_b": b, "label": y}) + "\n" for a, b, y in rows))
    return path


@pytest.fixture(scope="module")
def runtime(stack: LocalStack) -> Iterator[Runtime]:
    rt = Runtime.open(Settings())
    yield rt
    rt.close()


def eval_entries_left(rdb: redis.Redis) -> tuple[int, int]:
    async def pg() -> int:
        conn = await asyncpg.connect(Settings().pg_dsn)
        try:
            return int(await conn.fetchval(f"SELECT count(*) FROM dejavu_entries_{PROFILE} WHERE tenant LIKE 'eval-%'"))
        finally:
            await conn.close()

    in_redis = sum(1 for key in rdb.scan_iter(f"{entry_prefix(PROFILE)}*") if rdb.hget(key, "tenant") and
                   (rdb.hget(key, "tenant") or b"").startswith(b"eval-"))  # fmt: skip
    return in_redis, asyncio.run(pg())


def test_eval_on_a_fixed_slice(stack: LocalStack, rdb: redis.Redis, tmp_path: Path) -> None:
    path = write_pairs(tmp_path / "fixed.jsonl", FIXED)
    out = dejavu(stack, "eval", "--pairs", str(path), "--json")
    assert out.returncode == 0, out.stderr
    got: dict[str, Any] = json.loads(out.stdout)
    # 4 hits (gout exact, glaucoma, France, acne exact) of which acne is wrong; the cat pair is missed.
    assert (got["right_hits"], got["wrong_hits"], got["missed"], got["refused"]) == (3, 1, 1, 4)
    assert (got["precision"], got["recall"], got["hit_rate"]) == (0.75, 0.75, round(4 / 9, 4))
    assert got["f1"] == 0.75 and got["pairs"] == 9 and got["mode"] == "pairs"
    assert got["threshold"] == Settings().profile().threshold_redis and got["guards"] is True
    assert got["tiers"] == {"exact": 2, "redis": 2}

    # Replay: one cache of the 8 distinct first questions; each distinct second question asked once.
    out = dejavu(stack, "eval", "--pairs", str(path), "--mode", "replay", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["entries"] == 8 and got["asks"] == 9
    assert (got["right_hits"], got["wrong_hits"]) == (4, 0), got  # the acne ask finds itself: the same question
    assert eval_entries_left(rdb) == (0, 0)


def test_eval_usage_errors(stack: LocalStack, tmp_path: Path) -> None:
    assert dejavu(stack, "eval").returncode == 2
    assert dejavu(stack, "eval", "--pairs", str(tmp_path / "missing.jsonl")).returncode == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text_a": "a"}\n')
    out = dejavu(stack, "eval", "--pairs", str(bad))
    assert out.returncode == 2 and "bad.jsonl:1" in out.stderr


@pytest.mark.parametrize("mode", ["pairs", "replay"])
def test_the_real_path_decides_as_the_offline_rule(runtime: Runtime, rdb: redis.Redis, mode: evaluate.Mode) -> None:
    pairs, _ = read_pairs(PAIRS, limit=300)
    report = evaluate.run(pairs, mode, runtime)
    vectors = embed_texts(runtime.embedder, [t for p in pairs for t in (p.text_a, p.text_b)])
    asks = pairs_asks(pairs, vectors) if mode == "pairs" else replay_asks(pairs, vectors)
    profile = runtime.profile
    predicted = served(asks, profile.threshold_redis, True, profile.verifier)
    assert (predicted == report.hits).all()
    assert counts(asks, predicted) == report.counts
    # The agreement means something only if the slice reaches every step of the rule and every outcome.
    assert profile.verifier is not None
    rule = decisions(asks, profile.threshold_redis, True, verifier_scores(asks, profile.verifier),
                     profile.verifier.threshold)  # fmt: skip
    assert set(rule.tolist()) == {SERVED, NOT_SIMILAR, GUARD, VERIFIER}
    assert min(report.counts.right_hits, report.counts.wrong_hits, report.counts.missed, report.counts.refused) > 0
    assert eval_entries_left(rdb) == (0, 0)


def test_no_answer_crosses_a_tenant_model_system_prompt_or_conversation(runtime: Runtime) -> None:
    pairs, _ = read_pairs(PAIRS, limit=20)
    questions = list(dict.fromkeys(p.text_a for p in pairs))
    hits = evaluate.cross_scope_hits(questions, runtime)
    crossed = {"tenant": 0, "model": 0, "system_prompt": 0, "conversation": 0}
    assert hits == {**crossed, "same_scope_control": len(questions)}


def test_calibrate_then_eval_reaches_the_target(stack: LocalStack, tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    out = dejavu(stack, "calibrate", "--pairs", str(PAIRS), "--target-precision", "0.85", "--no-verifier",
                 "--out", str(profile), "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    chosen = json.loads(out.stdout)
    written = json.loads(profile.read_text())
    assert written["threshold_redis"] == written["threshold_pgvector"] == chosen["threshold"]
    assert "verifier" not in written and written["calibration"]["target_precision"] == 0.85
    # The real path, with that file as the profile's configuration, reaches the target on the slice.
    out = dejavu(stack, "eval", "--pairs", str(PAIRS), "--json", env={"DEJAVU_PROFILE_FILE": str(profile)})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["threshold"] == chosen["threshold"] and got["precision"] >= 0.85
    assert (got["precision"], got["recall"]) == (chosen["precision"], chosen["recall"])
    # A target no threshold reaches is refused, and nothing is written.
    unreachable = dejavu(stack, "calibrate", "--pairs", str(PAIRS), "--target-precision", "1.0", "--no-verifier",
                         "--out", str(tmp_path / "never.json"))  # fmt: skip
    assert unreachable.returncode == 1 and "no threshold reaches" in unreachable.stderr
    assert not (tmp_path / "never.json").exists()
