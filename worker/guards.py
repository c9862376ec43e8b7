"""Guards: cheap checks between "nearest neighbour found" and "hit served".

Embeddings put "Is X contagious?" next to "Is X not contagious?" and "dose for a 5-year-old" next to
"dose for a 50-year-old". For the people this cache serves, a wrong hit is worse than a miss, so a
neighbour above the threshold is still refused when the two questions differ in negation, in numbers,
in the kind of question (symptoms vs treatment), or in their named entities. Pure Python on short
strings: tens of microseconds per check. The verifier (worker/verifier.py) reads the same signals.

Each rule refuses what differs on both sides and lets one-sided detail through ("GATE 2015" vs "GATE",
"Rio" vs "Rio Olympics", a long question with context vs its gist): paraphrases add and drop detail all
the time, and the verifier weighs that; a number, a name or a kind of question on each side that the
other lacks is a different question. A negation counts when what it negates is asked on the other side
too ("Is X not contagious?" / "Is X contagious?"), not when it sits in context the other side does not
have ("I'm not good at English; how do I improve?" / "How can I improve my English?").
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
# Phrases with a negation word that negate nothing ("Is herpes a retrovirus? Why or why not?").
NEUTRAL_NEGATIONS = re.compile(r"\b(?:why or why not|whether or not|or not|if not|not only|no matter)\b", re.I)
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
     "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000", "half": "0.5",
     "first": "1", "second": "2", "third": "3"}  # fmt: skip
# A number word counts only before one of these ("five years", "two doses"): "one" and "second" are
# pronouns and nouns too ("which one", "a second opinion"). "once" and "twice" always count.
UNITS = frozenset(
    "year years yr yrs old week weeks month months day days hour hours hr hrs minute minutes min mins time times "
    "kid kids child children people person mg mcg g kg ml l lb lbs pound pounds percent dose doses pill pills "
    "tablet tablets cup cups glass glasses mile miles km star stars grade class stage type phase trimester "
    "degree degrees".split()
)
ALWAYS_NUMBERS = {"once": "1", "twice": "2"}
# Roman numerals after these words are numbers ("type II", "stage IV").
ROMAN = {"i": "1", "ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8"}
ROMAN_AFTER = frozenset("type stage grade class phase".split())
# What a question asks about (regular expressions); two questions asking different kinds of thing are
# different questions.
QUESTION_KINDS = {
    "symptom": ("symptom", "sign"),
    "cause": ("cause", "why do", "why does"),
    "risk": ("at risk", "risk factor", "susceptib"),
    "treatment": ("treat", "therap", "cure", "medication", "drug for", "manage", "what to do for"),
    "prevention": ("prevent", "avoid getting"),
    "diagnosis": ("diagnos", "test for", "exam", "detect"),
    "inheritance": ("inherit", "hereditary", "genetic(?! change)", "runs? in the family"),
    "genetic_change": ("genetic change", "mutation", "gene ", "genes"),
    "outlook": ("outlook", "prognosis", "life expectancy", "survival"),
    "frequency": ("how many people", "how common", "frequency", "prevalence"),
    "complication": ("complication",),
    "stage": ("stages", "stage of"),
    "research": ("research", "clinical trial"),
    "definition": (r"what is \(are\)", "what is an? ", "meaning of", "definition of"),
    "side_effect": ("side effect", "adverse"),
    "dose": ("dose", "dosage", "how much"),
}
_KIND_CUES = [(kind, re.compile("|".join(cues))) for kind, cues in QUESTION_KINDS.items()]
# Words that carry no topic: what a negation negates is the next few words that are not these.
STOP = frozenset(
    "a an the of to in on for and or is are was were be been do does did i my me you your we our it its this that "
    "what how why when where who which can could should would will shall with at by from as if about into than "
    "then so there their they them he she his her some any".split()
)
NEGATED_WORDS = 3
STOP_CAPITALS = frozenset(
    "i what how why when where who which is are can do does should could would will a the".split()
)
# Names are compared on a short stem, so "Hut's" matches "Hut" and "Indians" matches "Indian".
STEM_CHARS = 5


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""


def tokens(text: str) -> list[str]:
    return [t.lower().replace("'", "").replace("’", "") for t in _WORD.findall(text)]


def numbers(toks: list[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for i, t in enumerate(toks):
        after = toks[i + 1] if i + 1 < len(toks) else ""
        if t[0].isdigit():
            out[t.replace(",", "")] += 1
        elif t in ALWAYS_NUMBERS:
            out[ALWAYS_NUMBERS[t]] += 1
        elif t in NUMBER_WORDS and after in UNITS:
            out[NUMBER_WORDS[t]] += 1
        elif t in ROMAN and i and toks[i - 1] in ROMAN_AFTER:
            out[ROMAN[t]] += 1
    return out


def kinds(text: str) -> frozenset[str]:
    lowered = f" {text.lower()} "
    return frozenset(kind for kind, cues in _KIND_CUES if cues.search(lowered))


def _stem(token: str) -> str:
    return token.removesuffix("s")[:STEM_CHARS]


def names(text: str) -> frozenset[str]:
    """Capitalized words inside the sentence ("Crohn", "Paris", "Python"), stemmed; the first word is skipped."""
    words = _WORD.findall(text.replace("’", "'"))
    return frozenset(
        _stem(w.lower().removesuffix("'s").replace("'", ""))
        for w in words[1:]
        if w[0].isupper() and w.lower() not in STOP_CAPITALS and not w.isupper()
    )


@dataclass(frozen=True, slots=True)
class Parsed:
    """What the guards and the verifier read from one question, computed once per question."""

    tokens: list[str]
    negations: int  # negation words, not counting phrases that negate nothing
    # Per negation, the stems of the words it negates (the next few words that carry a topic).
    negated: tuple[frozenset[str], ...]
    numbers: Counter[str]
    kinds: frozenset[str]
    names: frozenset[str]
    stems: frozenset[str]

    def names_missing(self, other: Parsed) -> bool:
        """Whether this question names something the other does not mention at all."""
        return not self.names <= other.stems

    def negations_about(self, other: Parsed) -> int:
        """Negations of something the other question mentions too."""
        return sum(1 for words in self.negated if words & other.stems)


def _negated(toks: list[str]) -> tuple[frozenset[str], ...]:
    """Per negation, the next few topic words; when nothing follows ("... but men don't?"), the ones before it."""
    out = []
    for i, t in enumerate(toks):
        if t in NEGATIONS:
            after = [w for w in toks[i + 1 :] if w not in STOP and w not in NEGATIONS][:NEGATED_WORDS]
            before = [w for w in reversed(toks[:i]) if w not in STOP and w not in NEGATIONS][:NEGATED_WORDS]
            out.append(frozenset(_stem(w) for w in after or before))
    return tuple(out)


def parse(text: str) -> Parsed:
    toks = tokens(text)
    negated = _negated(tokens(NEUTRAL_NEGATIONS.sub(" ", text)))
    stems = frozenset(_stem(t) for t in toks)
    return Parsed(toks, len(negated), negated, numbers(toks), kinds(text), names(text), stems)


def verdict(question: Parsed, candidate: Parsed) -> Verdict:
    """Whether `candidate`'s answer may be served for `question`, given they are close in embedding space."""
    if question.negations_about(candidate) % 2 != candidate.negations_about(question) % 2:
        return Verdict(False, "negation")
    if (question.numbers - candidate.numbers) and (candidate.numbers - question.numbers):
        return Verdict(False, "number")
    if (question.kinds - candidate.kinds) and (candidate.kinds - question.kinds):
        return Verdict(False, "question_kind")
    if question.names_missing(candidate) and candidate.names_missing(question):
        return Verdict(False, "entity")
    return Verdict(True)


def check(question: str, candidate: str) -> Verdict:
    return verdict(parse(question), parse(candidate))
