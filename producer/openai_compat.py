"""The OpenAI chat-completions wire format, as far as a cache can honour it: request in, objects out."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.messages import ChatReply, ChatRequest


class TextPart(BaseModel):
    # Newer SDKs may send content as a list of parts; a cache can only key on text.
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class CompletionMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # Checked against the cache's roles when the ChatRequest is built, with its clearer message.
    role: str
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class CompletionBody(BaseModel):
    """The fields the gateway reads; sampling options (temperature, max_tokens, user, ...) are accepted and ignored,
    and so is any tenant in the body: the tenant comes from the API key."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, min_length=1, max_length=128)
    messages: list[CompletionMessage] = Field(min_length=1)
    stream: bool = False
    # One cached answer per question: more choices cannot be served.
    n: Literal[1] = 1

    def chat_messages(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def completion(request: ChatRequest, reply: ChatReply) -> dict[str, Any]:
    """A `chat.completion` object for an answered request (usage is omitted: a cache hit spends no tokens)."""
    return {
        "id": completion_id(reply.request_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.answer or ""},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }


def completion_chunks(request: ChatRequest, reply: ChatReply) -> list[dict[str, Any]]:
    """The answer as `chat.completion.chunk` events: the whole text in one delta, then the finish."""
    created = int(time.time())

    def chunk(delta: dict[str, str], finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": completion_id(reply.request_id),
            "object": "chat.completion.chunk",
            "created": created,
            "model": request.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    return [chunk({"role": "assistant", "content": reply.answer or ""}, None), chunk({}, "stop")]
