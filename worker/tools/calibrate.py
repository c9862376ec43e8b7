"""`dejavu calibrate`: fit the verifier on labelled pairs and choose the lowest threshold at which the precision's
lower confidence bound, measured on pairs the verifier was not fitted on, reaches a target.

    read the pairs -> embed every text once -> pairs-mode asks (worker/tools/sweep.py) -> k folds of whole
    paraphrase groups (worker/tools/pairs.py) -> for each fold, fit the verifier on the other folds, on the pairs
    it would decide (worker.refusal), and score this fold's: every pair gets a score from a verifier that never
    saw its group -> sweep the verifier's threshold over those scores: precision, recall and the precision's
    lower bound (worker/tools/bound.py) at every point, in each file -> the operating point (`operating_point`)
    -> refit the verifier on every pair, with that threshold -> write the profile file with what was measured.

With `--no-verifier` nothing is fitted and the cosine threshold itself is swept, on all the pairs.
Everything runs in-process with the serving code's embedder, guards and verifier; no server is needed.
scikit-learn fits and scipy bounds (the `calibrate` extra), imported only here: workers score with numpy.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from worker.embed import Embedder
from worker.refusal import SERVED
from worker.settings import ProfileConfig, Settings
from worker.tools.bound import DEFAULT_CONFIDENCE, METHOD
from worker.tools.pairs import Pair, folds
from worker.tools.sweep import Asks, Curve, bound, counts, curve, decisions, embed_texts, pairs_asks, verifier_decides
from worker.verifier import FEATURES, Network, Verifier

Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
HIDDEN = 16
# Networks averaged: one fit moved recall at the chosen precision by +-0.02 from seed to seed.
NETWORKS = 4
# scikit-learn's Adam, full batch, stopped early on a held-back tenth: on the dev data's held-out folds it kept
# 0.406 of the Quora recall at a 0.85 bound (L-BFGS: 0.386-0.392, minibatch Adam: 0.377; docs/calibration.md).
LEARNING_RATE = 0.01
L2 = 1e-4
VALIDATION_SHARE = 0.1
PATIENCE = 300
MAX_STEPS = 4000
DEFAULT_FOLDS = 5
# Fewer pairs than this in the fitting region and a fitted verifier would mostly learn noise.
MIN_FIT_PAIRS = 200
# A precision measured on fewer hits than this says little: such a threshold is not offered.
MIN_HITS = 20
# Where the search for the threshold starts: every file served at least this share of what its loosest threshold
# serves. Above it, the pairs a verifier is surest of: on Quora, near-identical pairs labelled different
# questions, precision 0.80 at the top 20 hits and 0.94 at the top 500; a run of passing thresholds found among
# them ended at recall 0.01 for some fits.
START_SHARE = 0.02


class CalibrationError(ValueError):
    """The target cannot be reached on this data, or there is too little data; the message says which."""


@dataclass(frozen=True)
class Result:
    config: ProfileConfig
    held_out: Curve  # every pair, at the scores of a verifier that never saw it (none fitted: the cosines)
    index: int  # the chosen point on `held_out`
    by_file: dict[str, dict[str, Any]]  # what the chosen point serves in each file
    pairs: int
    fitted_pairs: int
    folds: int  # 0: nothing fitted

    def report(self) -> dict[str, Any]:
        c, i = self.held_out, self.index
        return {
            "threshold": c.cut(i), "lower_bound": min(f["precision_lower_bound"] for f in self.by_file.values()),
            "confidence": c.confidence, "precision": round(float(c.precision[i]), 4),
            "recall": round(float(c.recall[i]), 4), "hit_rate": round(float(c.hit_rate[i]), 4),
            "hits": int(c.hits[i]), "pairs": self.pairs, "fitted_pairs": self.fitted_pairs, "folds": self.folds,
            "by_file": self.by_file,
        }  # fmt: skip


def fit_verifier(x: Floats, y: Bools, seed: int = 0) -> Verifier:
    """NETWORKS small networks (scikit-learn's MLPClassifier) fitted from different starts on standardized
    features; the workers average their probabilities with numpy (worker/verifier.py).

    Returns threshold 0.5; the caller chooses the real one on pairs this fit never saw.
    """
    from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
    from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]
    from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

    scaler = StandardScaler().fit(x)  # a constant feature (e.g. negation after the guards) keeps scale 1
    z = scaler.transform(x)
    # Full batch: every step sees all the pairs sklearn keeps out of its validation tenth.
    batch = len(y) - math.ceil(VALIDATION_SHARE * len(y))
    networks = []
    # One BLAS thread: OpenBLAS's pool on these small matrices made a fit 50x slower on a busy 2-core machine.
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        # The step cap is a stopping rule here, not a failure.
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(NETWORKS):
            mlp = MLPClassifier((HIDDEN,), alpha=L2, batch_size=batch, learning_rate_init=LEARNING_RATE,
                                max_iter=MAX_STEPS, early_stopping=True, validation_fraction=VALIDATION_SHARE,
                                n_iter_no_change=PATIENCE, random_state=seed + k)  # fmt: skip
            mlp.fit(z, y)
            w1, w2 = mlp.coefs_
            b1, b2 = mlp.intercepts_
            networks.append(Network(w1=_round(w1), b1=_round(b1), w2=_round(w2[:, 0]), b2=round(float(b2[0]), 6)))
    return Verifier(threshold=0.5, features=FEATURES, mean=_round(scaler.mean_), scale=_round(scaler.scale_),
                    networks=networks)  # fmt: skip


def _round(a: Floats) -> Any:
    # Six decimals keep the profile file readable; the scores move by less than 1e-5.
    return np.round(a, 6).tolist()


def cross_fitted(asks: Asks, fold_of: Ints, min_similarity: float, use_guards: bool) -> Floats:
    """The verifier's probability for every pair it decides, from a verifier fitted on the other folds (NaN for
    the pairs the rule settles before the verifier)."""
    decided = verifier_decides(asks, min_similarity, use_guards)
    out = np.full(len(asks.questions), np.nan)
    for k in np.unique(fold_of):
        fit, scored = decided & (fold_of != k), decided & (fold_of == k)
        _check_enough(asks, fit, min_similarity)
        out[scored] = fit_verifier(asks.features[fit], asks.right[fit]).probabilities(asks.features[scored])
    return out


def _check_enough(asks: Asks, fit: Bools, min_similarity: float) -> None:
    if fit.sum() < MIN_FIT_PAIRS or asks.right[fit].sum() < MIN_FIT_PAIRS // 4:
        raise CalibrationError(
            f"only {int(fit.sum())} pairs (of which {int(asks.right[fit].sum())} same-question) at cosine >= "
            f"{min_similarity} to fit a verifier on; give more pairs or calibrate with --no-verifier"
        )


def operating_point(whole: Curve, parts: dict[str, Curve], target: float) -> int:
    """The chosen point on `whole`. Thresholds are tried from the strictest down, from where every part (file)
    has START_SHARE of the hits of its loosest threshold and MIN_HITS: the first run of thresholds at which every
    part's lower bound reaches the target is followed to its end, and its last threshold is taken. A threshold
    further down that passes again after one that failed is not: as long as precision falls as the threshold
    loosens past the start of the run, the chosen bound keeps its confidence although many thresholds were tried
    (docs/calibration.md). Requiring the bound in every file keeps easy data from carrying hard data.
    """
    hits, lower, start_at = {}, {}, {}
    for name, c in parts.items():
        # The part's point serving, within the part, what the whole's point serves: its last threshold above.
        j = np.searchsorted(-c.thresholds, -whole.thresholds, side="right") - 1
        hits[name] = np.where(j >= 0, c.hits[np.maximum(j, 0)], 0)
        lower[name] = np.where(j >= 0, c.lower[np.maximum(j, 0)], 0.0)
        start_at[name] = max(MIN_HITS, START_SHARE * (int(c.hits[-1]) if len(c.hits) else 0))
    ready = np.logical_and.reduce([hits[n] >= start_at[n] for n in parts])
    passes = ready & np.logical_and.reduce([b >= target for b in lower.values()])
    if not passes.any():
        best = {n: float(b[ready].max(initial=0.0)) for n, b in lower.items()}
        worst = min(best, key=lambda n: best[n])
        raise CalibrationError(
            f"no threshold reaches a {whole.confidence:.0%} lower bound of precision of {target} with at least "
            f"{MIN_HITS} hits in every file ({worst}: the best bound is {best[worst]:.3f})"
        )
    start = int(np.flatnonzero(passes)[0])
    failed = np.flatnonzero(~passes[start:])
    return start + (int(failed[0]) if len(failed) else len(passes) - start) - 1


def calibrate_asks(
    asks: Asks,
    fold_of: Ints,
    source: Sequence[str],
    target_precision: float,
    use_verifier: bool,
    min_similarity: float,
    use_guards: bool = True,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Result:
    """Fit (unless `use_verifier` is off) and choose the threshold; raises CalibrationError when out of reach.

    `fold_of`: each pair's cross-validation fold; `source`: the file each pair comes from.
    """
    files = np.asarray(source)
    names = list(dict.fromkeys(source))
    if use_verifier:
        oof = cross_fitted(asks, fold_of, min_similarity, use_guards)

        def sweep(a: Asks, rows_of: Ints) -> Curve:
            return curve(a, "verifier", use_guards, lambda rows: oof[rows_of[rows]], min_similarity, confidence)
    else:

        def sweep(a: Asks, rows_of: Ints) -> Curve:
            return curve(a, "cosine", use_guards, confidence=confidence)

    everything = np.arange(len(asks.questions))
    whole = sweep(asks, everything)
    parts = {n: sweep(asks.subset(files == n), np.flatnonzero(files == n)) for n in names}
    i = operating_point(whole, parts, target_precision)
    cut = whole.cut(i)
    if use_verifier:
        hit = decisions(asks, min_similarity, use_guards, lambda rows: oof[rows], cut) == SERVED
        decided = verifier_decides(asks, min_similarity, use_guards)
        verifier = fit_verifier(asks.features[decided], asks.right[decided]).model_copy(update={"threshold": cut})
        config = ProfileConfig(threshold_redis=min_similarity, threshold_pgvector=min_similarity, verifier=verifier)
        fitted, k = int(decided.sum()), len(np.unique(fold_of))
    else:
        hit = decisions(asks, cut, use_guards, None) == SERVED
        config, fitted, k = ProfileConfig(threshold_redis=cut, threshold_pgvector=cut), 0, 0
    by_file = {}
    for n in names:
        part = files == n
        a = asks.subset(part)
        c, b = counts(a, hit[part]), bound(a, hit[part], confidence)
        by_file[n] = b.summary() | {"precision": round(c.precision, 4), "recall": round(c.recall, 4),
                                    "pairs": int(part.sum())}  # fmt: skip
    return Result(config, whole, i, by_file, len(asks.questions), fitted, k)


def calibrate(files: Sequence[tuple[Path, list[Pair]]], target_precision: float, settings: Settings,
              use_verifier: bool = True, min_similarity: float = 0.8, confidence: float = DEFAULT_CONFIDENCE,
              n_folds: int = DEFAULT_FOLDS) -> Result:  # fmt: skip
    """Embed, fit and choose; the returned config carries where it came from."""
    profile = settings.profile(calibrated=False)
    embedder = Embedder(profile, settings.model_cache_dir, settings.embed_threads)
    pairs = [p for _, ps in files for p in ps]
    source = [path.name for path, ps in files for _ in ps]
    vectors = embed_texts(embedder, [t for p in pairs for t in (p.text_a, p.text_b)])
    asks = pairs_asks(pairs, vectors)
    result = calibrate_asks(asks, folds(pairs, n_folds), source, target_precision, use_verifier, min_similarity,
                            settings.guards, confidence)  # fmt: skip
    held_out = "folds of paraphrase groups hashed (worker.tools.pairs.folds)" if use_verifier else "none"
    provenance = {
        "pairs_files": list(dict.fromkeys(source)), "target_precision": target_precision, "guards": settings.guards,
        "held_out": result.report() | {"split": held_out, "bound": METHOD},
        "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    config = result.config.model_copy(update={"calibration": provenance})
    return Result(config, result.held_out, result.index, result.by_file, result.pairs, result.fitted_pairs,
                  result.folds)  # fmt: skip


def write(config: ProfileConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.model_dump(mode="json", exclude_none=True), indent=1) + "\n", encoding="utf-8")
