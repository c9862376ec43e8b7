"""The request contract rejects bad input where it enters, with a message that says what is wrong."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.keys import reply_key
from schemas.messages import (
    CTX_ALLOW_EXPIRED,
    CTX_MAX_QUESTION_BYTES,
    SCHEMA_VERSION,
    ChatReply,
    ChatRequest,
    ErrorCode,
    ForgetReply,
    ForgetRequest,
    Removed,
    Tier,
)
from schemas.requests import split_params


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
    assert request.version == SCHEMA_VERSION and len(request.request_id) == 32


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"messages": [{"role": "user", "content": ""}]}, "empty or only whitespace"),
        ({"messages": [{"role": "user", "content": " \n\t "}]}, "empty or only whitespace"),
        ({"messages": [{"role": "user", "content": "é" * 4097}]}, "8194 bytes, over the limit of 8192"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "'user', 'assistant' or 'tool'"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "yo"}]}, "after the last"),
        ({"messages": []}, "at least 1 item"),
        ({"reply_to": None}, "reply_to"),
        ({"reply_to": "celery"}, "String should match pattern"),
        ({"deadline": time.time() - 1}, "deadline has already passed"),
        ({"tenant": "a b"}, "String should match pattern"),
        ({"unknown": 1}, "Extra inputs are not permitted"),
        ({"version": 4}, "Input should be 1, 2 or 3"),
    ],
    ids=["empty", "whitespace", "oversized", "unknown-role", "system-after-the-question", "no-messages",
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


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "c9", "content": "1"}]},
         "no earlier call has"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "not among the tools"),
        ({"tool_choice": "required"}, "needs tools"),
        ({"response_format": {"type": "json_schema"}}, "json_schema"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "1 to 4"),
        ({"extra": {"n": 2}}, "n must be 1"),
        ({"extra": {"temperature": 1}}, "field of its own"),
        ({"version": 1, "temperature": 0.5}, "send version 2"),
    ],
    ids=["orphan-tool-result", "unknown-tool-choice", "choice-without-tools", "schema-without-schema", "five-stops",
         "n-in-extra", "known-field-in-extra", "v1-with-params"],
)  # fmt: skip
def test_version_2_fields_are_checked_where_they_enter(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ChatRequest.model_validate({**fields(), **change})


def test_a_version_1_request_is_still_accepted_and_gets_a_version_1_reply() -> None:
    request = ChatRequest.model_validate({**fields(), "version": 1})
    assert request.version == 1 and request.generation() == {}
    reply = ChatReply(request_id="r", answer="a", usage={"prompt_tokens": 1}).for_version(request.version)  # type: ignore[arg-type]
    assert json.loads(reply.model_dump_json(exclude_none=True)).keys() == {
        "version",
        "request_id",
        "answer",
        "timings_ms",
    }


def test_split_params_routes_known_fields_and_keeps_extensions() -> None:
    assert split_params({"temperature": 0.3, "user": "u", "x_vendor": 1, "n": 1, "logprobs": False}) == {
        "temperature": 0.3, "user": "u", "extra": {"x_vendor": 1}}  # fmt: skip
    with pytest.raises(ValueError, match="n must be 1"):
        split_params({"n": 2})
