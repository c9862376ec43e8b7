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
