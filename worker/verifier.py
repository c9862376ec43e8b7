"""The verifier: a small fitted model that reads a question and its nearest neighbour and says whether they are
the same question, after the cosine threshold and the guards have let the neighbour through.

Cosine alone ranks Quora paraphrases poorly near the threshold (P 0.79 at R 0.40 on the development pairs); how
the two questions are worded adds what the embedding blurs: shared words, words only one side has, numbers,
length, the question word. Sixteen such features go through four small networks (one hidden layer of 16 ReLUs
each) whose probabilities are averaged; `dejavu calibrate` fits them with scikit-learn on labelled pairs
(worker/tools/calibrate.py) and sets the probability a neighbour needs (`threshold`); scoring here is plain numpy.
A check costs well under a millisecond, mostly the features.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Set

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from worker import guards

FloatArray = npt.NDArray[np.float64]
QUESTION_WORDS = frozenset(
    "what how why when where who which is are can do does should will would could did was".split()
)
# The features, in the order the weights expect; a profile file fitted on another list is refused at load.
FEATURES = (
    "cosine", "jaccard", "content_jaccard", "containment", "bigram_jaccard", "trigram_jaccard",
    "length_ratio", "log_length", "numbers_differ", "negation_differs", "same_first_word",
    "question_word_jaccard", "fewer_own_words", "more_own_words", "names_missing", "kinds_differ",
)  # fmt: skip


def _jaccard(a: Set[object], b: Set[object]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _trigrams(toks: list[str]) -> set[str]:
    text = " ".join(toks)
    return {text[i : i + 3] for i in range(len(text) - 2)}


def features(question: guards.Parsed, candidate: guards.Parsed, similarity: float) -> list[float]:
    """The verifier's inputs for one pair (FEATURES names them); symmetric in the two questions."""
    q, c = question.tokens, candidate.tokens
    sq, sc = set(q), set(c)
    cq, cc = sq - guards.STOP, sc - guards.STOP
    own = (len(cq - cc), len(cc - cq))
    return [
        similarity,
        _jaccard(sq, sc),
        _jaccard(cq, cc),
        len(sq & sc) / max(min(len(sq), len(sc)), 1),
        _jaccard(set(itertools.pairwise(q)), set(itertools.pairwise(c))),
        _jaccard(_trigrams(q), _trigrams(c)),
        min(len(q), len(c)) / max(len(q), len(c), 1),
        math.log1p(len(q) + len(c)),
        float(question.numbers != candidate.numbers),
        float(question.negations % 2 != candidate.negations % 2),
        float(q[:1] == c[:1]),
        _jaccard(sq & QUESTION_WORDS, sc & QUESTION_WORDS),
        float(min(own)),
        float(max(own)),
        float(question.names_missing(candidate)) + float(candidate.names_missing(question)),
        float(question.kinds != candidate.kinds),
    ]


class Network(BaseModel):
    """One hidden ReLU layer and a sigmoid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    w1: list[list[float]]
    b1: list[float]
    w2: list[float]
    b2: float


class Verifier(BaseModel):
    """Standardize, then the mean of a few small networks fitted from different starts: the probability that the
    two questions are the same. Averaging steadies what one early-stopped fit would make of noise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The probability a neighbour needs to be served.
    threshold: float = Field(ge=0.0, le=1.0)
    features: tuple[str, ...]
    mean: list[float]
    scale: list[float]
    networks: list[Network] = Field(min_length=1)
    _arrays: tuple[FloatArray, FloatArray, list[tuple[FloatArray, FloatArray, FloatArray, float]]] = PrivateAttr()

    @model_validator(mode="after")
    def _shapes(self) -> Verifier:
        if self.features != FEATURES:
            raise ValueError(f"the verifier was fitted on features {list(self.features)}; this version computes "
                             f"{list(FEATURES)}: refit it with `dejavu calibrate`")  # fmt: skip
        n = len(FEATURES)
        nets = []
        for net in self.networks:
            w1 = np.asarray(net.w1, dtype=np.float64)
            if w1.shape != (n, len(net.b1)) or len(net.w2) != len(net.b1):
                raise ValueError("the verifier's weights do not have the shapes its features need")
            nets.append((w1, np.asarray(net.b1), np.asarray(net.w2), net.b2))
        if len(self.mean) != n or len(self.scale) != n:
            raise ValueError("the verifier's standardization does not match its features")
        self._arrays = (np.asarray(self.mean), np.asarray(self.scale), nets)
        return self

    def probabilities(self, x: FloatArray) -> FloatArray:
        """Probabilities for rows of raw features (one row per pair)."""
        mean, scale, nets = self._arrays
        z = (x - mean) / scale
        out: FloatArray = np.mean([_network(z, *net) for net in nets], axis=0)
        return out

    def score(self, question: guards.Parsed, candidate: guards.Parsed, similarity: float) -> float:
        return float(self.probabilities(np.asarray([features(question, candidate, similarity)]))[0])


def _network(z: FloatArray, w1: FloatArray, b1: FloatArray, w2: FloatArray, b2: float) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-(np.maximum(z @ w1 + b1, 0.0) @ w2 + b2)))
    return out
