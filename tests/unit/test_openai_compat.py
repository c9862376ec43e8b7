"""Gateway objects validate as the official OpenAI SDK's own types; its inputs parse as OpenAI clients send them."""

from __future__ import annotations

import time

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import ValidationError

from producer.openai_compat import Chunks, CompletionBody, completion
from schemas.keys import reply_key
from schemas.messages import ChatDelta, ChatReply, ChatRequest, Tier, ToolCall, Usage


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
