"""Thousands of random and mutated messages against the contracts: each one validates or is refused
with pydantic's ValidationError (what the gateway turns into 400 and the worker into an error reply)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.cache import normalize_question
from schemas.messages import CTX_ALLOW_EXPIRED, ChatRequest
from tests.fuzz_strategies import json_values, mutated_requests


def accepted_or_refused(data: Any) -> None:
    for context in (None, {CTX_ALLOW_EXPIRED: True}):
        try:
            request = ChatRequest.model_validate(data, context=context)
        except ValidationError:
            continue
        # What validates is usable: a non-empty question, the last user message's (after it only assistant turns
        # and tool results may come, as OpenAI accepts), a finite deadline.
        last_user = max(i for i, m in enumerate(request.messages) if m.role == "user")
        assert request.messages[last_user].content == request.question and request.question.strip()
        assert all(m.role in ("assistant", "tool") for m in request.messages[last_user + 1 :])
        assert request.deadline == request.deadline and abs(request.deadline) != float("inf")


@settings(max_examples=1000)
@given(mutated_requests(tenant="fuzz"))
def test_mutated_requests_validate_or_are_refused(data: dict[str, Any]) -> None:
    accepted_or_refused(data)


@settings(max_examples=1000)
@given(json_values)
def test_any_json_validates_or_is_refused(data: Any) -> None:
    accepted_or_refused(data)


@settings(max_examples=500)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode) | json_values.map(lambda v: json.dumps(v)))
def test_any_bytes_validate_or_are_refused(raw: bytes | str) -> None:
    # Anything but a ValidationError (a UnicodeDecodeError, a RecursionError...) fails the test.
    try:
        request = ChatRequest.model_validate_json(raw)
    except ValidationError:
        return
    assert request.question.strip()


@settings(max_examples=500)
@given(st.text())
def test_normalization_is_idempotent(text: str) -> None:
    once = normalize_question(text)
    assert normalize_question(once) == once
