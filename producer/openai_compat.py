"""The OpenAI chat-completions wire format: the request in (every field kept), completions and chunks out."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.messages import ChatDelta, ChatReply, ChatRequest

# Message fields the cache understands; a field set to null is dropped (SDKs send e.g. "refusal": null back).
MESSAGE_FIELDS = ("role", "content", "tool_calls", "tool_call_id", "name")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class CompletionBody(BaseModel):
    """An OpenAI chat-completion request: model, messages and the delivery fields are read here; every other
    field (temperature, tools, response_format, vendor extensions ...) is kept as it came, for the ChatRequest.
    The tenant comes from the API key, whatever the body says."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(default=None, min_length=1, max_length=128)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def chat_messages(self) -> list[dict[str, Any]]:
        return [_message(i, m) for i, m in enumerate(self.messages)]

    def params(self) -> dict[str, Any]:
        # `tenant` is the API key's to say: a body's own is dropped, as documented.
        return {k: v for k, v in (self.model_extra or {}).items() if k != "tenant"}

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def _message(index: int, message: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in message.items() if v is not None}
    unknown = sorted(set(fields) - set(MESSAGE_FIELDS))
    if unknown:
        raise ValueError(f"messages.{index}: field(s) {', '.join(unknown)} are not supported by the cache")
    content = fields.get("content")
    if isinstance(content, list):  # newer SDKs send content as parts; a cache can only key on text
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise ValueError(f"messages.{index}.content: parts other than text are not supported by the cache")
        fields["content"] = "".join(p["text"] for p in content)
    return fields


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def _message_of(reply: ChatReply) -> dict[str, Any]:
    # Content is null beside tool calls, a refusal or audio when there is no text, as OpenAI sends it.
    besides = reply.tool_calls or reply.refusal is not None or reply.audio is not None
    message: dict[str, Any] = {"role": "assistant", "content": (reply.answer or None) if besides else reply.answer}
    if reply.tool_calls:
        message["tool_calls"] = [call.model_dump() for call in reply.tool_calls]
    if reply.refusal is not None:
        message["refusal"] = reply.refusal
    if reply.audio is not None:
        message["audio"] = reply.audio
    return message


def usage_of(reply: ChatReply) -> dict[str, int]:
    """What this request cost: the LLM's usage on a miss, zero on a hit (the savings go in a header)."""
    return (reply.usage.model_dump() if reply.usage is not None else
            {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})  # fmt: skip


def completion(request: ChatRequest, reply: ChatReply) -> dict[str, Any]:
    """A `chat.completion` object for an answered request."""
    return {
        "id": completion_id(reply.request_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": _message_of(reply),
                "logprobs": None,
                "finish_reason": reply.finish_reason or "stop",
            }
        ],
        "usage": usage_of(reply),
    }


class Chunks:
    """`chat.completion.chunk` objects for one streamed response, as OpenAI sends them: the role first, then the
    deltas, then the finish, then (with `stream_options.include_usage`) a last chunk with no choices and the usage;
    with include_usage every other chunk carries `"usage": null`."""

    def __init__(self, request: ChatRequest, include_usage: bool) -> None:
        self.id, self.model, self.created = completion_id(request.request_id), request.model, int(time.time())
        self.include_usage = include_usage

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [choice]}  # fmt: skip
        return body | ({"usage": None} if self.include_usage else {})

    def start(self) -> dict[str, Any]:
        return self.chunk({"role": "assistant", "content": ""})

    def delta(self, event: ChatDelta) -> dict[str, Any]:
        return self.chunk(event.delta)

    def end(self, reply: ChatReply) -> list[dict[str, Any]]:
        chunks = [self.chunk({}, reply.finish_reason or "stop")]
        if self.include_usage:
            chunks.append({**self.chunk({}), "choices": [], "usage": usage_of(reply)})
        return chunks

    def whole(self, reply: ChatReply) -> list[dict[str, Any]]:
        """A reply that came whole (a hit): its message in one delta, then the end."""
        delta: dict[str, Any] = {"content": reply.answer} if reply.answer else {}
        if reply.tool_calls:
            delta["tool_calls"] = [{"index": i, **call.model_dump()} for i, call in enumerate(reply.tool_calls)]
        return [self.start(), self.chunk(delta), *self.end(reply)]
