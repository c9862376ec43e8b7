"""The OpenAI chat-completions wire format: the request in (every field kept), completions and chunks out."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.messages import ChatDelta, ChatReply, ChatRequest

# Message fields the cache understands; a field set to null is dropped (SDKs send e.g. "refusal": null back).
# The last three only on assistant messages (an earlier answer as it came).
MESSAGE_FIELDS = ("role", "content", "tool_calls", "tool_call_id", "name", "refusal", "audio", "function_call")
# Accepted in a history and dropped: what the model wrote beside an earlier answer, which it is not sent back.
DROPPED_MESSAGE_FIELDS = ("annotations",)


class OpenAIRejects(ValueError):
    """What OpenAI answers 400 to, with the parameter it names; the gateway refuses it before enqueueing."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    # Accepted; the gateway writes the stream itself and adds no obfuscation padding.
    include_obfuscation: bool | None = None


class CompletionBody(BaseModel):
    """An OpenAI chat-completion request: model, messages and the delivery fields are read here; every other
    field (temperature, tools, response_format, vendor extensions ...) is kept as it came, for the ChatRequest.
    The tenant comes from the API key, whatever the body says."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(default=None, min_length=1, max_length=128)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stream", mode="before")
    @classmethod
    def _null_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    def chat_messages(self) -> list[dict[str, Any]]:
        return [_message(i, m) for i, m in enumerate(self.messages)]

    def params(self) -> dict[str, Any]:
        """The other fields, after OpenAI's own checks (OpenAIRejects). `tenant` is the API key's to say: a body's
        own is dropped, as documented."""
        if self.stream_options is not None and not self.stream:
            raise OpenAIRejects("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                                "stream_options")  # fmt: skip
        params = {k: v for k, v in (self.model_extra or {}).items() if k != "tenant"}
        check_params(params)
        return params

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def check_params(params: dict[str, Any]) -> None:
    """What OpenAI rejects among the generation fields, in its words (OpenAIRejects); the types and ranges are
    ChatRequest's to check."""
    tools = params.get("tools")
    if tools == []:
        raise OpenAIRejects("Invalid 'tools': empty array. Expected an array with minimum length 1, but got an "
                            "empty array instead.", "tools")  # fmt: skip
    for name in ("tool_choice", "parallel_tool_calls"):
        if params.get(name) is not None and not tools:
            raise OpenAIRejects(f"Invalid value for '{name}': '{name}' is only allowed when 'tools' are specified.",
                                name)  # fmt: skip
    if isinstance(tools, list):
        names = [t.get("function", {}).get("name") for t in tools if isinstance(t, dict)]
        repeated = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
        if repeated:
            raise OpenAIRejects(f"Invalid 'tools': function names must be unique, {repeated[0]!r} is repeated.",
                                "tools")  # fmt: skip
    fmt = params.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("json_schema")
        if not isinstance(schema, dict) or schema.get("schema") is None:
            raise OpenAIRejects("Missing required parameter: 'response_format.json_schema.schema'.",
                                "response_format.json_schema.schema")  # fmt: skip
    stop = params.get("stop")
    if stop == "" or (isinstance(stop, list) and "" in stop):
        raise OpenAIRejects("Invalid 'stop': empty string. Expected a string with minimum length 1.", "stop")


def _message(index: int, message: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in message.items() if v is not None and k not in DROPPED_MESSAGE_FIELDS}
    known = MESSAGE_FIELDS if fields.get("role") == "assistant" else MESSAGE_FIELDS[:5]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ValueError(f"messages.{index}: field(s) {', '.join(unknown)} are not supported by the cache")
    content = fields.get("content")
    if isinstance(content, list):  # newer SDKs send content as parts; a cache can only key on text
        kinds = ("text", "refusal") if fields.get("role") == "assistant" else ("text",)
        if not all(isinstance(p, dict) and p.get("type") in kinds and isinstance(p.get(p["type"]), str)
                   for p in content):  # fmt: skip
            raise ValueError(f"messages.{index}.content: parts other than text are not supported by the cache")
        text = "".join(p["text"] for p in content if p["type"] == "text")
        refusal = "".join(p["refusal"] for p in content if p["type"] == "refusal")
        fields["content"] = text if text or not refusal else None
        if refusal:
            fields["refusal"] = fields.get("refusal", "") + refusal
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
