"""Answer composition: what the stand-in answers to a checked request, deterministically (same request, same
answer; ids and `created` differ per call).

- The question is the text of the last user message; the text answer is standin_answer(question), which names
  it. Anything else that could change an answer adds "(variant XXXXXXXX)", a digest of it (variant_of): earlier
  messages, a model other than "standin-1", and every field but messages, stream, stream_options, n, max_tokens,
  max_completion_tokens, user, metadata, store and service_tier (temperature, seed, tools, response_format...),
  so an answer served for other parameters shows.
- `tools` (tool_choice not "none"): when the last message is the user's, or tool_choice is "required" or names a
  function, the answer calls the named function, else the first: content null, finish_reason "tool_calls",
  arguments a JSON object of its parameters schema's required properties (see _sample; strings: the question).
  After `tool` messages the text answer goes on with " Using NAME: RESULT." for each result, so a call, its
  result and the final answer make a round trip.
- `response_format` json_object or json_schema: the content is JSON, {"answer": TEXT} or an object of the
  schema's required properties, with TEXT for strings.
- `max_tokens` / `max_completion_tokens` N: the first N tokens (of the content or the call's arguments) and
  finish_reason "length".

Tokens: a word (\\w+) or one other non-space character, with the whitespace before it; a text's tokens put back
together are the text. usage.prompt_tokens counts those of every message's text (its content, its tool calls'
names and arguments); completion_tokens those of the content or tool-call arguments sent. --tokens N pads answers
to at least N tokens with filler; a longer answer stays whole, as it must name its question.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.local.standin.request import Ask, message_text

# The last alternative matches only trailing whitespace, so that the tokens of a text put back together are the text.
TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
PREFIX = "[stand-in LLM, not a real model]"
MODEL = "standin-1"
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit".split()
# Fields that leave the answer's text as it is, or only cut it short, stay out of its variant; so does the model
# when it is the stand-in's own (variant_of).
NOT_IN_VARIANT = frozenset({
    "model", "messages", "stream", "stream_options", "n", "max_tokens", "max_completion_tokens", "user",
    "metadata", "store", "service_tier",
})  # fmt: skip


def standin_answer(question: str, variant: str = "", min_tokens: int = 0) -> str:
    """The text answer to a question (variant: variant_of the request; min_tokens: the --tokens flag); a checker can
    recompute it to tell a right answer from a wrong one."""
    tag = hashlib.sha256(question.encode("utf-8")).hexdigest()[:12]
    of = f" (variant {variant})" if variant else ""
    return _pad(f"{PREFIX} answer {tag}{of} to: {question}", min_tokens)


def variant_of(body: Mapping[str, Any]) -> str:
    """A digest of what in a request, besides its question, can change the answer; "" when nothing does."""
    shaping = {key: value for key, value in body.items() if key not in NOT_IN_VARIANT}
    if body.get("model", MODEL) != MODEL:
        shaping["model"] = body["model"]
    messages = body.get("messages") or []
    if len(messages) > 1:
        shaping["earlier messages"] = messages[:-1]
    return _digest(shaping)[:8] if shaping else ""


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _pad(text: str, min_tokens: int) -> str:
    # Trailing whitespace would join the first filler word's token.
    missing = min_tokens - len(TOKEN.findall(text.rstrip()))
    return text + "".join(f" {FILLER[i % len(FILLER)]}" for i in range(missing))


def _sample(schema: Any, text: str, depth: int = 0) -> Any:
    """A value valid against a simple reading of a JSON schema: an object of its required properties, an array of
    one item, the const, the first enum value or anyOf/oneOf option, 1 for numbers, true for booleans, and `text`
    for strings and for what it does not read ($ref, a schema nested too deep)."""
    if not isinstance(schema, dict) or depth > 8:
        return text
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if options := schema.get("anyOf") or schema.get("oneOf"):
        return _sample(options[0], text, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        return {name: _sample(properties.get(name), text, depth + 1) for name in schema.get("required") or []}
    if kind == "array":
        return [_sample(schema.get("items"), text, depth + 1)]
    return {"integer": 1, "number": 1, "boolean": True, "null": None}.get(kind, text)


@dataclass(frozen=True)
class Reply:
    """What the stand-in answers to an Ask."""

    pieces: list[str]  # the tokens it sends: of the content, or of the tool call's arguments
    finish_reason: str
    prompt_tokens: int
    call: tuple[str, str] | None = None  # (id, function name) when the answer is a tool call

    def message(self) -> dict[str, Any]:
        text = "".join(self.pieces)
        message: dict[str, Any] = {"role": "assistant", "content": None if self.call else text, "refusal": None,
                                   "annotations": []}  # fmt: skip
        if self.call:
            call_id, name = self.call
            message["tool_calls"] = [{"id": call_id, "type": "function",
                                      "function": {"name": name, "arguments": text}}]  # fmt: skip
        return message

    def usage(self) -> dict[str, int]:
        completion = len(self.pieces)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}  # fmt: skip


def compose(ask: Ask, min_tokens: int) -> Reply:
    """The answer to a request (the module's docstring tells which); min_tokens: the --tokens flag."""
    if ask.tool is not None:
        parameters = ask.tool.get("parameters") or {"type": "object"}
        text = json.dumps(_sample(parameters, ask.question), ensure_ascii=False)
        # Named after the request, streamed or not, so that the same request makes the same call.
        request = {key: value for key, value in ask.body.items() if key not in ("stream", "stream_options")}
        call: tuple[str, str] | None = ("call_" + _digest(request)[:24], ask.tool["name"])
    else:
        call = None
        text = _pad(standin_answer(ask.question, variant_of(ask.body)) + _tool_results(ask.messages), min_tokens)
        if ask.schema is not None:
            text = json.dumps(_sample(ask.schema, text), ensure_ascii=False)
    pieces = TOKEN.findall(text)
    cut = ask.limit is not None and len(pieces) > ask.limit
    finish = "length" if cut else "tool_calls" if call else "stop"
    return Reply(pieces[: ask.limit], finish, _prompt_tokens(ask.messages), call)


def _tool_results(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text a final answer adds, " Using NAME: RESULT." for each tool result that ends the conversation."""
    names = {c.get("id"): _function(c).get("name") for m in messages for c in m.get("tool_calls") or []}
    results: list[str] = []
    for message in reversed(messages):
        if message["role"] != "tool":
            break
        results.insert(0, f" Using {names.get(message.get('tool_call_id')) or 'a tool'}: {message_text(message)}.")
    return "".join(results)


def _prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    texts = [message_text(m) for m in messages]
    for call in (c for m in messages for c in m.get("tool_calls") or []):
        texts += [str(_function(call).get("name", "")), str(_function(call).get("arguments", ""))]
    return sum(len(TOKEN.findall(t)) for t in texts)


def _function(call: Mapping[str, Any]) -> Mapping[str, Any]:
    function = call.get("function")
    return function if isinstance(function, dict) else {}
