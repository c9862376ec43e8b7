"""The exhaustive reference: which stored entry each query should hit, and how far a system agrees with it.

Every vector is a unit vector, so cosine similarity is a dot product. A query "should hit" when its nearest
stored entry has similarity >= the threshold, exactly as the cache tiers decide (1 - cosine distance).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
Indices = npt.NDArray[np.int64]
# A system's answer for a query: the index of the entry it served, or MISS.
MISS = -1
# Similarities this close are the same to float32 arithmetic (Redis, pgvector and numpy each round their own
# way): two entries this close to the query are a tie, and a best similarity this close to the threshold is
# "borderline", where either decision agrees.
TOLERANCE = 1e-5


@dataclass(frozen=True)
class Nearest:
    index: Indices  # nearest entry per query
    similarity: npt.NDArray[np.float32]  # its cosine similarity

    def hits(self, threshold: float) -> npt.NDArray[np.bool_]:
        return self.similarity >= threshold


def nearest(entries: Vectors, queries: Vectors, block: int = 1024) -> Nearest:
    """The nearest entry of each query by exhaustive search (blocks of queries bound the memory)."""
    index = np.empty(len(queries), dtype=np.int64)
    sim = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(queries), block):
        scores = queries[start : start + block] @ entries.T
        best = scores.argmax(axis=1)
        index[start : start + block] = best
        sim[start : start + block] = scores[np.arange(len(best)), best]
    return Nearest(index, sim)


@dataclass(frozen=True)
class Agreement:
    """How a system's hits compare with the reference's, over one set of queries."""

    reference_hits: int
    system_hits: int
    agreed: int  # both hit, on the reference's entry or one tied with it
    missed: int  # the reference hits, the system does not
    other_entry: int  # both hit, but the system served a farther entry
    extra: int  # the system hits where the reference does not
    borderline: int  # best similarity within TOLERANCE of the threshold: a hit or a miss there both agree

    @property
    def fraction(self) -> float:
        """Agreed hits over every hit either side claims (1.0 when neither claims any)."""
        claimed = self.agreed + self.missed + self.other_entry + self.extra
        return self.agreed / claimed if claimed else 1.0

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "fraction": round(self.fraction, 6)}


def agreement(reference: Nearest, served: Indices, entries: Vectors, queries: Vectors, threshold: float) -> Agreement:
    """Compare `served` (entry index per query, or MISS) with the reference's decisions."""
    ref_hit = reference.hits(threshold)
    sys_hit = served != MISS
    # The similarity of what the system served, recomputed here so that every system is judged alike.
    served_sim = np.einsum("ij,ij->i", queries, entries[np.where(sys_hit, served, 0)])
    border = np.abs(reference.similarity - threshold) <= TOLERANCE
    may_hit = ref_hit | border
    agreed = sys_hit & may_hit & (served_sim >= reference.similarity - TOLERANCE)
    return Agreement(
        reference_hits=int(ref_hit.sum()),
        system_hits=int(sys_hit.sum()),
        agreed=int(agreed.sum()),
        missed=int((ref_hit & ~border & ~sys_hit).sum()),
        other_entry=int((sys_hit & may_hit & ~agreed).sum()),
        extra=int((sys_hit & ~may_hit).sum()),
        borderline=int(border.sum()),
    )
