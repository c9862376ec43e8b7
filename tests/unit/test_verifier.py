"""The verifier: its features, its file format and the shipped profile's decisions. What a check costs is measured by
`make eval` (bench/eval.py), not asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker import guards
from worker.refusal import refusal
from worker.settings import PROFILES_DIR, ProfileConfig, Settings
from worker.verifier import FEATURES, Verifier, features

SHIPPED = ProfileConfig.model_validate_json((PROFILES_DIR / "minilm.json").read_text())


def feats(q: str, c: str, similarity: float = 0.9) -> list[float]:
    return features(guards.parse(q), guards.parse(c), similarity)


def test_features_are_named_and_symmetric() -> None:
    q, c = "How do I learn Python in 30 days?", "What's the fastest way to learn Python?"
    assert len(feats(q, c)) == len(FEATURES) and feats(q, c) == feats(c, q)
    same = dict(zip(FEATURES, feats(q, q), strict=True))
    assert same["jaccard"] == same["containment"] == same["trigram_jaccard"] == 1.0
    assert same["numbers_differ"] == same["negation_differs"] == same["names_missing"] == 0.0


def test_a_profile_file_fitted_on_other_features_or_shapes_is_refused() -> None:
    verifier = SHIPPED.verifier
    assert verifier is not None
    data = verifier.model_dump()
    with pytest.raises(ValidationError, match="refit it with `dejavu calibrate`"):
        Verifier.model_validate({**data, "features": [*FEATURES[:-1], "something_else"]})
    broken = {**data, "networks": [{**data["networks"][0], "w2": [0.0]}]}
    with pytest.raises(ValidationError, match="shapes"):
        Verifier.model_validate(broken)


def test_settings_load_the_profile_file_and_can_turn_the_verifier_off(tmp_path: Path) -> None:
    loaded = Settings().profile().verifier
    assert loaded is not None and SHIPPED.verifier is not None
    assert loaded.model_dump() == SHIPPED.verifier.model_dump()
    assert Settings(verifier=False).profile().verifier is None
    own = tmp_path / "ours.json"
    own.write_text(json.dumps({"threshold_redis": 0.85, "threshold_pgvector": 0.87}))
    profile = Settings(profile_file=own).profile()
    assert (profile.threshold_redis, profile.threshold_pgvector, profile.verifier) == (0.85, 0.87, None)
    # An explicit threshold still wins over the file.
    assert Settings(profile_file=own, threshold_redis=0.9).profile().threshold_redis == 0.9


@pytest.mark.parametrize(
    ("question", "candidate", "similarity"),
    [  # at the cosines minilm gives them
        ("What are the symptoms of glaucoma?", "What are the signs and symptoms of glaucoma?", 0.979),
        ("How do I reduce belly fat?", "How can I lose belly fat?", 0.930),
    ],
)
def test_the_shipped_verifier_serves_plain_paraphrases(question: str, candidate: str, similarity: float) -> None:
    assert refusal(question, candidate, similarity, True, SHIPPED.verifier) is None


@pytest.mark.parametrize(
    ("question", "candidate", "reason"),
    [
        ("Is measles contagious?", "Is measles not contagious?", "guard: negation"),
        ("What is the best phone under 15000?", "Which is the best laptop under 50000?", "guard: number"),
        ("What is the meaning of life?", "What is the meaning of this dream?", "verifier"),
        ("How do I learn Python?", "Should I learn Python or Java first?", "verifier"),
        ("How can I make money online?", "How can I make money online as a teenager in India?", "verifier"),
    ],
)
def test_the_shipped_verifier_refuses_other_questions(question: str, candidate: str, reason: str) -> None:
    assert refusal(question, candidate, 0.85, True, SHIPPED.verifier) == reason
