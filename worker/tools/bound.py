"""How low the precision of served answers can be, given what was measured: a one-sided lower confidence bound.

Labelled pairs are not independent draws. Paraphrase groups share questions (Quora asks "How do I lose weight?"
in dozens of pairs), so hits come in groups that tend to be right together or wrong together, and n hits carry
less evidence than n coin flips. A binomial interval on the hits (Clopper-Pearson) is then too narrow.

The bound used here is Korn and Graubard's (1998) for proportions from clustered samples: the Clopper-Pearson
bound computed at an effective number of hits, n / design effect, where the design effect compares the
cluster-robust variance of the precision (a ratio estimator, groups as clusters) with the binomial one. It is
floored at 1, so the bound is never narrower than the binomial one, and scaled by (z / t)^2 with G - 1 degrees
of freedom for G groups, so a few large groups give a wide bound. With 0 or all hits wrong there is no variance
to measure and the design effect is 1, as Korn and Graubard do. Clopper-Pearson rather than a normal
approximation because precision near 1 is exactly where the normal interval fails. docs/calibration.md argues
the choice against a group bootstrap (which puts the bound at 1.0 whenever no hit was wrong) and shows the
coverage; tests/unit/test_bound.py checks both the binomial case and a grouped one.

scipy (the `calibrate` extra) is imported only here, only when a bound is computed: workers never need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
DEFAULT_CONFIDENCE = 0.95
METHOD = "Clopper-Pearson at the Korn-Graubard effective number of hits, groups as clusters"


@dataclass(frozen=True)
class Bound:
    """Precision of a set of hits with its lower confidence bound."""

    lower: float
    precision: float
    hits: int
    right_hits: int
    groups: int
    effective_hits: float
    confidence: float

    def summary(self) -> dict[str, Any]:
        return {
            "precision_lower_bound": round(self.lower, 4), "confidence": self.confidence, "hits": self.hits,
            "groups": self.groups, "effective_hits": round(self.effective_hits, 1),
        }  # fmt: skip


def _stats() -> Any:
    from scipy import stats  # type: ignore[import-untyped]

    return stats


def clopper_pearson_lower(right: Floats, hits: Floats, confidence: float) -> Floats:
    """The exact binomial one-sided lower bound (counts may be fractional: effective counts)."""
    right, hits = np.asarray(right, dtype=np.float64), np.asarray(hits, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lower = _stats().beta.ppf(1 - confidence, right, hits - right + 1)
    out: Floats = np.where(right > 0, np.nan_to_num(lower), 0.0)
    return out


def prefix_bounds(right: Bools, groups: Ints, confidence: float) -> tuple[Floats, Floats, Ints]:
    """The lower bound after each hit of a sequence (hits[:1], hits[:2], ...), as a threshold sweep adds them.

    Returns the bound, the effective number of hits and the number of groups per prefix. The sums the
    cluster variance needs (per group: right hits y, hits n; sum y^2, y n, n^2) grow by one hit at a time.
    """
    r = np.asarray(right, dtype=np.float64)
    n = np.arange(1, len(r) + 1, dtype=np.float64)
    if not len(r):
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
    # Hits and right hits earlier in the sequence in the same group, per hit.
    by_group = np.argsort(groups, kind="stable")
    g = np.asarray(groups)[by_group]
    idx = np.arange(len(g))
    first = np.maximum.accumulate(np.where(np.r_[True, g[1:] != g[:-1]], idx, 0))
    before_right = np.cumsum(r[by_group]) - r[by_group]
    n_before, y_before = np.empty(len(r)), np.empty(len(r))
    n_before[by_group] = idx - first
    y_before[by_group] = before_right - before_right[first]
    y = np.cumsum(r)
    nn = np.cumsum(2 * n_before + 1)
    yy = np.cumsum(r * (2 * y_before + 1))
    yn = np.cumsum(y_before + r * (n_before + 1))
    clusters = np.cumsum(n_before == 0).astype(np.int64)
    p = y / n
    spread = np.maximum(yy - 2 * p * yn + p * p * nn, 0.0)  # sum over groups of (y - p n)^2
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = clusters / np.maximum(clusters - 1, 1) * spread / (n * n)
        design = np.where((p > 0) & (p < 1) & (variance > 0), variance / (p * (1 - p) / n), 1.0)
    stats = _stats()
    z = stats.norm.ppf(confidence)
    t = stats.t.ppf(confidence, np.maximum(clusters - 1, 1))
    # One group tells nothing about how groups vary: it counts as a single hit.
    effective = np.where(clusters > 1, n / np.maximum(design, 1.0) * (z / t) ** 2, np.minimum(n, 1.0))
    return clopper_pearson_lower(p * effective, effective, confidence), effective, clusters


def precision_bound(right: Bools, groups: Ints, confidence: float = DEFAULT_CONFIDENCE) -> Bound:
    """The bound for one set of hits: `right` per hit, `groups` the group id of each hit."""
    if not len(right):
        return Bound(0.0, 1.0, 0, 0, 0, 0.0, confidence)
    lower, effective, clusters = prefix_bounds(right, groups, confidence)
    hits, right_hits = len(right), int(np.sum(right))
    return Bound(float(lower[-1]), right_hits / hits, hits, right_hits, int(clusters[-1]), float(effective[-1]),
                 confidence)  # fmt: skip
