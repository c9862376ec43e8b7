"""Labelled question pairs (`text_a, text_b, label`, 1 = the same question) and what is counted on them.

Shared by `dejavu eval` and `dejavu calibrate`: reading the JSONL, the connected components of label-1 pairs
(replay mode's notion of "the same question", and the groups the precision bound and the cross-validation folds
are made of), and the counts every report is made of.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from schemas.cache import normalize_question


class PairsError(ValueError):
    """The pairs file cannot be used; the message names the line."""


@dataclass(frozen=True, slots=True)
class Pair:
    text_a: str
    text_b: str
    label: int
    # Hard-negative probes carry the kind of difference (negation, number, entity, question_type).
    kind: str | None = None


def read_pairs(path: Path, limit: int | None = None) -> tuple[list[Pair], int]:
    """The first `limit` pairs of a JSONL file, and how many rows were skipped for an empty text (a question
    the cache refuses anyway). A row that is not an object with text_a, text_b and a 0/1 label is an error."""
    pairs: list[Pair] = []
    skipped = 0
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if limit is not None and len(pairs) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                a, b, label = row["text_a"], row["text_b"], row["label"]
            except (ValueError, KeyError, TypeError) as exc:
                raise PairsError(f"{path}:{n}: expected a JSON object with text_a, text_b, label ({exc!r})") from exc
            if not (isinstance(a, str) and isinstance(b, str)) or label not in (0, 1):
                raise PairsError(f"{path}:{n}: text_a and text_b must be strings and label 0 or 1")
            if not (a.strip() and b.strip()):
                skipped += 1
                continue
            kind = row.get("kind")
            pairs.append(Pair(a, b, int(label), kind if isinstance(kind, str) else None))
    if not pairs:
        raise PairsError(f"{path}: no pairs")
    return pairs, skipped


def components(pairs: Iterable[Pair]) -> dict[str, str]:
    """Normalized question -> a representative of its connected component over label-1 pairs."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        a, b = find(normalize_question(p.text_a)), find(normalize_question(p.text_b))
        if p.label == 1 and a != b:
            # The smaller text represents the component, so the split does not depend on the file's order.
            parent[max(a, b)] = min(a, b)
    return {x: find(x) for x in parent}


def numbered(labels: Sequence[str]) -> npt.NDArray[np.int64]:
    """Group ids 0, 1, ... for labels (components), equal labels equal ids."""
    ids: npt.NDArray[np.int64] = np.unique(np.asarray(labels, dtype=object), return_inverse=True)[1].astype(np.int64)
    return ids


def groups(pairs: Sequence[Pair]) -> npt.NDArray[np.int64]:
    """The group of each pair: the component of its text_a. Pairs that share a paraphrase group are judged
    alike, so the precision bound counts groups, not pairs, as its independent draws (worker/tools/bound.py)."""
    comp = components(pairs)
    return numbered([comp[normalize_question(p.text_a)] for p in pairs])


def folds(pairs: Sequence[Pair], k: int) -> npt.NDArray[np.int64]:
    """The cross-validation fold (0 .. k-1) of each pair: whole components, chosen by a hash of their text, so no
    paraphrase group is on both sides of a fit and every run (and `make eval`) splits the same way."""
    comp = components(pairs)

    def bucket(text: str) -> int:
        return int.from_bytes(hashlib.sha256(comp[normalize_question(text)].encode()).digest()[:8]) * k >> 64

    return np.array([bucket(p.text_a) for p in pairs], dtype=np.int64)


@dataclass(frozen=True)
class Counts:
    """Outcomes of asks: a hit is right or wrong, a miss is a lost hit or a right refusal."""

    right_hits: int
    wrong_hits: int
    missed: int  # answerable asks that missed (false negatives)
    refused: int  # unanswerable asks that missed (true negatives)

    @property
    def asks(self) -> int:
        return self.right_hits + self.wrong_hits + self.missed + self.refused

    @property
    def precision(self) -> float:
        hits = self.right_hits + self.wrong_hits
        return self.right_hits / hits if hits else 1.0

    @property
    def recall(self) -> float:
        answerable = self.right_hits + self.missed
        return self.right_hits / answerable if answerable else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def hit_rate(self) -> float:
        return (self.right_hits + self.wrong_hits) / self.asks if self.asks else 0.0

    def summary(self) -> dict[str, float | int]:
        return {
            "precision": round(self.precision, 4), "recall": round(self.recall, 4), "f1": round(self.f1, 4),
            "hit_rate": round(self.hit_rate, 4), "right_hits": self.right_hits, "wrong_hits": self.wrong_hits,
            "missed": self.missed, "refused": self.refused,
        }  # fmt: skip


def count(hit: npt.NDArray[np.bool_], right: npt.NDArray[np.bool_], answerable: npt.NDArray[np.bool_]) -> Counts:
    """Counts from per-ask arrays: whether it hit, whether the hit (if any) was right, whether it was answerable."""
    return Counts(
        right_hits=int((hit & right).sum()),
        wrong_hits=int((hit & ~right).sum()),
        missed=int((~hit & answerable).sum()),
        refused=int((~hit & ~answerable).sum()),
    )
