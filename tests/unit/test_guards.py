"""Guards refuse neighbours that are close in embedding space but ask something else."""

from __future__ import annotations

import pytest

from worker.guards import check


@pytest.mark.parametrize(
    ("question", "candidate", "reason"),
    [
        ("Is measles contagious?", "Is measles not contagious?", "negation"),
        ("Can I take ibuprofen with food?", "Can't I take ibuprofen with food?", "negation"),
        ("What is the dose of paracetamol for a 5-year-old?", "What is the dose of paracetamol for a 50-year-old?",
         "number"),
        ("Dose for a five year old?", "Dose for a 6 year old?", "number"),
        ("What happened in 1998?", "What happened in 1999?", "number"),
        ("What are the symptoms of diabetes?", "What are the treatments for diabetes?", "question_kind"),
        ("How to prevent gout?", "What causes gout?", "question_kind"),
        ("What is the capital of France?", "What is the capital of Spain?", "entity"),
        ("What are the symptoms of Crohn disease?", "What are the symptoms of Behcet disease?", "entity"),
    ],
)  # fmt: skip
def test_different_questions_are_refused(question: str, candidate: str, reason: str) -> None:
    verdict = check(question, candidate)
    assert not verdict.ok and verdict.reason == reason


@pytest.mark.parametrize(
    ("question", "candidate"),
    [
        ("What are the symptoms of glaucoma?", "What are the signs and symptoms of glaucoma?"),
        ("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
        ("Dose for a five year old?", "Dose for a 5 year old child?"),
        ("Why isn't my code working?", "Why is my code not working?"),
        ("How can I lose weight fast?", "What's the quickest way to lose weight?"),
        ("What is glaucoma?", "what is Glaucoma"),
    ],
)
def test_paraphrases_still_hit(question: str, candidate: str) -> None:
    assert check(question, candidate).ok
