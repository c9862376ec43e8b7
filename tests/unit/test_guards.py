"""Guards refuse neighbours that are close in embedding space but ask something else."""

from __future__ import annotations

import pytest

from worker.guards import check


@pytest.mark.parametrize(
    ("question", "candidate", "reason"),
    [
        ("Is measles contagious?", "Is measles not contagious?", "negation"),
        ("Can I take ibuprofen with food?", "Can't I take ibuprofen with food?", "negation"),
        ("What happens if I take my insulin late?", "What happens if I don't take my insulin?", "negation"),
        ("Why do men wear makeup?", "Why don't men wear makeup?", "negation"),
        ("Is a fever with a rash serious?", "Is a fever without a rash serious?", "negation"),
        ("Why do women wear makeup but men don't?", "Why do women wear makeup but men do?", "negation"),
        ("What is the dose of paracetamol for a 5-year-old?", "What is the dose of paracetamol for a 50-year-old?",
         "number"),
        ("Dose for a five year old?", "Dose for a 6 year old?", "number"),
        ("What happened in 1998?", "What happened in 1999?", "number"),
        ("Is 500 mg of amoxicillin twice a day enough?", "Is 250 mg of amoxicillin twice a day enough?", "number"),
        ("What are the symptoms of spinocerebellar ataxia type II?", "What are the symptoms of spinocerebellar "
         "ataxia type III?", "number"),
        ("What are the symptoms of diabetes?", "What are the treatments for diabetes?", "question_kind"),
        ("How to prevent gout?", "What causes gout?", "question_kind"),
        ("Is Marfan syndrome inherited?", "What are the genetic changes related to Marfan syndrome?",
         "question_kind"),
        ("What is (are) Crohn's Disease ?", "What is the outlook for Crohn's Disease ?", "question_kind"),
        ("What is the capital of France?", "What is the capital of Spain?", "entity"),
        ("What are the symptoms of Crohn disease?", "What are the symptoms of Behcet disease?", "entity"),
        ("How to prevent Kidney Stones in Children?", "How to prevent Kidney Stones in Adults?", "entity"),
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
        # A negation in context the other side does not have negates nothing it asks.
        ("How can I improve my English?", "What are the best ways to improve my English because I'm not good at it?"),
        ("Is coconut oil good for dry skin?", "Is coconut oil good for dry skin? Why or why not?"),
        # Detail on one side only: a year, a name, a second kind of question.
        ("How do I prepare for the GATE?", "How do I prepare for the GATE 2015?"),
        ("How can one become a patient teacher?", "How can I become a patient teacher?"),
        ("Which one is the best laptop?", "What is the best laptop?"),
        ("What were Marie Curie's discoveries?", "What were Curie's biggest discoveries?"),
        ("Who is the funniest comedian in Britain?", "Who is most funniest Comedian in britain?"),
        ("What are the symptoms of anemia?", "What causes anemia and what are its symptoms?"),
    ],
)
def test_paraphrases_still_hit(question: str, candidate: str) -> None:
    assert check(question, candidate).ok, check(question, candidate)
