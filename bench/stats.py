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


def machine() -> dict[str, object]:
    """The CPU a result was measured on: int8 inference moves ~2x between AVX2-only and AVX-512 VNNI cores, so
    absolute times only compare within one machine (ratios from one run travel better)."""
    import os
    from pathlib import Path

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = set(fields.get("flags\t\t", fields.get("flags", "")).split())
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
    model = next((v.strip() for k, v in fields.items() if k.strip() == "model name"), "unknown")
    return {"cpu_model": model, "cpu_flags": [f for f in wanted if f in flags], "cores": os.cpu_count()}
