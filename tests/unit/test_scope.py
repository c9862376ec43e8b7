"""Everything besides the question that must match for a cached answer to be served."""

from __future__ import annotations

import time
from typing import Any

from schemas.cache import Scope, entry_id, normalize_question, question_hash
from schemas.keys import reply_key
from schemas.messages import ChatRequest


def request(messages: list[dict[str, str]], **change: Any) -> ChatRequest:
    data = {"messages": messages, "tenant": "acme", "model": "m1", "reply_to": reply_key("x"),
            "deadline": time.time() + 10, **change}  # fmt: skip
    return ChatRequest.model_validate(data)


USER = [{"role": "user", "content": "What is gout?"}]


def test_normalization_folds_case_space_and_unicode_forms() -> None:
    assert normalize_question("  What IS\tgout? ") == normalize_question("what is gout?")
    assert normalize_question("ﬁne") == normalize_question("fine")  # NFKC ligature
    assert normalize_question("What is gout?") != normalize_question("What is not gout?")
    assert question_hash("What is gout?") == question_hash("WHAT  is gout?")


def test_scope_changes_with_tenant_model_system_prompt_and_history() -> None:
    base = Scope.of(request(USER)).scope_id
    assert Scope.of(request(USER)).scope_id == base
    assert Scope.of(request(USER, tenant="other")).scope_id != base
    assert Scope.of(request(USER, model="m2")).scope_id != base
    assert Scope.of(request([{"role": "system", "content": "Be a pirate."}, *USER])).scope_id != base
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, *USER]
    assert Scope.of(request(history)).scope_id != base
    # History can be left out of the scope by configuration; the system prompt never is.
    assert Scope.of(request(history), include_history=False).scope_id == base


def test_developer_role_counts_as_the_system_prompt() -> None:
    system = Scope.of(request([{"role": "system", "content": "S"}, *USER]))
    developer = Scope.of(request([{"role": "developer", "content": "S"}, *USER]))
    assert system.scope_id == developer.scope_id


def test_entry_id_is_deterministic_per_scope_and_question() -> None:
    scope = Scope.of(request(USER))
    other = Scope.of(request(USER, tenant="other"))
    assert entry_id(scope, question_hash("What is gout?")) == entry_id(scope, question_hash("what is GOUT?"))
    assert entry_id(scope, question_hash("What is gout?")) != entry_id(other, question_hash("What is gout?"))


def test_every_answer_shaping_field_changes_the_scope_and_delivery_fields_do_not() -> None:
    base = Scope.of(request(USER)).scope_id
    shaping: list[dict[str, Any]] = [
        {"temperature": 1.0}, {"temperature": 0.0}, {"top_p": 0.5}, {"max_tokens": 5}, {"max_completion_tokens": 5},
        {"stop": ["\n"]}, {"seed": 7}, {"presence_penalty": 1.0}, {"frequency_penalty": 1.0},
        {"logit_bias": {"50256": -100}}, {"response_format": {"type": "json_object"}},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"},
        {"parallel_tool_calls": False}, {"extra": {"reasoning_effort": "high"}},
    ]  # fmt: skip
    ids = [Scope.of(request(USER, **change)).scope_id for change in shaping]
    assert base not in ids and len(set(ids)) == len(ids)
    delivery: list[dict[str, Any]] = [{"user": "u1"}, {"metadata": {"a": "b"}}, {"store": True}, {"stream": True},
                                      {"cache": {"no_store": True, "max_age_s": 5}}]  # fmt: skip
    assert {Scope.of(request(USER, **change)).scope_id for change in delivery} == {base}


def test_a_request_without_parameters_keeps_its_version_1_scope() -> None:
    # Entries stored before version 2 stay reachable: the scope of a plain request did not move.
    v1 = request(USER, version=1)
    assert Scope.of(v1).scope_id == Scope.of(request(USER)).scope_id
    assert Scope.of(v1).params_hash == ""


def test_tool_calls_and_results_after_the_question_are_part_of_the_scope() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    turn = [*USER, {"role": "assistant", "tool_calls": [call]}, {"role": "tool", "tool_call_id": "c1", "content": "4"}]
    other = [*turn[:2], {"role": "tool", "tool_call_id": "c1", "content": "5"}]
    scopes = {Scope.of(request(m), include_history=False).scope_id for m in (USER, turn, other)}
    assert len(scopes) == 3
    assert request(turn).question == "What is gout?"
