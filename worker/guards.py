"""Guards: cheap checks between "nearest neighbour found" and "hit served".

Embeddings put "Is X contagious?" next to "Is X not contagious?" and "dose for a 5-year-old" next to
"dose for a 50-year-old". For the people this cache serves, a wrong hit is worse than a miss, so a
neighbour above the threshold is still refused when the two questions differ in negation, in numbers,
in the kind of question (symptoms vs treatment), or in their named entities. Pure Python on short
strings: tens of microseconds per check.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

_WORD = re.compile(r"[A-Za-z][A-Za-z'’]*|\d+(?:[.,]\d+)*")
NEGATIONS = frozenset(
    "not no never none nobody nothing neither nor without cannot cant dont doesnt didnt isnt arent wasnt "
    "werent wont wouldnt shouldnt couldnt hasnt havent hadnt mustnt non".split()
)
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
     "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000", "half": "0.5",
     "once": "1", "twice": "2", "first": "1", "second": "2", "third": "3"}  # fmt: skip
# What a question asks about; two questions asking different kinds of thing are different questions.
QUESTION_KINDS = {
    "symptom": ("symptom", "sign"),
    "cause": ("cause", "why do", "why does", "risk factor"),
    "treatment": ("treat", "therap", "cure", "medication", "drug for", "manage"),
    "prevention": ("prevent", "avoid getting"),
    "diagnosis": ("diagnos", "test for", "exam", "detect"),
    "genetics": ("inherit", "genetic", "gene ", "genes"),
    "outlook": ("outlook", "prognosis", "life expectancy", "survival"),
    "frequency": ("how many people", "how common", "frequency", "prevalence"),
    "side_effect": ("side effect", "adverse"),
    "dose": ("dose", "dosage", "how much"),
}
STOP_CAPITALS = frozenset(
    "i what how why when where who which is are can do does should could would will a the".split()
)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""


def _tokens(text: str) -> list[str]:
    return [t.lower().replace("'", "").replace("’", "") for t in _WORD.findall(text)]


def _numbers(tokens: list[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for t in tokens:
        if t[0].isdigit():
            out[t.replace(",", "")] += 1
        elif t in NUMBER_WORDS:
            out[NUMBER_WORDS[t]] += 1
    return out


def _kinds(text: str) -> frozenset[str]:
    lowered = f" {text.lower()} "
    return frozenset(kind for kind, cues in QUESTION_KINDS.items() if any(c in lowered for c in cues))


def _capitalized(text: str) -> frozenset[str]:
    # Names inside the sentence ("Crohn", "Paris", "Python"); the first word is capitalized anyway.
    words = _WORD.findall(text)
    return frozenset(
        w.lower() for w in words[1:] if w[0].isupper() and w.lower() not in STOP_CAPITALS and not w.isupper()
    )


def check(question: str, candidate: str) -> Verdict:
    """Whether `candidate`'s answer may be served for `question`, given they are close in embedding space."""
    q, c = _tokens(question), _tokens(candidate)
    if sum(t in NEGATIONS for t in q) % 2 != sum(t in NEGATIONS for t in c) % 2:
        return Verdict(False, "negation")
    if _numbers(q) != _numbers(c):
        return Verdict(False, "number")
    kq, kc = _kinds(question), _kinds(candidate)
    if kq and kc and kq != kc:
        return Verdict(False, "question_kind")
    eq, ec = _capitalized(question), _capitalized(candidate)
    if eq and ec and eq.isdisjoint(ec):
        return Verdict(False, "entity")
    return Verdict(True)
