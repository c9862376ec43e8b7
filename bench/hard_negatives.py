"""Build the hard-negative probe set (tests/data/hard_negatives.jsonl) from the development data, by rules.

Every probe is a pair of questions that are close in wording but ask different things (label 0), of one kind:
  - entity:        two real MedQuAD questions from the same template about different diseases
                   ("What causes Adult Acute Lymphoblastic Leukemia ?" / "What causes Childhood ... ?");
  - question_type: two real MedQuAD questions about the same disease asking different things (symptoms /
                   treatment / inheritance ...);
  - number:        two real MedQuAD questions whose diseases differ only in a number ("... type 1" / "... type 2"),
                   and real questions (Quora, RQE, MedQuAD) with one number changed (ages, doses, years, amounts);
  - negation:      real questions with a negation put in or taken out, in several forms
                   ("Is X inherited ?" / "Is X not inherited ?", "Can I ..." / "Can I not ...",
                   "Why do ..." / "Why don't ...", "Why can't ..." / "Why can ...").
Deterministic (seeded), so the committed file can be rebuilt and diffed:

    python -m bench.hard_negatives            # rewrite tests/data/hard_negatives.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

from schemas.cache import normalize_question

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "hard_negatives.jsonl"
KINDS = ("negation", "number", "entity", "question_type")
PER_KIND = 400
SEED = 6

Probe = dict[str, object]
# MedQuAD question types whose questions ask nearly the same thing ("What to do for X" is filed as
# "considerations" but reads as a treatment question): not used as question-type negatives.
CLOSE_QTYPES = {frozenset({"treatment", "considerations"})}
_DIGITS = re.compile(r"\d+")
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.]*\d)")
NUMBER_WORDS = "two three four five six seven eight nine ten twelve fifteen twenty thirty fifty hundred".split()
# A number word counts only before a unit: "one" and friends are pronouns too ("which one", "one of the").
_NUMBER_WORD = re.compile(
    r"\b(" + "|".join(NUMBER_WORDS) + r")(?=[\s-](?:years?|weeks?|months?|days?|hours?|minutes?|times?|kids?|"
    r"children|people|cups?|glass(?:es)?|pills?|tablets?|doses?|mg|ml|percent|kg|pounds?|miles?|km)\b)",
    re.I,
)
_FOCUS_STOP = frozenset("disease diseases syndrome the of and in with for to a an or on".split())


def _probe(a: str, b: str, kind: str, rule: str, source: str) -> Probe:
    return {"text_a": a, "text_b": b, "label": 0, "kind": kind, "rule": rule, "source": source}


def _read(name: str) -> list[dict[str, object]]:
    with (DATA / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _focus_words(focus: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z]+", focus.lower().replace("'s", ""))) - _FOCUS_STOP


# --- MedQuAD templates: entity, question type, and number in the disease name ---


def medquad_templates(rows: list[dict[str, object]]) -> dict[str, dict[str, tuple[str, str]]]:
    """template ("What causes {} ?") -> focus -> (question, qtype), for questions that contain their focus."""
    out: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    for r in rows:
        focus, question, qtype = str(r["focus"]), str(r["question"]), str(r["qtype"])
        if focus and focus in question:
            out[question.replace(focus, "{}", 1)].setdefault(focus, (question, qtype))
    return out


def entity_and_number_pairs(templates: dict[str, dict[str, tuple[str, str]]], rng: random.Random) -> Iterator[Probe]:
    """Same template, other disease. Diseases sharing a word make the hard half; names equal but for a number
    are number probes. Names that could be the same disease (one's words contained in the other's) are skipped."""
    for _template, by_focus in sorted(templates.items()):
        foci = sorted(by_focus)
        by_shape: dict[str, list[str]] = defaultdict(list)
        for f in foci:
            by_shape[_DIGITS.sub("#", f.lower())].append(f)
        for same_shape in by_shape.values():
            for f1, f2 in itertools.pairwise(same_shape):
                if _DIGITS.findall(f1) != _DIGITS.findall(f2):
                    yield _probe(by_focus[f1][0], by_focus[f2][0], "number", "medquad_disease_number", "medquad")
        by_word: dict[str, list[str]] = defaultdict(list)
        for f in foci:
            for w in _focus_words(f):
                by_word[w].append(f)
        for f1 in rng.sample(foci, min(len(foci), 40)):
            w1 = _focus_words(f1)
            shared = [f for w in sorted(w1) for f in by_word[w] if f != f1]
            f2 = rng.choice(shared) if shared and rng.random() < 0.7 else rng.choice(foci)
            w2 = _focus_words(f2)
            if f2 == f1 or not w1 or not w2 or w1 <= w2 or w2 <= w1 or _DIGITS.sub("#", f1) == _DIGITS.sub("#", f2):
                continue
            rule = "medquad_similar_disease" if w1 & w2 else "medquad_other_disease"
            yield _probe(by_focus[f1][0], by_focus[f2][0], "entity", rule, "medquad")


def question_type_pairs(rows: list[dict[str, object]], rng: random.Random) -> Iterator[Probe]:
    """Same disease, another question type."""
    by_focus: dict[str, dict[str, str]] = defaultdict(dict)
    for r in rows:
        focus, question, qtype = str(r["focus"]), str(r["question"]), str(r["qtype"])
        if focus and focus in question:
            by_focus[focus].setdefault(qtype, question)
    for focus in sorted(by_focus):
        qtypes = sorted(by_focus[focus])
        if len(qtypes) < 2:
            continue
        t1, t2 = rng.sample(qtypes, 2)
        if frozenset({t1, t2}) in CLOSE_QTYPES:
            continue
        yield _probe(by_focus[focus][t1], by_focus[focus][t2], "question_type", f"medquad_{t1}_vs_{t2}", "medquad")


# --- edits of real questions: numbers and negations ---


def _other_number(value: str, rng: random.Random) -> str:
    if "." in value:
        return f"{float(value) + rng.choice([0.5, 1.0, 2.0]):g}"
    n = int(value)
    if 1900 <= n <= 2100:
        return str(n + rng.choice([-3, -2, -1, 1, 2]))
    choices = [n + 1, n * 10, n + 5] + ([n - 1, n // 2] if n > 2 else [])
    return str(rng.choice([c for c in choices if c != n and c >= 0]))


def change_number(question: str, rng: random.Random) -> tuple[str, str] | None:
    """One number (digits or a number word) in the question replaced by another value."""
    digits = list(_NUMBER.finditer(question))
    words = list(_NUMBER_WORD.finditer(question))
    if digits and (not words or rng.random() < 0.8):
        m = rng.choice(digits)
        return question[: m.start()] + _other_number(m.group(1), rng) + question[m.end() :], "digits"
    if words:
        m = rng.choice(words)
        other = rng.choice([w for w in NUMBER_WORDS if w != m.group(1).lower()])
        other = other.capitalize() if m.group(1)[0].isupper() else other
        return question[: m.start()] + other + question[m.end() :], "number_word"
    return None


_AUX = "is|are|was|were|can|could|does|do|did|should|would|will|has|have|may|must"
_PRONOUN = r"I|you|we|they|he|she|it|one|my \w+|your \w+|people|someone|a person|children|kids"
# (pattern, replacement, rule): each inserts or removes one negation.
# fmt: off
NEGATION_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str], str]] = [
    (re.compile(rf"^({_AUX}) ({_PRONOUN}) ", re.I), r"\1 \2 not ", "aux_subject_not"),
    (re.compile(r"^(why|how come) (do|does|did|is|are|was|were|can|should|would|could|will) ", re.I),
     lambda m: f"{m.group(1)} {m.group(2)}{'' if m.group(2).lower() == 'can' else 'n'}'t ".replace("willn't", "won't")
     .replace("cann't", "can't"), "why_aux_nt"),
    (re.compile(r"\b(what happens|what will happen|is it (?:safe|ok|okay|bad|good)) if (I|you|we|they|he|she) (\w+)",
                re.I), r"\1 if \2 do not \3", "if_do_not"),
    (re.compile(r"\b(how to|how do I|how can I|how do you|ways to) ", re.I), r"\1 not ", "how_not"),
    (re.compile(r"\b(can't|cannot|don't|doesn't|didn't|isn't|aren't|won't|shouldn't|wouldn't|couldn't)\b", re.I),
     lambda m: {"can't": "can", "cannot": "can", "won't": "will"}.get(m.group(1).lower(), m.group(1)[:-3]),
     "remove_nt"),
    # Not from phrases that negate nothing ("or not", "if not", "not only"): see worker.guards.
    (re.compile(r"\b(?!or\b|if\b)(\w+) not (?!only\b)(\w+)", re.I), r"\1 \2", "remove_not"),
    (re.compile(r"\bwithout\b", re.I), "with", "without_with"),
    # Only before a noun phrase: "in love with you" or "get away with?" would make nonsense.
    (re.compile(r"\bwith\b(?= (?:(?:a|an|the) )?(?!(?:you|me|him|her|them|us|it|no|not|and|or)\b)[a-z]{3,})", re.I),
     "without", "with_without"),
]
# fmt: on


def negate(question: str, rng: random.Random) -> tuple[str, str] | None:
    rules = [r for r in NEGATION_RULES if r[0].search(question)]
    if not rules:
        return None
    pattern, replacement, rule = rng.choice(rules)
    return pattern.sub(replacement, question, count=1), rule


def medquad_inherited_negations(rows: list[dict[str, object]]) -> Iterator[Probe]:
    """Negations of MedQuAD's "Is X inherited ?": the disease name is known, so "not" goes right after it."""
    for r in rows:
        focus, question = str(r["focus"]), str(r["question"])
        if question == f"Is {focus} inherited ?":
            yield _probe(question, f"Is {focus} not inherited ?", "negation", "medquad_not_inherited", "medquad")


