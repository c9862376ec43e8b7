"""Gateway objects validate as the official OpenAI SDK's own types; its inputs parse as OpenAI clients send them."""

from __future__ import annotations

import time

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import ValidationError

from producer.openai_compat import CompletionBody, completion, completion_chunks
from schemas.keys import reply_key
from schemas.messages import ChatReply, ChatRequest, Tier


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
    chunks = [ChatCompletionChunk.model_validate(c) for c in completion_chunks(*pair())]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Because."
    assert [c.choices[0].finish_reason for c in chunks] == [None, "stop"]


def test_body_accepts_content_parts_and_ignores_sampling_options() -> None:
    body = CompletionBody.model_validate({
        "model": "m", "temperature": 0.2, "tenant": "someone-else",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo?"}]}],
    })  # fmt: skip
    assert body.chat_messages() == [{"role": "user", "content": "Hello?"}]
    assert not hasattr(body, "tenant")


@pytest.mark.parametrize("bad", [{"messages": []}, {"messages": [{"role": "user", "content": "x"}], "n": 2}, {}])
def test_body_rejects_what_a_cache_cannot_serve(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CompletionBody.model_validate(bad)
