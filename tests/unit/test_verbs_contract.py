"""The lookup-only and store contracts (schemas.verbs), what a version 1 or 2 producer is sent back, and how the
LangChain cache reads LangChain's prompt and llm_string: no servers needed."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import ValidationError

from producer.base import lookup_message
from producer.langchain import DejavuCache, _messages, _model
from schemas.keys import LOOKUP_ONLY_TASK, LOOKUP_TASK, STORE_TASK, reply_key
from schemas.messages import ChatReply, ChatRequest, LookupRequest, StoredAnswer, StoreRequest, Tier

CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def fields(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "What is gout?"}], "tenant": "t", "model": "m",
            "reply_to": reply_key("r1"), "request_id": "r1", "deadline": time.time() + 30, **extra}  # fmt: skip


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "prompt_tokens_details": {}}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}], "model": "gpt-4o", "usage": usage}


def test_a_provider_completion_is_read_whole() -> None:
    answer = StoredAnswer.from_completion(completion({"role": "assistant", "content": None, "tool_calls": [CALL],
                                                      "refusal": None, "annotations": []}, "tool_calls"))  # fmt: skip
    assert answer.message.tool_calls is not None and answer.message.tool_calls[0].model_dump() == CALL
    assert answer.finish_reason == "tool_calls" and answer.usage is not None and answer.usage.total_tokens == 7
    assert answer.model == "gpt-4o" and answer.text == ""


@pytest.mark.parametrize(
    ("message", "finish", "says"),
    [
        ({"role": "assistant", "content": "Gout is"}, "length", "cut short"),
        ({"role": "assistant", "content": "…"}, "content_filter", "cut short"),
        ({"role": "assistant", "content": None, "refusal": "I can't."}, "stop", "refusal"),
        ({"role": "assistant", "content": " "}, "stop", "empty"),
        ({"role": "assistant"}, "stop", "empty"),
        ({"role": "user", "content": "hi"}, "stop", "message.role"),
    ],
)
def test_what_must_not_be_stored_is_refused(message: dict[str, Any], finish: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        StoredAnswer.from_completion(completion(message, finish))


def test_the_verbs_are_chat_requests_with_their_own_limits() -> None:
    assert LookupRequest.model_validate(fields()).version == 3
    with pytest.raises(ValidationError, match="stream"):
        LookupRequest.model_validate(fields(stream=True))
    with pytest.raises(ValidationError, match="no_cache"):
        LookupRequest.model_validate(fields(cache={"no_cache": True}))
    answer = {"message": {"role": "assistant", "content": "A joint disease."}}
    store = StoreRequest.model_validate(fields(answer=answer, temperature=0.2))
    assert store.answer.text == "A joint disease." and store.generation() == {"temperature": 0.2}
    with pytest.raises(ValidationError, match="cache control"):
        StoreRequest.model_validate(fields(answer=answer, cache={"max_age_s": 5}))
    with pytest.raises(ValidationError, match="answer"):
        StoreRequest.model_validate(fields())


def test_each_kind_goes_under_its_own_task_name() -> None:
    answer = StoredAnswer.of("A joint disease.")
    kinds = [(ChatRequest.model_validate(fields()), LOOKUP_TASK),
             (LookupRequest.model_validate(fields()), LOOKUP_ONLY_TASK),
             (StoreRequest.model_validate(fields(answer=answer)), STORE_TASK)]  # fmt: skip
    for request, task in kinds:
        assert json.loads(lookup_message(request))["headers"]["task"] == task


def test_older_producers_get_the_fields_they_know() -> None:
    reply = ChatReply(request_id="r", answer="a", tier=Tier.EXACT, hit=True, message_extra={"k": 1},
                      usage={"prompt_tokens": 1}, finish_reason="stop")  # type: ignore[arg-type]  # fmt: skip
    v2 = reply.for_version(2)
    assert v2.version == 2 and v2.hit is None and v2.message_extra is None and v2.usage is not None
    v1 = reply.for_version(1)
    assert v1.version == 1 and v1.usage is None and v1.finish_reason is None and v1.answer == "a"
    assert reply.for_version(3) is reply


def test_langchain_prompts_become_the_gateways_messages() -> None:
    prompt = dumps([SystemMessage("Be brief."), HumanMessage("Hi"), AIMessage("Hello"), HumanMessage("What is gout?")])
    assert _messages(prompt) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "Hello"},
                                 {"role": "user", "content": "What is gout?"}]  # fmt: skip
    assert _messages("What is gout?") == [{"role": "user", "content": "What is gout?"}]
    llm_string = ChatOpenAI(model="gpt-4o-mini", api_key="x", temperature=0)._get_llm_string()  # type: ignore[arg-type]
    assert _model(llm_string) == "gpt-4o-mini"
    cache = DejavuCache(tenant="app")
    assert cache.scope_tenant(llm_string) != cache.scope_tenant(llm_string + "x")
    assert cache.scope_tenant(llm_string).startswith("app.lc.") and len(cache.scope_tenant(llm_string)) <= 64
    with pytest.raises(ValueError, match="tenant"):
        DejavuCache(tenant="x" * 60)
