"""Labelled pairs: reading them, components, the held-out split, and the counts every report is made of."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from worker.tools.pairs import Counts, Pair, PairsError, components, count, folds, groups, read_pairs


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_read_pairs_skips_empty_texts_and_honours_limit(tmp_path: Path) -> None:
    rows = [
        {"text_a": "a?", "text_b": "b?", "label": 1},
        {"text_a": "c?", "text_b": " ", "label": 1},
        {"text_a": "d?", "text_b": "e?", "label": 0, "kind": "number"},
        {"text_a": "f?", "text_b": "g?", "label": 0},
    ]
    pairs, skipped = read_pairs(write(tmp_path / "p.jsonl", rows), limit=2)
    assert pairs == [Pair("a?", "b?", 1), Pair("d?", "e?", 0, "number")] and skipped == 1


@pytest.mark.parametrize(
    "row", [{"text_a": "a", "label": 1}, {"text_a": "a", "text_b": "b", "label": 2}, "not an object", [1, 2]]
)
def test_read_pairs_names_the_bad_line(tmp_path: Path, row: object) -> None:
    path = write(tmp_path / "p.jsonl", [{"text_a": "a", "text_b": "b", "label": 1}, row])
    with pytest.raises(PairsError, match=r"p\.jsonl:2"):
        read_pairs(path)


def test_components_join_label_1_pairs_through_normalized_text() -> None:
    pairs = [Pair("A?", "B?", 1), Pair("b? ", "C?", 1), Pair("C?", "D?", 0), Pair("E?", "F?", 1)]
    comp = components(pairs)
    assert comp["a?"] == comp["b?"] == comp["c?"] != comp["d?"]
    assert comp["e?"] == comp["f?"] != comp["a?"]


def test_folds_keep_whole_components_together_whatever_the_order() -> None:
    pairs = [Pair(f"q{i}?", f"q{i + 1}?", int(i % 3 != 0)) for i in range(3000)]
    fold_of = folds(pairs, 5)
    assert set(fold_of.tolist()) == set(range(5)) and max(np.bincount(fold_of)) < 0.3 * len(pairs)
    comp = components(pairs)
    by_component: dict[str, set[int]] = {}
    for p, k in zip(pairs, fold_of, strict=True):
        by_component.setdefault(comp[p.text_a.lower()], set()).add(int(k))
    assert all(len(sides) == 1 for sides in by_component.values())
    assert (folds(pairs[::-1], 5)[::-1] == fold_of).all()
    # The groups the precision bound counts are the same components.
    group_of = groups(pairs)
    assert len(set(group_of.tolist())) == len(by_component)


def test_counts() -> None:
    hit = np.array([True, True, True, False, False, False])
    right = np.array([True, True, False, False, False, False])
    answerable = np.array([True, True, False, True, False, False])
    c = count(hit, right, answerable)
    assert c == Counts(right_hits=2, wrong_hits=1, missed=1, refused=2)
    assert (c.precision, c.recall, c.hit_rate) == (2 / 3, 2 / 3, 0.5)
    assert c.f1 == pytest.approx(2 / 3)
    assert Counts(0, 0, 3, 1).summary()["precision"] == 1.0  # no hits: nothing served wrongly
