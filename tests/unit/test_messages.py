"""The request contract rejects bad input where it enters, with a message that says what is wrong."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.keys import reply_key
from schemas.messages import (
    CTX_ALLOW_EXPIRED,
    CTX_MAX_QUESTION_BYTES,
    ChatReply,
    ChatRequest,
    ErrorCode,
    ForgetReply,
    ForgetRequest,
    Removed,
    Tier,
)


def fields(**change: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is gout?"}],
        "tenant": "acme",
        "model": "gpt-x",
        "reply_to": reply_key("abc"),
        "deadline": time.time() + 30,
    }
    return {**base, **change}


def test_a_valid_request_round_trips() -> None:
    request = ChatRequest.model_validate(fields())
    assert request.question == "What is gout?"
    assert ChatRequest.model_validate_json(request.model_dump_json()) == request
    assert request.version == 1 and len(request.request_id) == 32


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"messages": [{"role": "user", "content": ""}]}, "empty or only whitespace"),
        ({"messages": [{"role": "user", "content": " \n\t "}]}, "empty or only whitespace"),
        ({"messages": [{"role": "user", "content": "é" * 4097}]}, "8194 bytes, over the limit of 8192"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "'system', 'developer', 'user' or 'assistant'"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "last message"),
        ({"messages": []}, "at least 1 item"),
        ({"reply_to": None}, "reply_to"),
        ({"reply_to": "celery"}, "String should match pattern"),
        ({"deadline": time.time() - 1}, "deadline has already passed"),
        ({"tenant": "a b"}, "String should match pattern"),
        ({"extra": 1}, "Extra inputs are not permitted"),
        ({"version": 2}, "Input should be 1"),
    ],
    ids=["empty", "whitespace", "oversized", "unknown-role", "not-ending-in-user", "no-messages",
         "missing-reply-to", "foreign-reply-to", "expired", "bad-tenant", "unknown-field", "future-version"],
)  # fmt: skip
def test_bad_input_is_rejected_with_a_clear_message(change: dict[str, Any], message: str) -> None:
    data = fields(**change)
    if change.get("reply_to", "") is None:
        del data["reply_to"]
    with pytest.raises(ValidationError) as err:
        ChatRequest.model_validate(data)
    assert message in str(err.value) or (message == "reply_to" and "reply_to" in str(err.value))


def test_size_limit_is_configuration() -> None:
    data = fields(messages=[{"role": "user", "content": "x" * 100}])
    with pytest.raises(ValidationError, match="over the limit of 50 bytes"):
        ChatRequest.model_validate(data, context={CTX_MAX_QUESTION_BYTES: 50})


def test_worker_side_accepts_an_expired_request_so_it_can_answer_deadline() -> None:
    request = ChatRequest.model_validate(fields(deadline=time.time() - 5), context={CTX_ALLOW_EXPIRED: True})
    assert request.expired()


def test_reply_is_ok_only_without_error() -> None:
    reply = ChatReply(request_id="r", answer="a", tier=Tier.EXACT, similarity=1.0)
    assert reply.ok
    failed = ChatReply.model_validate_json(
        '{"request_id": "r", "error": {"code": "llm_timeout", "message": "slow", "retryable": true}}'
    )
    assert not failed.ok and failed.error is not None and failed.error.code == ErrorCode.LLM_TIMEOUT


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "name an entry_id, or a tenant"),
        ({"entry_id": "9A1B"}, "String should match pattern"),
        ({"tenant": "acme", "bad": True}, "feedback (bad) names one entry_id"),
        ({"entry_id": "0" * 32, "answer": "x"}, "answer is only sent with feedback"),
        ({"entry_id": "0" * 32, "bad": True, "reason": "x" * 1001}, "at most 1000 characters"),
        ({"tenant": "a b"}, "String should match pattern"),
    ],
    ids=["no-target", "bad-entry-id", "feedback-on-a-tenant", "answer-without-feedback", "long-reason", "bad-tenant"],
)
def test_forget_request_names_one_target(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ForgetRequest.model_validate({"reply_to": reply_key("f1"), **data})


def test_forget_reply_counts_what_was_found() -> None:
    assert not ForgetReply(request_id="f").found
    reply = ForgetReply.model_validate_json('{"request_id": "f", "removed": {"redis": 0, "pgvector": 1}, "blocked": 1}')
    assert reply.ok and reply.found and reply.removed == Removed(redis=0, pgvector=1)
