"""The precision's lower confidence bound: exact on independent hits, wide enough on grouped ones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from worker.tools.bound import clopper_pearson_lower, precision_bound, prefix_bounds


def test_clopper_pearson_on_known_binomial_cases() -> None:
    # All n right: the bound solves p^n = 1 - confidence.
    assert clopper_pearson_lower(np.array([20.0]), np.array([20.0]), 0.95)[0] == pytest.approx(0.05 ** (1 / 20))
    # 8 of 10: the lower end of the two-sided 90% Clopper-Pearson interval, 0.4931 in the published tables.
    assert clopper_pearson_lower(np.array([8.0]), np.array([10.0]), 0.95)[0] == pytest.approx(0.4931, abs=1e-4)
    assert clopper_pearson_lower(np.array([0.0]), np.array([10.0]), 0.95)[0] == 0.0


def test_independent_hits_get_the_binomial_bound() -> None:
    right = np.arange(1000) % 10 != 0  # 900 of 1000, each hit its own group
    bound = precision_bound(right, np.arange(1000))
    binomial = clopper_pearson_lower(np.array([900.0]), np.array([1000.0]), 0.95)[0]
    assert bound.precision == 0.9 and bound.hits == 1000 and bound.groups == 1000
    assert binomial - 0.002 < bound.lower <= binomial


def grouped_sample(rng: np.random.Generator, groups: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Groups of `size` hits that share a precision drawn around 0.85: right or wrong together, more or less."""
    p = rng.beta(0.85 * 2, 0.15 * 2, groups)  # intra-group correlation 1/3
    right = rng.random((groups, size)) < p[:, None]
    return right.ravel(), np.repeat(np.arange(groups), size)


def test_grouped_hits_the_binomial_bound_is_too_narrow_and_this_one_is_not() -> None:
    rng = np.random.default_rng(7)
    naive, grouped, runs = 0, 0, 600
    for _ in range(runs):
        right, groups = grouped_sample(rng, groups=60, size=10)
        naive += clopper_pearson_lower(np.array([right.sum()]), np.array([len(right)]), 0.95)[0] <= 0.85
        grouped += precision_bound(right, groups, 0.95).lower <= 0.85
    # The true precision is 0.85: a 95% bound should stay at or below it in ~95% of the samples.
    assert naive / runs < 0.85
    assert grouped / runs >= 0.93


def test_few_large_groups_give_a_wide_bound() -> None:
    right, groups = np.ones(40, dtype=bool), np.repeat([0, 1], 20)
    assert precision_bound(right, groups).lower < 0.5 < precision_bound(right, np.arange(40)).lower
    assert precision_bound(np.ones(5, dtype=bool), np.zeros(5, dtype=np.int64)).lower == pytest.approx(0.05)


def direct(right: np.ndarray, groups: np.ndarray, confidence: float) -> float:
    """The same bound from per-group totals, written out: the incremental sums must agree with it."""
    _, g = np.unique(groups, return_inverse=True)
    y, n = np.bincount(g, weights=right.astype(float)), np.bincount(g).astype(float)
    p, count = y.sum() / n.sum(), len(n)
    variance = count / (count - 1) * ((y - p * n) ** 2).sum() / n.sum() ** 2
    design = max(variance / (p * (1 - p) / n.sum()), 1.0) if 0 < p < 1 else 1.0
    t = stats.t.ppf(confidence, count - 1)
    effective = n.sum() / design * (stats.norm.ppf(confidence) / t) ** 2
    return float(clopper_pearson_lower(np.array([p * effective]), np.array([effective]), confidence)[0])


def test_every_prefix_gets_the_bound_of_its_own_hits() -> None:
    rng = np.random.default_rng(3)
    right, groups = grouped_sample(rng, groups=30, size=4)
    order = rng.permutation(len(right))
    right, groups = right[order], groups[order]
    lower, _, clusters = prefix_bounds(right, groups, 0.9)
    for k in (7, 50, len(right)):
        assert lower[k - 1] == pytest.approx(direct(right[:k], groups[:k], 0.9))
        assert clusters[k - 1] == len(set(groups[:k].tolist()))
