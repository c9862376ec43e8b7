"""The embedder gives a text the same vector whatever else it is embedded with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from worker.embed import Embedder
from worker.settings import Settings

MEDQUAD = Path(__file__).resolve().parents[1] / "data" / "medquad_excerpt.jsonl"


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    settings = Settings()
    e = Embedder(settings.profile(), settings.model_cache_dir)
    e.warm_up()
    return e


def test_a_vector_does_not_depend_on_its_batch(embedder: Embedder) -> None:
    with MEDQUAD.open(encoding="utf-8") as f:
        questions = list(dict.fromkeys(json.loads(line)["question"] for line in f))[:64]
    alone = np.stack([embedder.embed_one(q) for q in questions])
    assert np.allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-5)
    for size in (8, 32):
        # Each question beside others of other lengths, as a backfill chunk holds them.
        batched = np.concatenate([embedder.embed(questions[i : i + size]) for i in range(0, len(questions), size)])
        assert np.einsum("ij,ij->i", alone, batched).min() > 0.9999
    # Different questions do get different vectors (a constant would pass the check above).
    assert np.einsum("ij,ij->i", alone[:-1], alone[1:]).max() < 0.999
