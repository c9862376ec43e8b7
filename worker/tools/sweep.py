"""Offline scoring of asks: what the lookup path would decide at every threshold, in numpy.

The real path (worker/tools/evaluate.py) answers "hit or miss at the configured thresholds" for one setting per
run. To draw curves and to calibrate, each ask's nearest stored question, cosine, guard verdict and verifier
score are computed once with the same embedder, guards and verifier, and the workers' refusal rule
(`worker.refusal.decide`) is applied to whole arrays. `tests/integration/test_eval.py` checks that this agrees
with the real path ask by ask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from schemas.cache import normalize_question
from worker import guards
from worker.embed import Embedder
from worker.refusal import SERVED, VERIFIER, Codes, Rows, decide
from worker.tools.bound import DEFAULT_CONFIDENCE, Bound, precision_bound, prefix_bounds
from worker.tools.pairs import Counts, Pair, components, count, groups, numbered
from worker.verifier import Verifier, features

Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
# Rows of text_a vectors compared with the asks at once in replay mode (bounds memory to ~chunk x entries).
REPLAY_CHUNK = 2048


@dataclass(frozen=True)
class Asks:
    """One row per ask: the question, its nearest stored question and what is known about the pair."""

    questions: list[str]
    candidates: list[str]
    similarity: Floats
    exact: Bools  # the exact tier serves it (same normalized question)
    right: Bools  # the nearest stored question is the same question
    answerable: Bools  # some stored question is the same question
    features: Floats  # worker.verifier.features per row
    guard_ok: Bools
    groups: Ints  # the paraphrase group of the asked question (worker.tools.pairs.groups)

    def subset(self, mask: Bools) -> Asks:
        idx = np.flatnonzero(mask)
        return Asks([self.questions[i] for i in idx], [self.candidates[i] for i in idx], self.similarity[idx],
                    self.exact[idx], self.right[idx], self.answerable[idx], self.features[idx],
                    self.guard_ok[idx], self.groups[idx])  # fmt: skip


def _asks(questions: list[str], candidates: list[str], similarity: Floats, right: Bools, answerable: Bools,
          group_ids: Ints) -> Asks:  # fmt: skip
    both = list(zip(questions, candidates, strict=True))
    exact = np.array([normalize_question(q) == normalize_question(c) for q, c in both])
    parsed = {t: guards.parse(t) for t in {*questions, *candidates}}
    feats = np.array([features(parsed[q], parsed[c], float(s)) for (q, c), s in zip(both, similarity, strict=True)])
    guard_ok = np.array([guards.verdict(parsed[q], parsed[c]).ok for q, c in both], dtype=bool)
    feats = feats.reshape(len(questions), -1)
    return Asks(questions, candidates, similarity, exact, right, answerable, feats, guard_ok, group_ids)


def embed_texts(embedder: Embedder, texts: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
    """Each distinct text embedded once, alone, as a live lookup embeds it. Not in batches: the int8 model
    quantizes activations per batch, so a text's vector moves with its batch mates (cosine off by up to ~0.005),
    enough to put a pair on the other side of a threshold than the real path does."""
    return {t: embedder.embed_one(t) for t in dict.fromkeys(texts)}


def pairs_asks(pairs: Sequence[Pair], vectors: dict[str, npt.NDArray[np.float32]]) -> Asks:
    """Pairs mode: text_a alone in its scope, text_b asked; the nearest is text_a."""
    a = np.stack([vectors[p.text_a] for p in pairs]).astype(np.float64)
    b = np.stack([vectors[p.text_b] for p in pairs]).astype(np.float64)
    labels = np.array([p.label == 1 for p in pairs])
    return _asks([p.text_b for p in pairs], [p.text_a for p in pairs], (a * b).sum(axis=1), labels, labels,
                 groups(pairs))  # fmt: skip


def stored_questions(pairs: Sequence[Pair]) -> list[str]:
    """Replay mode's cache: each text_a once per normalized question, the first one kept (first write wins)."""
    first: dict[str, str] = {}
    for p in pairs:
        first.setdefault(normalize_question(p.text_a), p.text_a)
    return list(first.values())


def asked_questions(pairs: Sequence[Pair]) -> list[str]:
    """Replay mode's asks: each text_b once."""
    return list(dict.fromkeys(p.text_b for p in pairs))


def replay_asks(pairs: Sequence[Pair], vectors: dict[str, npt.NDArray[np.float32]]) -> Asks:
    """Replay mode: every text_a stored in one scope, every text_b asked; the nearest is searched exhaustively."""
    stored, asked = stored_questions(pairs), asked_questions(pairs)
    comp = components(pairs)
    by_norm = {normalize_question(s): i for i, s in enumerate(stored)}
    entries = np.stack([vectors[s] for s in stored])
    nearest = np.empty(len(asked), dtype=np.int64)
    sims = np.empty(len(asked))
    for start in range(0, len(asked), REPLAY_CHUNK):
        chunk = np.stack([vectors[q] for q in asked[start : start + REPLAY_CHUNK]])
        scores = chunk @ entries.T
        nearest[start : start + len(chunk)] = scores.argmax(axis=1)
        sims[start : start + len(chunk)] = scores.max(axis=1)
    for i, q in enumerate(asked):  # the exact tier answers before any vector search
        j = by_norm.get(normalize_question(q))
        if j is not None:
            nearest[i], sims[i] = j, float(entries[j] @ vectors[q])
    stored_components = {comp[normalize_question(s)] for s in stored}
    candidates = [stored[j] for j in nearest]
    asked_components = [comp[normalize_question(q)] for q in asked]
    right = np.array([a == comp[normalize_question(c)] for a, c in zip(asked_components, candidates, strict=True)])
    answerable = np.array([a in stored_components for a in asked_components])
    return _asks(asked, candidates, sims, right, answerable, numbered(asked_components))


