"""Calibration on synthetic pairs: the threshold it writes reaches the target under the serving rule."""

from __future__ import annotations

import numpy as np
import pytest

from worker.tools.calibrate import CalibrationError, calibrate_asks, fit_verifier
from worker.tools.sweep import Asks, counts, curve, served
from worker.verifier import FEATURES


def synthetic(n: int, seed: int = 0) -> Asks:
    """Same-question pairs have larger features than different ones, with overlap: a verifier can rank them."""
    rng = np.random.default_rng(seed)
    right = rng.random(n) < 0.4
    x = rng.normal(0.0, 1.0, (n, len(FEATURES))) + right[:, None] * 0.8
    similarity = np.clip(0.85 + 0.05 * right + rng.normal(0, 0.03, n), 0.8, 0.999)
    x[:, 0] = similarity
    return Asks(questions=[f"q{i}" for i in range(n)], candidates=[f"c{i}" for i in range(n)], similarity=similarity,
                exact=np.zeros(n, dtype=bool), right=right, answerable=right, features=x,
                guard_ok=np.ones(n, dtype=bool))  # fmt: skip


def test_fitted_verifier_ranks_better_than_chance() -> None:
    asks = synthetic(3000)
    verifier = fit_verifier(asks.features[:2000], asks.right[:2000])
    p = verifier.probabilities(asks.features[2000:])
    right = asks.right[2000:]
    assert p[right].mean() > p[~right].mean() + 0.3


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_calibration_reaches_its_target_on_the_held_out_pairs(target: float) -> None:
    asks = synthetic(4000)
    held = np.arange(4000) % 10 < 3
    result = calibrate_asks(asks, held, target, use_verifier=True, min_similarity=0.8)
    verifier = result.config.verifier
    assert verifier is not None and result.config.threshold_redis == 0.8
    # The rule the workers apply, at the written thresholds, reaches the target on the pairs it was chosen on.
    got = counts(asks.subset(held), served(asks.subset(held), 0.8, True, verifier))
    assert got.precision >= target and got.right_hits > 0
    assert result.report()["precision"] == pytest.approx(got.precision, abs=1e-4)
    # And it is the lowest such threshold: one step lower misses the target.
    c = curve(asks.subset(held), "verifier", True, verifier, 0.8)
    lower = np.flatnonzero(c.thresholds < verifier.threshold)
    assert len(lower) == 0 or c.precision[lower[0]] < target


def test_without_a_verifier_the_cosine_threshold_is_swept() -> None:
    asks = synthetic(2000)
    result = calibrate_asks(asks, np.ones(2000, dtype=bool), 0.6, use_verifier=False, min_similarity=0.8)
    t = result.config.threshold_redis
    assert result.config.verifier is None and result.config.threshold_pgvector == t
    assert counts(asks, served(asks, t, True, None)).precision >= 0.6


def test_an_unreachable_target_or_too_few_pairs_is_an_error() -> None:
    asks = synthetic(3000)
    noise = Asks(**{**asks.__dict__, "right": np.random.default_rng(1).random(3000) < 0.4})  # labels unrelated
    with pytest.raises(CalibrationError, match=r"no threshold reaches precision 0\.9 with at least 20 hits"):
        calibrate_asks(noise, np.arange(3000) % 10 < 3, 0.9, use_verifier=True, min_similarity=0.8)
    few = synthetic(100)
    with pytest.raises(CalibrationError, match="--no-verifier"):
        calibrate_asks(few, np.zeros(100, dtype=bool), 0.9, use_verifier=True, min_similarity=0.8)