def edited(questions: list[tuple[str, str]], edit: Callable[[str, random.Random], tuple[str, str] | None], kind: str,
           rng: random.Random) -> Iterator[Probe]:  # fmt: skip
    for question, source in questions:
        out = edit(question, rng)
        if out is not None and normalize_question(out[0]) != normalize_question(question):
            yield _probe(question, out[0], kind, out[1], source)


def real_questions() -> list[tuple[str, str]]:
    """Distinct short questions from the CC BY 4.0 development files, with their source. Not the Quora pairs:
    their terms do not allow redistribution, and this file ships in the repository."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    sources = [("rqe_pairs_train.jsonl", "rqe", "text_a"), ("medquad_qa.jsonl", "medquad", "question")]
    for name, source, field in sources:
        for row in _read(name):
            q = str(row[field]).strip()
            if 4 <= len(q.split()) <= 25 and normalize_question(q) not in seen:
                seen.add(normalize_question(q))
                out.append((q, source))
    return out


def _take(probes: Iterator[Probe] | list[Probe], n: int, rng: random.Random) -> list[Probe]:
    """n probes spread over rules and sources, at most one per first question."""
    by_group: dict[tuple[object, object], list[Probe]] = defaultdict(list)
    seen: set[object] = set()
    for p in probes:
        if p["text_a"] not in seen:
            seen.add(p["text_a"])
            by_group[(p["rule"], p["source"])].append(p)
    groups = [rng.sample(g, len(g)) for _, g in sorted(by_group.items(), key=lambda kv: str(kv[0]))]
    out: list[Probe] = []
    while len(out) < n and any(groups):
        for g in groups:
            if g and len(out) < n:
                out.append(g.pop())
    return out


def build(per_kind: int = PER_KIND, seed: int = SEED) -> list[Probe]:
    rng = random.Random(seed)
    medquad = _read("medquad_qa.jsonl")
    questions = real_questions()
    rng.shuffle(questions)
    templates = medquad_templates(medquad)
    structural = list(entity_and_number_pairs(templates, rng))
    number = [p for p in structural if p["kind"] == "number"]
    entity = [p for p in structural if p["kind"] == "entity"]
    with_numbers = [(q, s) for q, s in questions if re.search(r"\d", q) or _NUMBER_WORD.search(q)]
    number_edits = list(edited(with_numbers, change_number, "number", rng))
    negations = list(medquad_inherited_negations(medquad)) + list(edited(questions, negate, "negation", rng))
    return [
        *_take(negations, per_kind, rng),
        *_take(number[: per_kind // 4] + number_edits, per_kind, rng),
        *_take(entity, per_kind, rng),
        *_take(question_type_pairs(medquad, rng), per_kind, rng),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--per-kind", type=int, default=PER_KIND)
    args = parser.parse_args()
    probes = build(args.per_kind)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for p in probes:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    counts = {k: sum(p["kind"] == k for p in probes) for k in KINDS}
    print(f"wrote {len(probes)} probes to {args.out}: {counts}")


if __name__ == "__main__":
    main()
