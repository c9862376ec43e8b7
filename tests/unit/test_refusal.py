"""The refusal rule is one function: one neighbour on the lookup path and thousands of asks offline decide alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker import guards
from worker.refusal import GUARD, NOT_SIMILAR, SERVED, VERIFIER, decide, refusal
from worker.settings import PROFILES_DIR, ProfileConfig
from worker.tools.pairs import Pair, read_pairs
from worker.tools.sweep import pairs_asks, served, verifier_decides

SHIPPED = ProfileConfig.model_validate_json((PROFILES_DIR / "minilm.json").read_text())
PROBES = Path(__file__).resolve().parents[1] / "data" / "hard_negatives.jsonl"
PARAPHRASES = [
    ("What are the symptoms of glaucoma?", "What are the signs and symptoms of glaucoma?"),
    ("How do I reduce belly fat?", "How can I lose belly fat?"),
    ("What is gout?", "what is   GOUT?"),
]


def angled(pairs: list[Pair], similarity: np.ndarray) -> dict[str, np.ndarray]:
    """Unit vectors giving each pair the cosine asked for (every text in one pair only)."""
    vectors = {}
    for p, s in zip(pairs, similarity, strict=True):
        vectors[p.text_a] = np.array([1.0, 0.0], dtype=np.float32)
        vectors[p.text_b] = np.array([s, np.sqrt(max(0.0, 1 - s * s))], dtype=np.float32)
    return vectors


@pytest.mark.parametrize("use_guards", [True, False])
def test_one_neighbour_and_arrays_decide_alike(use_guards: bool) -> None:
    probes, _ = read_pairs(PROBES, limit=400)
    pairs = [*probes[::2], *(Pair(a, b, 1) for a, b in PARAPHRASES)]
    rng = np.random.default_rng(0)
    similarity = rng.choice([0.75, 0.8, 0.84, 0.9, 0.97, 1.0], size=len(pairs))
    asks = pairs_asks(pairs, angled(pairs, similarity))
    verifier = SHIPPED.verifier
    offline = served(asks, 0.8, use_guards, verifier)
    one_by_one = [
        exact or refusal(p.text_b, p.text_a, float(s), use_guards, verifier, 0.8) is None
        for p, s, exact in zip(pairs, asks.similarity, asks.exact, strict=True)
    ]
    assert (offline == np.array(one_by_one)).all()
    # Every step of the rule is met on this sample.
    assert offline.any() and not offline.all() and asks.exact.any() and (asks.similarity >= 1.0).any()


def test_the_first_step_that_applies_decides() -> None:
    sim = np.array([0.7, 0.7, 1.0, 0.9, 0.9, 0.9])
    exact = np.array([False, True, False, False, False, False])
    guards_ok = np.array([True, True, False, False, True, True])
    scores = np.array([1.0, 1.0, 0.0, 1.0, 0.2, 0.9])
    codes = decide(sim, 0.8, lambda rows: guards_ok[rows], lambda rows: scores[rows], 0.5, exact)
    assert codes.tolist() == [NOT_SIMILAR, SERVED, SERVED, GUARD, VERIFIER, SERVED]
    assert decide(sim, 0.8, None, None, 0.5, exact).tolist() == [NOT_SIMILAR, SERVED, SERVED, SERVED, SERVED, SERVED]


def test_checks_are_asked_only_about_the_rows_that_reach_them(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[int]] = []

    def guards_ok(rows: np.ndarray) -> np.ndarray:
        asked.append(rows.tolist())
        return rows != 3

    decide(np.array([0.7, 0.9, 1.0, 0.9, 0.95]), 0.8, guards_ok, lambda rows: asked.append(rows.tolist()) or rows * 0.0)
    assert asked == [[1, 3, 4], [1, 4]]
    # On the lookup path, a neighbour below the threshold is never parsed.
    monkeypatch.setattr(guards, "parse", lambda _: pytest.fail("parsed"))
    assert refusal("a?", "b?", 0.5, True, SHIPPED.verifier, 0.8) == "below threshold"


def test_the_verifier_decides_the_pairs_the_rule_hands_it() -> None:
    pairs = [Pair("Is measles contagious?", "Is measles not contagious?", 0), *(Pair(a, b, 1) for a, b in PARAPHRASES)]
    asks = pairs_asks(pairs, angled(pairs, np.array([0.9, 0.9, 0.79, 0.85])))
    # The negation guard refuses the first, the second is below 0.8, the third is the exact tier's.
    assert verifier_decides(asks, 0.8, use_guards=True).tolist() == [False, True, False, False]
    assert verifier_decides(asks, 0.8, use_guards=False).tolist() == [True, True, False, False]
