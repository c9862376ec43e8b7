"""The entries and questions every system in the peers benchmark gets, and a disk cache of their embeddings.

Entries: MedQuAD questions with distinct text plus the `text_a` of Quora duplicate pairs. Queries: exact re-asks
of stored entries, the `text_b` paraphrases of the stored Quora questions, and misses (Quora questions from
non-duplicate pairs, never stored). "Distinct" is the exact tier's notion (schemas.cache.normalize_question), so
every system stores the same set and no two entries are one exact-tier entry.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.reference import Vectors
from schemas.cache import normalize_question

# Resolved like bench/backfill.py: ../shared/data beside the project root.
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
KINDS = ("exact", "paraphrase", "miss")


@dataclass(frozen=True)
class Entry:
    question: str
    answer: str


@dataclass(frozen=True)
class Query:
    kind: str  # one of KINDS
    text: str
    expected: int | None  # index of the entry whose answer is right; None for a miss


@dataclass(frozen=True)
class Workload:
    entries: list[Entry]
    queries: list[Query]

    def of_kind(self, kind: str) -> list[Query]:
        return [q for q in self.queries if q.kind == kind]


def _jsonl(name: str) -> Iterator[dict[str, object]]:
    with open(DATA / name, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def quora_answer(question: str) -> str:
    """Quora pairs carry no answers: a made-up one per question, unique, so a served answer names its entry."""
    return f"[stored answer for the Quora question] {question}"


def workload(n_medquad: int = 10_000, n_per_kind: int = 500, seed: int = 0) -> Workload:
    seen: set[str] = set()
    entries: list[Entry] = []
    for row in _jsonl("medquad_qa.jsonl"):
        q, key = str(row["question"]).strip(), normalize_question(str(row["question"]))
        if key not in seen and len(entries) < n_medquad:
            seen.add(key)
            entries.append(Entry(q, str(row["answer"])))
    pairs: list[tuple[str, str]] = []
    negatives: list[str] = []
    for row in _jsonl("qqp_pairs_dev.jsonl"):
        a, b = str(row["text_a"]).strip(), str(row["text_b"]).strip()
        if row["label"] == 1 and len(pairs) < n_per_kind:
            ka, kb = normalize_question(a), normalize_question(b)
            if ka != kb and ka not in seen and kb not in seen:
                seen.update((ka, kb))
                pairs.append((a, b))
        elif row["label"] == 0:
            negatives.append(a)
    quora_start = len(entries)
    entries += [Entry(a, quora_answer(a)) for a, _ in pairs]
    misses: list[str] = []
    for text in negatives:
        key = normalize_question(text)
        if key not in seen and len(misses) < n_per_kind:
            seen.add(key)
            misses.append(text)
    exact = random.Random(seed).sample(range(len(entries)), n_per_kind)
    queries = [Query("exact", entries[i].question, i) for i in exact]
    queries += [Query("paraphrase", b, quora_start + i) for i, (_, b) in enumerate(pairs)]
    queries += [Query("miss", text, None) for text in misses]
    return Workload(entries, queries)


def extra_paraphrases(base: Workload, n: int = 2000) -> list[str]:
    """More questions near the threshold, for the recall figures: `text_b` of Quora duplicate pairs beyond the
    workload's, whose `text_a` is stored at ~80k (scale_corpus) but mostly not at 10k."""
    taken = {normalize_question(q.text) for q in base.queries} | {normalize_question(e.question) for e in base.entries}
    out: list[str] = []
    for row in _jsonl("qqp_pairs_dev.jsonl"):
        a, b = str(row["text_a"]).strip(), str(row["text_b"]).strip()
        kb = normalize_question(b)
        if row["label"] == 1 and kb != normalize_question(a) and kb not in taken and len(out) < n:
            taken.add(kb)
            out.append(b)
    return out


def scale_corpus(base: Workload, extra: Sequence[str] = ()) -> list[str]:
    """About 80k questions: MedQuAD's distinct questions plus every distinct Quora dev question, except the
    questions asked (a paraphrase or a miss that were stored would be exact hits); the base entries first."""
    taken = {normalize_question(q.text) for q in base.queries if q.kind != "exact"}
    taken |= {normalize_question(t) for t in extra}
    seen = set(taken)
    out: list[str] = []

    def add(text: str) -> None:
        key = normalize_question(text)
        if key not in seen:
            seen.add(key)
            out.append(text.strip())

    for e in base.entries:
        add(e.question)
    for row in _jsonl("medquad_qa.jsonl"):
        add(str(row["question"]))
    for row in _jsonl("qqp_pairs_dev.jsonl"):
        add(str(row["text_a"]))
        add(str(row["text_b"]))
    return out


def cached_vectors(
    cache_dir: Path, name: str, model_key: str, texts: Sequence[str], embed: Callable[[Sequence[str]], Vectors]
) -> Vectors:
    """`embed(texts)`, kept as .npy under `cache_dir` keyed by the texts and the model, so reruns skip it."""
    digest = hashlib.sha256(model_key.encode())
    for t in texts:
        digest.update(t.encode("utf-8") + b"\x00")
    path = cache_dir / f"{name}-{digest.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.asarray(np.load(path), dtype=np.float32)
    vectors = np.ascontiguousarray(embed(texts), dtype=np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors
