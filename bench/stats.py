"""Summaries shared by the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pct(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """p50, p90, p99 and max of a list of timings, and their count ({"n": 0} when there are none)."""
    if not len(values):
        return {"n": 0}
    v = np.asarray(values, dtype=float)
    out = {f"p{q}": round(float(np.percentile(v, q)), digits) for q in (50, 90, 99)}
    return out | {"max": round(float(v.max()), digits), "n": len(values)}
