"""The refusal rule: whether a neighbour found in a tier is served, and if not, why.

One function for every caller: the lookup path asks it about one neighbour (`refusal`), the
offline tools about thousands of asks at once (worker/tools/sweep.py, worker/tools/calibrate.py), so what
`dejavu eval` and `dejavu calibrate` measure is the rule the workers apply. The first step that applies decides:

    1. the exact tier answered (the same normalized question): served;
    2. cosine below the tier's threshold: not similar enough;
    3. cosine 1.0, the same vector (a case or spacing twin of the stored question): served as is;
    4. a guard objects (worker/guards.py): refused;
    5. the verifier's probability is below its threshold (worker/verifier.py): refused;
    6. otherwise served.

The guards and the verifier cost a parse and a feature vector per pair: they are asked only about the rows that
reach them, so a neighbour below the threshold is never parsed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from worker import guards
from worker.verifier import Verifier

Rows = npt.NDArray[np.intp]
Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
Codes = npt.NDArray[np.int8]

# The verdict per row.
SERVED, NOT_SIMILAR, GUARD, VERIFIER = 0, 1, 2, 3


def decide(
    similarity: Floats,
    threshold: float,
    guards_ok: Callable[[Rows], Bools] | None,
    scores: Callable[[Rows], Floats] | None,
    verifier_threshold: float = 0.0,
    exact: Bools | None = None,
) -> Codes:
    """SERVED, NOT_SIMILAR, GUARD or VERIFIER per row.

    `guards_ok(rows)` says whether the guards let each of those rows through and `scores(rows)` gives the
    verifier's probability for them; either is None when that check is off. `exact` marks the rows the exact
    tier answers (offline only: on the lookup path the exact tier returns before any neighbour is looked at).
    """
    sim = np.asarray(similarity, dtype=np.float64)
    out = np.where(sim >= threshold, SERVED, NOT_SIMILAR).astype(np.int8)
    checked = (out == SERVED) & (sim < 1.0)
    if exact is not None:
        out[exact] = SERVED
        checked &= ~exact
    rows = np.flatnonzero(checked)
    if guards_ok is not None and len(rows):
        refused = ~guards_ok(rows)
        out[rows[refused]] = GUARD
        rows = rows[~refused]
    if scores is not None and len(rows):
        out[rows[scores(rows) < verifier_threshold]] = VERIFIER
    return out


NOT_SIMILAR_REASON = "below threshold"


def refusal(
    question: str,
    candidate: str,
    similarity: float,
    use_guards: bool,
    verifier: Verifier | None,
    threshold: float = -math.inf,
) -> str | None:
    """Why a neighbour must not be served ("below threshold", "guard: negation", "verifier"), or None.

    `decide` for one neighbour; the questions are parsed only if the rule gets to the guards.
    The default threshold is for callers that compared the cosine already.
    """
    parsed = functools.cache(lambda: (guards.parse(question), guards.parse(candidate)))
    verdict = functools.cache(lambda: guards.verdict(*parsed()))

    def guards_ok(_: Rows) -> Bools:
        return np.array([verdict().ok])

    def scores(_: Rows) -> Floats:
        assert verifier is not None
        return np.array([verifier.score(*parsed(), similarity)])

    code = decide(
        np.array([similarity]),
        threshold,
        guards_ok if use_guards else None,
        scores if verifier is not None else None,
        verifier.threshold if verifier is not None else 0.0,
    )[0]
    if code == NOT_SIMILAR:
        return NOT_SIMILAR_REASON
    if code == GUARD:
        return f"guard: {verdict().reason}"
    return "verifier" if code == VERIFIER else None
