"""The cache tiers and the verbs they share (`Tier`): the pipeline looks up, the write-back stores, forget removes.

Redis (worker/tiers/redis.py) also has the exact tier (`lookup_exact`, by entry id) and the tombstones; pgvector
(worker/tiers/pgvector.py) also runs several verbs in one transaction (`PgTier.transaction`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from schemas.cache import AnswerMeta, CacheEntry

Vector = npt.NDArray[np.float32]
# The tenant and answer of an entry a forget removed.
Owner = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Candidate:
    """The nearest stored question in a scope; the pipeline decides whether it is served."""

    entry_id: str
    question: str
    answer: str
    similarity: float
    # The stored question's own vector, when the tier returns it (needed to promote an entry).
    vector: Vector | None = None
    meta: AnswerMeta = field(default_factory=AnswerMeta)


class Stored(StrEnum):
    """What a tier did with a write-back."""

    STORED = "stored"
    PRESENT = "present"  # first write wins: an entry was there already
    BLOCKED = "blocked"  # the question/answer pair is on the blocklist (feedback)
    FORGOTTEN = "forgotten"  # read before a forget of the entry or its tenant finished


class Tier(Protocol):
    async def lookup_similar(self, scope_id: str, vector: Vector) -> Candidate | None:
        """The nearest stored question in the scope, or None."""
        ...

    async def store(self, entry: CacheEntry, as_of: float) -> Stored:
        """Store unless present, blocklisted, or read (`as_of`) before a forget of it or its tenant finished."""
        ...

    async def forget(self, entry_ids: Sequence[str], tenant: str | None = None) -> list[Owner]:
        """Remove entries (only those of `tenant`, if given); the owner of each entry removed."""
        ...

    async def forget_tenant(self, tenant: str) -> int:
        """Remove every entry of `tenant`; how many."""
        ...

    async def block(self, entry_id: str, answer_hashes: Sequence[str], tenant: str, reason: str | None = None) -> None:
        """Never store these question/answer pairs again; tenant '' blocks them for any tenant."""
        ...
