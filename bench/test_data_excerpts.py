"""Rebuild the excerpts the tests read (tests/data/README.md) from the shared development data, by rules.

Only MedQuAD and RQE (CC BY 4.0) are read: the Quora pairs may not be redistributed, so nothing here comes from
them. Deterministic (seeded), so the committed files can be rebuilt and diffed:

    python -m bench.test_data_excerpts [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Where the tests read them; only this script reads the shared data they come from.
OUT = HERE.parent / "tests" / "data"
SEED = 14
# The first rows of MedQuAD, all from CancerGov: template questions about many cancers, some asked twice.
MEDQUAD_ROWS = 600
ANSWER_CHARS = 80
# RQE pairs with both questions at most this long (its consumer questions run to paragraphs).
RQE_MAX_CHARS = 200
PAIRS = {"rqe_same_text": 40, "rqe_entailed": 130, "rqe_unrelated": 110,
         "medquad_paraphrase": 120, "medquad_other_qtype": 80, "medquad_other_focus": 120}  # fmt: skip
# MedQuAD's question templates ({X} is the focus) and a rewording of each, written here: the label-1 pairs.
PARAPHRASES = {
    "What is (are) {X} ?": "What is {X}?",
    "What are the symptoms of {X} ?": "What are the signs and symptoms of {X}?",
    "What are the treatments for {X} ?": "How is {X} treated?",
    "Is {X} inherited ?": "Is {X} hereditary?",
    "How many people are affected by {X} ?": "How common is {X}?",
    "What are the genetic changes related to {X} ?": "Which gene mutations are behind {X}?",
    "What causes {X} ?": "What is the cause of {X}?",
    "How to diagnose {X} ?": "How is {X} diagnosed?",
    "What is the outlook for {X} ?": "What is the prognosis for {X}?",
    "How to prevent {X} ?": "How can {X} be prevented?",
}


def read(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write(rows: list[dict[str, Any]], name: str) -> None:
    (OUT / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def shorten(answer: str) -> str:
    """Whitespace collapsed, cut at the last word boundary within ANSWER_CHARS."""
    text = " ".join(answer.split())
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS].rsplit(" ", 1)[0]


def medquad_excerpt(medquad: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = medquad[:MEDQUAD_ROWS]
    return [{"qid": r["qid"], "question": r["question"], "answer": shorten(r["answer"])} for r in rows]


def loose(text: str) -> str:
    # Texts equal but for case, spacing and punctuation embed alike: two of them stored would tie in a KNN.
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def rqe_pairs(rqe: list[dict[str, Any]], rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    short = [r for r in rqe if len(r["text_a"]) <= RQE_MAX_CHARS and len(r["text_b"]) <= RQE_MAX_CHARS]
    same = [loose(r["text_a"]) == loose(r["text_b"]) for r in short]
    groups = {
        "rqe_same_text": [r for r, s in zip(short, same, strict=True) if s and r["label"] == 1],
        # The one pair of the same question labelled 0 (a noisy label): no threshold gets precision 1.0 past it.
        "rqe_noisy_label": [r for r, s in zip(short, same, strict=True) if s and r["label"] == 0],
        "rqe_entailed": [r for r, s in zip(short, same, strict=True) if not s and r["label"] == 1],
        "rqe_unrelated": [r for r, s in zip(short, same, strict=True) if not s and r["label"] == 0],
    }
    return {g: rng.sample(rows, PAIRS.get(g, len(rows))) for g, rows in groups.items()}


def medquad_pairs(medquad: list[dict[str, Any]], rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    by_template: dict[str, dict[str, str]] = defaultdict(dict)  # template -> focus -> question
    by_focus: dict[str, dict[str, str]] = defaultdict(dict)  # focus -> template -> question
    for r in medquad:
        focus = r["focus"]
        if focus and focus in r["question"]:
            template = r["question"].replace(focus, "{X}")
            by_template[template].setdefault(focus, r["question"])
            by_focus[focus].setdefault(template, r["question"])
    templates = sorted(PARAPHRASES)
    paraphrase, other_qtype, other_focus = [], [], []
    while len(paraphrase) < PAIRS["medquad_paraphrase"]:
        template = rng.choice(templates)
        focus = rng.choice(sorted(by_template[template]))
        paraphrase.append((by_template[template][focus], PARAPHRASES[template].replace("{X}", focus), 1))
    while len(other_qtype) < PAIRS["medquad_other_qtype"]:
        asked = by_focus[rng.choice(sorted(by_focus))]
        if len(asked) > 1:
            first, second = rng.sample(sorted(asked), 2)
            other_qtype.append((asked[first], asked[second], 0))
    while len(other_focus) < PAIRS["medquad_other_focus"]:
        template = rng.choice(templates)
        foci = sorted(by_template[template])
        focus = rng.choice(foci)
        # The most similarly named other disease asked with the same template: close in wording, another question.
        near = [f for f in difflib.get_close_matches(focus, foci, n=4, cutoff=0.6) if f.lower() != focus.lower()]
        if near:
            other_focus.append((by_template[template][focus], by_template[template][near[0]], 0))
    made = {"medquad_paraphrase": paraphrase, "medquad_other_qtype": other_qtype, "medquad_other_focus": other_focus}
    return {g: [{"text_a": a, "text_b": b, "label": y} for a, b, y in rows] for g, rows in made.items()}


def eval_pairs(medquad: list[dict[str, Any]], rqe: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    groups = {**rqe_pairs(rqe, rng), **medquad_pairs(medquad, rng)}
    out, seen, stored = [], set(), {}
    for group, rows in groups.items():
        for r in rows:
            key = (r["text_a"], r["text_b"])
            # One stored text per loose form, so the nearest stored question is never a tie.
            if key in seen or stored.setdefault(loose(r["text_a"]), r["text_a"]) != r["text_a"]:
                continue
            seen.add(key)
            out.append({"text_a": r["text_a"], "text_b": r["text_b"], "label": r["label"], "origin": group})
    rng.shuffle(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared" / "data")
    args = parser.parse_args()
    medquad, rqe = read(args.shared / "medquad_qa.jsonl"), read(args.shared / "rqe_pairs_train.jsonl")
    write(medquad_excerpt(medquad), "medquad_excerpt.jsonl")
    write(eval_pairs(medquad, rqe), "medical_pairs.jsonl")


if __name__ == "__main__":
    main()
