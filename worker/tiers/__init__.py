"""The cache tiers. Each offers `lookup_*` (nearest candidate or None) and `store`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Candidate:
    """The nearest stored question in a scope; the pipeline decides whether it is served."""

    entry_id: str
    question: str
    answer: str
    similarity: float
    # The stored question's own vector, when the tier returns it (needed to promote an entry).
    vector: npt.NDArray[np.float32] | None = None