def decisions(asks: Asks, threshold: float, use_guards: bool, scores: Callable[[Rows], Floats] | None,
              verifier_threshold: float = 0.0) -> Codes:  # fmt: skip
    """worker.refusal.decide on every ask; `scores` gives the verifier's probabilities for rows (None: no verifier)."""

    def guards_ok(rows: Rows) -> Bools:
        return asks.guard_ok[rows]

    return decide(asks.similarity, threshold, guards_ok if use_guards else None, scores, verifier_threshold, asks.exact)


def verifier_scores(asks: Asks, verifier: Verifier) -> Callable[[Rows], Floats]:
    return lambda rows: verifier.probabilities(asks.features[rows])


def served(asks: Asks, threshold: float, use_guards: bool, verifier: Verifier | None) -> Bools:
    """What the lookup path serves at these thresholds, ask by ask."""
    if verifier is None:
        codes = decisions(asks, threshold, use_guards, None)
    else:
        codes = decisions(asks, threshold, use_guards, verifier_scores(asks, verifier), verifier.threshold)
    result: Bools = codes == SERVED
    return result


def verifier_decides(asks: Asks, threshold: float, use_guards: bool) -> Bools:
    """The asks whose fate a verifier decides (what it is fitted on and swept over): those a verifier that
    refuses everything refuses."""
    result: Bools = decisions(asks, threshold, use_guards, lambda rows: np.zeros(len(rows)), 1.0) == VERIFIER
    return result


def counts(asks: Asks, hit: Bools) -> Counts:
    return count(hit, asks.right, asks.answerable)


def bound(asks: Asks, hit: Bools, confidence: float = DEFAULT_CONFIDENCE) -> Bound:
    """The precision of these hits with its lower confidence bound, the asks' groups as clusters."""
    return precision_bound(asks.right[hit], asks.groups[hit], confidence)


@dataclass(frozen=True)
class Curve:
    """Precision, recall and hit rate at each threshold of one swept value (cosine or verifier probability)."""

    thresholds: Floats
    precision: Floats
    recall: Floats
    hit_rate: Floats
    hits: Ints
    lower: Floats  # the precision's lower confidence bound (worker/tools/bound.py)
    confidence: float

    def cut(self, i: int) -> float:
        """A threshold that serves exactly what point i serves, halfway to the next lower value: a pair's
        similarity computed by Redis in float32 must not fall on the other side of it by rounding."""
        lower = float(self.thresholds[i + 1]) if i + 1 < len(self.thresholds) else float(self.thresholds[i]) - 1e-4
        return (float(self.thresholds[i]) + lower) / 2

    def at(self, threshold: float) -> int:
        """Index of the largest curve threshold at or below `threshold`."""
        return int(np.flatnonzero(self.thresholds >= threshold)[-1])


def curve(asks: Asks, sweep: Literal["cosine", "verifier"], use_guards: bool,
          scores: Callable[[Rows], Floats] | None = None, min_similarity: float = 0.0,
          confidence: float = DEFAULT_CONFIDENCE) -> Curve:  # fmt: skip
    """Sweep the cosine threshold (no verifier), or the verifier's threshold above `min_similarity` with the
    verifier's probabilities from `scores` (verifier_scores, or cross-validated ones).

    Thresholds run from high to low; the point at index i serves everything scoring at or above thresholds[i].
    """
    # Served at every threshold of the sweep, and served at some: the rule at either end of it.
    if sweep == "cosine":
        always = decisions(asks, np.inf, use_guards, None) == SERVED
        eligible = np.flatnonzero((decisions(asks, -np.inf, use_guards, None) == SERVED) & ~always)
        value = asks.similarity[eligible]
    else:
        if scores is None:
            raise ValueError("a verifier sweep needs the verifier's scores")
        decided = verifier_decides(asks, min_similarity, use_guards)
        always = (decisions(asks, min_similarity, use_guards, None) == SERVED) & ~decided
        eligible = np.flatnonzero(decided)
        value = scores(eligible)
    ranked = np.argsort(-value, kind="stable")
    order, vals = eligible[ranked], value[ranked]
    right = asks.right[order]
    base_right, base_hits = int((always & asks.right).sum()), int(always.sum())
    right_hits = base_right + np.cumsum(right)
    hits = base_hits + np.arange(1, len(order) + 1)
    # Only cut between different values: a threshold serves all ties.
    last_of_tie = np.r_[vals[1:] != vals[:-1], True] if len(vals) else np.zeros(0, dtype=bool)
    n, answerable = len(asks.questions), max(int(asks.answerable.sum()), 1)
    sequence = np.r_[np.flatnonzero(always), order]
    lower = prefix_bounds(asks.right[sequence], asks.groups[sequence], confidence)[0][base_hits:]
    return Curve(
        thresholds=vals[last_of_tie],
        precision=(right_hits / hits)[last_of_tie],
        recall=(right_hits / answerable)[last_of_tie],
        hit_rate=(hits / n)[last_of_tie],
        hits=hits[last_of_tie],
        lower=lower[last_of_tie],
        confidence=confidence,
    )
