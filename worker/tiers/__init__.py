"""The cache tiers. Each offers `lookup_*` (nearest candidate or None), `store`, and removal for `forget`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from schemas.cache import AnswerMeta


@dataclass(frozen=True, slots=True)
class Candidate:
    """The nearest stored question in a scope; the pipeline decides whether it is served."""

    entry_id: str
    question: str
    answer: str
    similarity: float
    # The stored question's own vector, when the tier returns it (needed to promote an entry).
    vector: npt.NDArray[np.float32] | None = None
    meta: AnswerMeta = field(default_factory=AnswerMeta)


class Stored(StrEnum):
    """What a tier did with a write-back."""

    STORED = "stored"
    PRESENT = "present"  # first write wins: an entry was there already
    BLOCKED = "blocked"  # the question/answer pair is on the blocklist (feedback)
    FORGOTTEN = "forgotten"  # read before a forget of the entry or its tenant finished
