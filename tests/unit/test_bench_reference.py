"""The peers benchmark's exhaustive reference and hit-agreement figure, on a fixed set with a known answer."""

from __future__ import annotations

import numpy as np

from bench.reference import MISS, agreement, nearest


def unit(*rows: list[float]) -> np.ndarray:
    v = np.asarray(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def angle(cos: float) -> list[float]:
    """A vector in the x-y plane at cosine `cos` to the x axis."""
    return [cos, float(np.sqrt(1 - cos * cos)), 0.0]


# Entry 0 lies on x, entry 1 on z, entry 2 is a copy of entry 1 (a tie for anything near z).
ENTRIES = unit([1, 0, 0], [0, 0, 1], [0, 0, 1])
QUERIES = unit(
    angle(0.99),  # 0: hits entry 0; the system agrees
    angle(0.95),  # 1: hits entry 0; the system misses it
    [0.0, 0.3, 0.954],  # 2: hits entry 1 or its tie 2; the system serves 2
    angle(0.5),  # 3: a miss; the system hits entry 0 anyway (extra)
    angle(0.2),  # 4: a miss; the system misses too
    angle(0.92),  # 5: hits entry 0; the system serves entry 1 (another, farther entry)
    angle(0.900003),  # 6: a hit by a hair (within float rounding): borderline, a miss is fine
)
SERVED = np.array([0, MISS, 2, 0, MISS, 1, MISS])


def test_nearest_is_the_exhaustive_argmax_in_any_block_size() -> None:
    for block in (1, 2, 100):
        found = nearest(ENTRIES, QUERIES, block=block)
        assert found.index[[0, 1, 3, 4, 5, 6]].tolist() == [0, 0, 0, 0, 0, 0]
        assert found.index[2] in (1, 2)
        np.testing.assert_allclose(found.similarity[[0, 1, 6]], [0.99, 0.95, 0.900003], atol=1e-6)


def test_random_set_matches_brute_force() -> None:
    rng = np.random.default_rng(7)
    entries = unit(*rng.standard_normal((500, 16)).tolist())
    queries = unit(*rng.standard_normal((70, 16)).tolist())
    found = nearest(entries, queries, block=16)
    scores = queries @ entries.T
    assert (found.index == scores.argmax(axis=1)).all()
    np.testing.assert_allclose(found.similarity, scores.max(axis=1), rtol=1e-6)


def test_agreement_counts_each_case_once() -> None:
    ref = nearest(ENTRIES, QUERIES)
    result = agreement(ref, SERVED, ENTRIES, QUERIES, threshold=0.9)
    assert result.reference_hits == 5
    assert result.system_hits == 4
    assert result.agreed == 2  # queries 0 and 2 (the tie counts as the same entry)
    assert result.missed == 1  # query 1
    assert result.other_entry == 1  # query 5
    assert result.extra == 1  # query 3
    assert result.borderline == 1  # query 6
    assert result.fraction == 2 / 5


def test_full_agreement_and_no_hits_at_all() -> None:
    ref = nearest(ENTRIES, QUERIES)
    perfect = np.where(ref.hits(0.9), ref.index, MISS)
    assert agreement(ref, perfect, ENTRIES, QUERIES, 0.9).fraction == 1.0
    # A threshold no query reaches: nobody claims a hit, which is full agreement.
    assert agreement(ref, np.full(len(QUERIES), MISS), ENTRIES, QUERIES, 0.999999).fraction == 1.0
