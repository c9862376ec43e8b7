"""Gateway objects validate as the official OpenAI SDK's own types; its inputs parse as OpenAI clients send them."""

from __future__ import annotations

import time

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import ValidationError

from producer.openai_compat import Chunks, CompletionBody, OpenAIRejects, completion
from producer.settings import get_settings
from schemas.keys import reply_key
from schemas.messages import ChatDelta, ChatReply, ChatRequest, Tier, ToolCall, Usage
from schemas.requests import build_request


def pair() -> tuple[ChatRequest, ChatReply]:
    request = ChatRequest(
        request_id="r1", messages=[{"role": "user", "content": "Why?"}], tenant="t", model="m",  # type: ignore[list-item]
        reply_to=reply_key("r1"), deadline=time.time() + 5,
    )  # fmt: skip
    reply = ChatReply(request_id="r1", answer="Because.", tier=Tier.REDIS, similarity=0.93, entry_id="e1")
    return request, reply


def test_completion_is_a_valid_chat_completion() -> None:
    parsed = ChatCompletion.model_validate(completion(*pair()))
    assert parsed.choices[0].message.content == "Because." and parsed.id == "chatcmpl-r1"


def test_chunks_are_valid_and_end_with_the_finish() -> None:
    request, reply = pair()
    chunks = [ChatCompletionChunk.model_validate(c) for c in Chunks(request, include_usage=False).whole(reply)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Because."
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, "stop"]


def test_a_streamed_miss_relays_deltas_and_ends_with_the_usage_chunk() -> None:
    request, _ = pair()
    reply = ChatReply(request_id="r1", answer="Be cause.", tier=Tier.LLM, finish_reason="length",
                      usage=Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5))  # fmt: skip
    chunks = Chunks(request, include_usage=True)
    events = [chunks.start(), *(chunks.delta(ChatDelta(request_id="r1", seq=i, delta={"content": piece}))
                                for i, piece in enumerate(["Be", " cause."])), *chunks.end(reply)]  # fmt: skip
    parsed = [ChatCompletionChunk.model_validate(c) for c in events]
    assert "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) == "Be cause."
    assert parsed[-2].choices[0].finish_reason == "length" and parsed[-1].choices == []
    assert parsed[-1].usage is not None and parsed[-1].usage.total_tokens == 5
    assert all(c.usage is None for c in parsed[:-1])


def test_a_tool_call_answer_is_an_assistant_message_with_tool_calls() -> None:
    request, _ = pair()
    call = ToolCall.model_validate({"id": "c1", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}})
    reply = ChatReply(request_id="r1", answer="", tier=Tier.EXACT, tool_calls=[call], finish_reason="tool_calls")
    message = ChatCompletion.model_validate(completion(request, reply)).choices[0].message
    assert message.content is None and message.tool_calls is not None
    assert message.tool_calls[0].function.name == "weather"  # type: ignore[union-attr]
    streamed = [ChatCompletionChunk.model_validate(c) for c in Chunks(request, False).whole(reply)]
    assert streamed[1].choices[0].delta.tool_calls[0].id == "c1"  # type: ignore[index]
    assert streamed[-1].choices[0].finish_reason == "tool_calls"


def test_body_keeps_every_field_but_the_tenant_and_joins_content_parts() -> None:
    body = CompletionBody.model_validate({
        "model": "m", "temperature": 0.2, "tenant": "someone-else", "x_vendor": {"a": 1},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo?"}]}],
    })  # fmt: skip
    assert body.chat_messages() == [{"role": "user", "content": "Hello?"}]
    assert body.params() == {"temperature": 0.2, "x_vendor": {"a": 1}}


@pytest.mark.parametrize(
    "bad", [{"messages": []}, {}, {"messages": [{"role": "user", "content": "x"}], "stream": "maybe"}]
)
def test_body_rejects_what_is_no_chat_completion(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CompletionBody.model_validate(bad)


@pytest.mark.parametrize(
    "message", [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "user", "content": "x", "audio": {"id": "a"}}],
)  # fmt: skip
def test_messages_the_cache_cannot_key_on_are_refused(message: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not supported"):
        CompletionBody.model_validate({"messages": [message]}).chat_messages()


def _rejected(body: dict[str, object]) -> str:
    with pytest.raises(OpenAIRejects) as raised:
        CompletionBody.model_validate({"messages": [{"role": "user", "content": "x"}], **body}).params()
    return raised.value.param


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("body", "param"),
    [({"tools": []}, "tools"), ({"tool_choice": "none"}, "tool_choice"),
     ({"parallel_tool_calls": False}, "parallel_tool_calls"), ({"tools": [TOOL, TOOL]}, "tools"),
     ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema"),
     ({"stop": ""}, "stop"), ({"stream_options": {"include_usage": True}}, "stream_options")],
)  # fmt: skip
def test_what_openai_rejects_is_rejected_with_its_param(body: dict[str, object], param: str) -> None:
    assert _rejected(body) == param


def test_a_history_as_openai_accepts_it() -> None:
    body = CompletionBody.model_validate({
        "model": "m", "stream": None, "messages": [
            {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": None, "refusal": "No.", "annotations": [], "audio": {"id": "audio_1"}},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "Still no."}]},
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "user", "content": "What is gout?"},
            {"role": "assistant", "content": "Gout is"},  # a trailing assistant message: the answer's start
        ],
    })  # fmt: skip
    messages = body.chat_messages()
    assert body.stream is False and "annotations" not in messages[1] and messages[2]["refusal"] == "Still no."
    request = build_request(get_settings(), messages=messages, tenant="t", model="m")
    assert request.messages[-1].content == "Gout is" and request.question == "What is gout?"
    opts = CompletionBody.model_validate({"messages": [{"role": "user", "content": "x"}], "stream": True,
                                          "stream_options": {"include_obfuscation": False}})  # fmt: skip
    assert opts.params() == {}
