"""Calibration on synthetic pairs: the threshold it writes has the target's lower bound on held-out folds, in every
file, under the serving rule; the verifier the workers get is refitted on everything."""

from __future__ import annotations

import numpy as np
import pytest

from worker.refusal import SERVED
from worker.tools import calibrate
from worker.tools.calibrate import (
    MIN_HITS,
    START_SHARE,
    CalibrationError,
    calibrate_asks,
    cross_fitted,
    fit_verifier,
    operating_point,
)
from worker.tools.sweep import Asks, Curve, bound, counts, decisions, served, verifier_decides
from worker.verifier import FEATURES


@pytest.fixture(autouse=True)
def quick_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fits stop sooner here: these tests are about what calibration does with a verifier, not its best fit."""
    monkeypatch.setattr(calibrate, "PATIENCE", 30)
    monkeypatch.setattr(calibrate, "MAX_STEPS", 500)


def synthetic(n: int, seed: int = 0, separation: float = 0.8, group_size: int = 1) -> Asks:
    """Same-question pairs have larger features than different ones, with overlap: a verifier can rank them.
    Pairs come in groups of `group_size` that share their label and most of their features."""
    rng = np.random.default_rng(seed)
    groups = np.arange(n) // group_size
    right = (rng.random(groups.max() + 1) < 0.4)[groups]
    shared = rng.normal(0.0, 1.0, (groups.max() + 1, len(FEATURES)))[groups]
    x = shared + 0.3 * rng.normal(0.0, 1.0, (n, len(FEATURES))) + right[:, None] * separation
    similarity = np.clip(0.85 + 0.05 * right + rng.normal(0, 0.03, n), 0.8, 0.999)
    x[:, 0] = similarity
    return Asks(questions=[f"q{i}" for i in range(n)], candidates=[f"c{i}" for i in range(n)], similarity=similarity,
                exact=np.zeros(n, dtype=bool), right=right, answerable=right, features=x,
                guard_ok=np.ones(n, dtype=bool), groups=groups.astype(np.int64))  # fmt: skip


def test_fitted_verifier_ranks_better_than_chance() -> None:
    asks = synthetic(3000)
    verifier = fit_verifier(asks.features[:2000], asks.right[:2000])
    p = verifier.probabilities(asks.features[2000:])
    right = asks.right[2000:]
    assert p[right].mean() > p[~right].mean() + 0.3


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_the_bound_on_held_out_folds_reaches_the_target(target: float) -> None:
    asks = synthetic(3000)
    fold_of = np.arange(3000) % 3
    result = calibrate_asks(asks, fold_of, ["a.jsonl"] * 3000, target, use_verifier=True, min_similarity=0.8)
    verifier, report = result.config.verifier, result.report()
    assert verifier is not None and result.config.threshold_redis == 0.8 and report["folds"] == 3
    assert report["lower_bound"] >= target and report["hits"] >= MIN_HITS
    # Recomputed by hand: each pair scored by the verifier fitted without its fold, the workers' rule at the
    # written threshold.
    oof = cross_fitted(asks, fold_of, 0.8, True)
    hit = decisions(asks, 0.8, True, lambda rows: oof[rows], verifier.threshold) == SERVED
    b = bound(asks, hit)
    assert (b.hits, round(b.lower, 4)) == (report["hits"], report["lower_bound"])
    assert counts(asks, hit).recall == pytest.approx(report["recall"], abs=1e-4)
    # The next threshold down misses the target.
    c = result.held_out
    assert result.index + 1 == len(c.lower) or c.lower[result.index + 1] < target
    # The workers get a verifier refitted on every pair it decides, with that threshold.
    decided = verifier_decides(asks, 0.8, True)
    assert result.fitted_pairs == decided.sum() == 3000
    refit = fit_verifier(asks.features[decided], asks.right[decided])
    assert verifier.networks == refit.networks


def test_grouped_pairs_cost_recall_for_the_same_bound() -> None:
    grouped = synthetic(3000, group_size=10)
    alone = Asks(**{**grouped.__dict__, "groups": np.arange(3000)})
    fold_of = grouped.groups % 3
    args = (fold_of, ["a.jsonl"] * 3000, 0.9)
    strict = calibrate_asks(grouped, *args, use_verifier=True, min_similarity=0.8).report()
    naive = calibrate_asks(alone, *args, use_verifier=True, min_similarity=0.8).report()
    assert strict["hits"] < naive["hits"] and strict["recall"] < naive["recall"]


def test_every_file_reaches_the_target_on_its_own() -> None:
    easy, hard = synthetic(1200, seed=1, separation=2.0), synthetic(1200, seed=2, separation=0.6)
    both = Asks(**{k: (v + getattr(hard, k) if isinstance(v, list) else np.r_[v, getattr(hard, k)])
                   for k, v in easy.__dict__.items()})  # fmt: skip
    both = Asks(**{**both.__dict__, "groups": np.arange(2400)})
    source = ["easy.jsonl"] * 1200 + ["hard.jsonl"] * 1200
    result = calibrate_asks(both, np.arange(2400) % 3, source, 0.9, use_verifier=True, min_similarity=0.8)
    by_file = result.report()["by_file"]
    assert min(f["precision_lower_bound"] for f in by_file.values()) >= 0.9
    assert by_file["hard.jsonl"]["recall"] < by_file["easy.jsonl"]["recall"]
    # Pooled, the easy file would have carried the hard one to a lower threshold.
    pooled = calibrate_asks(both, np.arange(2400) % 3, ["all"] * 2400, 0.9, use_verifier=True, min_similarity=0.8)
    assert pooled.report()["threshold"] < result.report()["threshold"]


def test_thresholds_are_tried_from_the_strictest_down_and_the_first_failure_stops() -> None:
    def line(lower: list[float], hits: list[int]) -> Curve:
        n = len(lower)
        t = np.linspace(0.9, 0.1, n)
        return Curve(t, np.ones(n), np.zeros(n), np.zeros(n), np.array(hits), np.array(lower), 0.95)

    c = line([0.99, 0.7, 0.95, 0.93, 0.88, 0.92, 0.7], [5, 20, 30, 40, 50, 60, 70])
    # The run starts at the first threshold with 20 hits that passes, and ends before 0.88: 0.92 further down
    # is not taken.
    assert operating_point(c, {"f": c}, 0.9) == 3
    # Before START_SHARE of the loosest threshold's hits no run starts: the strictest thresholds' few hits
    # (0.95 here, then 0.8) would end it at once.
    top = line([0.95, 0.8, 0.95, 0.93, 0.8], [20, 30, 1000, 2000, 3000])
    assert 30 < START_SHARE * 3000 <= 1000 and operating_point(top, {"f": top}, 0.9) == 3
    # Every part must pass: here the second file's bound ends the run one threshold earlier.
    other = line([0.95, 0.95, 0.95, 0.85, 0.95], [20, 30, 40, 50, 60])
    assert operating_point(top, {"f": top, "g": other}, 0.9) == 2
    never = line([0.8, 0.88, 0.85], [20, 30, 40])
    with pytest.raises(CalibrationError, match=r"\(f: the best bound is 0\.880\)"):
        operating_point(never, {"f": never}, 0.9)
    few = line([1.0, 1.0], [5, 10])
    with pytest.raises(CalibrationError, match="at least 20 hits in every file"):
        operating_point(few, {"f": few}, 0.9)


def test_without_a_verifier_the_cosine_threshold_is_swept() -> None:
    asks = synthetic(2000)
    result = calibrate_asks(asks, np.zeros(2000, dtype=np.int64), ["a"] * 2000, 0.6, use_verifier=False,
                            min_similarity=0.8)  # fmt: skip
    t = result.config.threshold_redis
    assert result.config.verifier is None and result.config.threshold_pgvector == t and result.folds == 0
    assert bound(asks, served(asks, t, True, None)).lower >= 0.6


def test_an_unreachable_target_or_too_few_pairs_is_an_error() -> None:
    asks = synthetic(1500)
    noise = Asks(**{**asks.__dict__, "right": np.random.default_rng(1).random(1500) < 0.4})  # labels unrelated
    with pytest.raises(CalibrationError, match=r"lower bound of precision of 0\.9 with at least 20 hits"):
        calibrate_asks(noise, np.arange(1500) % 3, ["a"] * 1500, 0.9, use_verifier=True, min_similarity=0.8)
    few = synthetic(100)
    with pytest.raises(CalibrationError, match="--no-verifier"):
        calibrate_asks(few, np.arange(100) % 3, ["a"] * 100, 0.9, use_verifier=True, min_similarity=0.8)
