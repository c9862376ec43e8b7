"""`dejavu calibrate`: fit the verifier on labelled pairs and choose the lowest threshold that reaches a precision.

    read the pairs -> embed every text once -> pairs-mode asks (worker/tools/sweep.py) -> split by connected
    components (worker/tools/pairs.py: HELD_OUT_SHARE of them held out) -> fit the verifier with numpy on the
    rest, on the pairs it would actually see (cosine at or above the floor, guards passed) -> on the held-out
    pairs, the lowest verifier threshold whose precision reaches the target -> write the profile file.

With `--no-verifier` nothing is fitted and the cosine threshold itself is swept, on all the pairs.
Everything runs in-process with the serving code's embedder, guards and verifier; no server is needed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from worker.embed import Embedder
from worker.settings import ProfileConfig, Settings
from worker.tools.pairs import Pair, held_out
from worker.tools.sweep import Asks, Curve, curve, embed_texts, pairs_asks, verifier_decides
from worker.verifier import FEATURES, Network, Verifier

Floats = np.ndarray[Any, np.dtype[np.float64]]
HIDDEN = 16
# Networks averaged: one early-stopped fit moved recall at the chosen precision by +-0.02 from seed to seed.
NETWORKS = 4
# Fewer pairs than this in the fitting region and a fitted verifier would mostly learn noise.
MIN_FIT_PAIRS = 200
# A precision measured on fewer hits than this says little: such a threshold is not offered.
MIN_HITS = 20
MAX_STEPS = 4000
PATIENCE = 300
LEARNING_RATE = 0.01
L2 = 1e-4
VALIDATION_SHARE = 0.1


class CalibrationError(ValueError):
    """The target cannot be reached on this data, or there is too little data; the message says which."""


@dataclass(frozen=True)
class Result:
    config: ProfileConfig
    held_out: Curve
    index: int  # the chosen point on `held_out`
    pairs: int
    fitted_pairs: int

    def report(self) -> dict[str, Any]:
        c, i = self.held_out, self.index
        return {
            "threshold": c.cut(i), "precision": round(float(c.precision[i]), 4),
            "recall": round(float(c.recall[i]), 4), "hit_rate": round(float(c.hit_rate[i]), 4),
            "pairs": self.pairs, "fitted_pairs": self.fitted_pairs,
        }  # fmt: skip


def fit_verifier(x: Floats, y: np.ndarray[Any, np.dtype[np.bool_]], seed: int = 0) -> Verifier:
    """NETWORKS small networks, each full-batch Adam on log loss with L2 from its own start, stopped early on its
    own held-back tenth; their probabilities are averaged.

    Returns threshold 0.5; the caller chooses the real one on pairs this fit never saw.
    """
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a constant feature (e.g. negation after the guards) carries nothing
    z = (x - mean) / scale
    with threadpool_limits(limits=1, user_api="blas"):
        networks = [_fit(z, y.astype(np.float64), np.random.default_rng(seed + k)) for k in range(NETWORKS)]
    return Verifier(threshold=0.5, features=FEATURES, mean=_round(mean), scale=_round(scale), networks=networks)


def _fit(z: Floats, target: Floats, rng: np.random.Generator) -> Network:
    n, d = z.shape
    valid = np.zeros(n, dtype=bool)
    valid[rng.choice(n, size=max(1, int(n * VALIDATION_SHARE)), replace=False)] = True
    params = [rng.normal(0, np.sqrt(2 / d), (d, HIDDEN)), np.zeros(HIDDEN), rng.normal(0, np.sqrt(1 / HIDDEN), HIDDEN),
              np.zeros(())]  # fmt: skip
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    best = (np.inf, [p.copy() for p in params])
    since_best = 0
    for step in range(1, MAX_STEPS + 1):
        grads = _gradients(params, z[~valid], target[~valid])
        for i, g in enumerate(grads):
            m, v = moments[i]
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            moments[i] = (m, v)
            params[i] = params[i] - LEARNING_RATE * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
        loss = _log_loss(params, z[valid], target[valid])
        if loss < best[0] - 1e-6:
            best, since_best = (loss, [p.copy() for p in params]), 0
        else:
            since_best += 1
            if since_best >= PATIENCE:
                break
    w1, b1, w2, b2 = best[1]
    return Network(w1=_round(w1), b1=_round(b1), w2=_round(w2), b2=float(np.round(b2, 6)))


def _forward(params: list[Floats], z: Floats) -> tuple[Floats, Floats]:
    hidden = np.maximum(z @ params[0] + params[1], 0.0)
    return hidden, 1.0 / (1.0 + np.exp(-(hidden @ params[2] + params[3])))


def _gradients(params: list[Floats], z: Floats, y: Floats) -> list[Floats]:
    hidden, p = _forward(params, z)
    d = (p - y) / len(y)
    dh = np.outer(d, params[2]) * (hidden > 0)
    return [z.T @ dh + L2 * params[0], dh.sum(axis=0), hidden.T @ d + L2 * params[2], np.asarray(d.sum())]


def _log_loss(params: list[Floats], z: Floats, y: Floats) -> float:
    p = np.clip(_forward(params, z)[1], 1e-9, 1 - 1e-9)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _round(a: Floats) -> Any:
    # Six decimals keep the profile file readable; the scores move by less than 1e-5.
    return np.round(a, 6).tolist()


def calibrate_asks(asks: Asks, held: np.ndarray[Any, np.dtype[np.bool_]], target_precision: float,
                   use_verifier: bool, min_similarity: float, use_guards: bool = True) -> Result:  # fmt: skip
    """Fit (unless `use_verifier` is off) and choose the threshold; raises CalibrationError when out of reach."""
    if not use_verifier:
        c = curve(asks, "cosine", use_guards)
        i = _reach(c, target_precision)
        t = c.cut(i)
        return Result(ProfileConfig(threshold_redis=t, threshold_pgvector=t), c, i, len(asks.questions), 0)
    fit = ~held & verifier_decides(asks, min_similarity, use_guards)
    if fit.sum() < MIN_FIT_PAIRS or asks.right[fit].sum() < MIN_FIT_PAIRS // 4:
        raise CalibrationError(
            f"only {int(fit.sum())} pairs (of which {int(asks.right[fit].sum())} same-question) at cosine >= "
            f"{min_similarity} to fit a verifier on; give more pairs or calibrate with --no-verifier"
        )
    verifier = fit_verifier(asks.features[fit], asks.right[fit])
    c = curve(asks.subset(held), "verifier", use_guards, verifier, min_similarity)
    i = _reach(c, target_precision)
    verifier = verifier.model_copy(update={"threshold": c.cut(i)})
    config = ProfileConfig(threshold_redis=min_similarity, threshold_pgvector=min_similarity, verifier=verifier)
    return Result(config, c, i, len(asks.questions), int(fit.sum()))


def _reach(c: Curve, target: float) -> int:
    i = c.lowest_reaching(target, MIN_HITS)
    if i is None:
        enough = c.hits >= MIN_HITS
        best = float(c.precision[enough].max()) if enough.any() else 0.0
        raise CalibrationError(
            f"no threshold reaches precision {target} with at least {MIN_HITS} hits on these pairs "
            f"(the best is {best:.3f})"
        )
    return i


def calibrate(files: Sequence[Path], pairs: list[Pair], target_precision: float, settings: Settings,
              use_verifier: bool = True, min_similarity: float = 0.8) -> Result:  # fmt: skip
    """Embed, fit and choose; the returned config carries where it came from."""
    profile = settings.profile(calibrated=False)
    embedder = Embedder(profile, settings.model_cache_dir, settings.embed_threads)
    vectors = embed_texts(embedder, [t for p in pairs for t in (p.text_a, p.text_b)])
    asks = pairs_asks(pairs, vectors)
    held = held_out(pairs) if use_verifier else np.ones(len(pairs), dtype=bool)
    result = calibrate_asks(asks, held, target_precision, use_verifier, min_similarity, settings.guards)
    provenance = {
        "pairs_files": [f.name for f in files], "target_precision": target_precision, "guards": settings.guards,
        "held_out": result.report() | {"split": "components hashed (worker.tools.pairs)" if use_verifier else "none"},
        "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    config = result.config.model_copy(update={"calibration": provenance})
    return Result(config, result.held_out, result.index, result.pairs, result.fitted_pairs)


def write(config: ProfileConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.model_dump(mode="json", exclude_none=True), indent=1) + "\n", encoding="utf-8")
