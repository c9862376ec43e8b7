"""A stand-in for an LLM that speaks OpenAI's chat-completions API, for offline runs and tests.

It is no model, and says so: every text answer starts with "[stand-in LLM, not a real model]", every response
carries the header `X-Standin-LLM: not a real model`, and completions say `system_fingerprint: "standin"`.

POST /v1/chat/completions answers in OpenAI's shapes: a `chat.completion`, or with `stream: true` server-sent
events, `data: {chat.completion.chunk}` each, the first delta {"role": "assistant", "content": ""}, one token a
chunk, the last delta {} with the finish_reason, then `data: [DONE]`. With `stream_options: {"include_usage":
true}` every chunk has "usage": null and one more chunk before [DONE] has no choices and the usage. Bad input gets
a 400 with OpenAI's body, {"error": {"message", "type", "param", "code"}}; so does `n` other than 1, which the
stand-in does not support (as some OpenAI models do not).

What it answers, deterministically (same request, same answer; ids and `created` differ per call):
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
names and arguments); completion_tokens those of the content or tool-call arguments sent.

Pacing: the first token comes --first-token-ms after the request, the next ones --token-ms apart (default 0), and
a non-streamed answer comes when its last token would. Without --first-token-ms the first token (and so with
--token-ms 0 the whole answer, as before streams) takes --delay-ms, ±25 % spread per question. --tokens N pads
answers to at least N tokens with filler; a longer answer stays whole, as it must name its question.

Markers in the question inject faults: `[[standin:status=500]]` answers that HTTP status with an error body,
`[[standin:sleep=5]]` makes the first token wait 5 s, `[[standin:malformed]]` answers a body (or a stream chunk)
that is no chat completion, `[[standin:drop-after=3]]` closes the connection after 3 tokens of a stream (without
[DONE] nor the end of the chunked body; not streamed: instead of the answer), `[[standin:hold-after=2]]` pauses
a stream after 2 tokens until POST /standin/release, and (not streamed) `[[standin:as=refusal]]`,
`as=bad_args` (a tool call whose arguments are not JSON), `as=length` or `as=content_filter` shape the answer.

For tests: `GET /standin/calls?q=TEXT` tells how many times a question was asked (tests count LLM calls);
`GET /standin/concurrency` the calls in flight and the most seen at once since the last read;
`GET /standin/streams` the streams in progress ("in_progress": id as in their chunks, question, tokens_sent,
tokens_total, held) and how many "finished", were "dropped" by a marker or "abandoned" by their client;
`POST /standin/release[?id=ID]` lets the streams in progress (or one) go on past their hold-after marker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MARKER = re.compile(r"\[\[standin:([\w-]+)(?:=([\w.]+))?\]\]")
# The last alternative matches only trailing whitespace, so that the tokens of a text put back together are the text.
TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
PREFIX = "[stand-in LLM, not a real model]"
MODEL = "standin-1"
FINGERPRINT = "standin"
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit".split()
# Fields that leave the answer's text as it is, or only cut it short, stay out of its variant; so does the model
# when it is the stand-in's own (variant_of).
NOT_IN_VARIANT = frozenset({
    "model", "messages", "stream", "stream_options", "n", "max_tokens", "max_completion_tokens", "user",
    "metadata", "store", "service_tier",
})  # fmt: skip
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
RANGES = {"temperature": (0, 2), "top_p": (0, 1), "presence_penalty": (-2, 2), "frequency_penalty": (-2, 2)}
ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
ENDINGS = ("finished", "dropped", "abandoned")


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


class BadRequest(Exception):
    """A request OpenAI would refuse with a 400."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass(frozen=True)
class Ask:
    """A checked request."""

    body: dict[str, Any]
    messages: list[dict[str, Any]]
    question: str
    stream: bool
    include_usage: bool
    limit: int | None
    tool: dict[str, Any] | None  # the function to call, when the answer is a tool call
    schema: dict[str, Any] | None  # the JSON schema of the content, in JSON mode


def parse(body: Any) -> Ask:
    """The request, or BadRequest with what OpenAI says about it."""
    if not isinstance(body, dict):
        raise BadRequest("Invalid type for request body: expected an object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("you must provide a model parameter")
    messages = _messages(body)
    _check_numbers(body)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    options = body.get("stream_options")
    if options is not None and not stream:
        raise BadRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
    asker = next((m for m in reversed(messages) if m["role"] == "user"), messages[-1])
    return Ask(
        body=body, messages=messages, question=_text(asker), stream=bool(stream),
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        limit=body.get("max_completion_tokens") or body.get("max_tokens"),
        tool=_tool(body, messages), schema=_schema(body, messages),
    )  # fmt: skip


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise BadRequest("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("Invalid type for 'messages': expected an array of objects.", "messages", "invalid_type")
    if not messages:
        raise BadRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages", "empty_array",
        )  # fmt: skip
    called: set[Any] = set()
    for i, message in enumerate(messages):
        _check_message(i, message, called)
    return messages


def _check_message(i: int, message: dict[str, Any], called: set[Any]) -> None:
    """Checks one message; `called` gathers the ids of the tool calls so far, which tool messages answer."""
    role = message.get("role")
    if role not in ROLES:
        raise BadRequest(
            f"Invalid value: {json.dumps(role)}. Supported values are: 'system', 'assistant', 'user', 'function', "
            "'tool', and 'developer'.", f"messages[{i}].role", "invalid_value",
        )  # fmt: skip
    content = message.get("content")
    if not isinstance(content, str | list) and not (content is None and role == "assistant"):
        raise BadRequest(
            f"Invalid type for 'messages[{i}].content': expected a string or an array of content parts.",
            f"messages[{i}].content", "invalid_type",
        )  # fmt: skip
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise BadRequest(f"Invalid type for 'messages[{i}].tool_calls': expected an array of objects.",
                         f"messages[{i}].tool_calls", "invalid_type")  # fmt: skip
    called.update(c.get("id") for c in calls)
    if role == "tool" and message.get("tool_call_id") not in called:
        # OpenAI's own wording, spelling included.
        raise BadRequest("Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                         "with 'tool_calls'.", f"messages.[{i}].role")  # fmt: skip


def _check_numbers(body: dict[str, Any]) -> None:
    for name in ("n", "max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadRequest(f"Invalid type for '{name}': expected an integer, but got {json.dumps(value)} instead.",
                             name, "invalid_type")  # fmt: skip
        if value < 1:
            raise BadRequest(f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got "
                             f"{value} instead.", name, "integer_below_min_value")  # fmt: skip
    if body.get("n") not in (None, 1):
        raise BadRequest(f"Unsupported value: 'n' does not support {body['n']} with this model. Only the default "
                         "(1) value is supported.", "n", "unsupported_value")  # fmt: skip
    for name, (low, high) in RANGES.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise BadRequest(f"Invalid type for '{name}': expected a number, but got {json.dumps(value)} instead.",
                             name, "invalid_type")  # fmt: skip
        if value < low:
            raise BadRequest(f"Invalid '{name}': decimal below minimum value. Expected a value >= {low}, but got "
                             f"{value} instead.", name, "decimal_below_min_value")  # fmt: skip
        if value > high:
            raise BadRequest(f"Invalid '{name}': decimal above maximum value. Expected a value <= {high}, but got "
                             f"{value} instead.", name, "decimal_above_max_value")  # fmt: skip


def _tool(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The function the answer calls, if it calls one."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools is None:
        if choice is not None:
            raise BadRequest("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                             "specified.", "tool_choice")  # fmt: skip
        return None
    if not isinstance(tools, list) or not tools:
        raise BadRequest("Invalid 'tools': expected a non-empty array of tools.", "tools", "invalid_value")
    functions: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest(f"Invalid 'tools[{i}]': expected a function tool with a name.", f"tools[{i}]",
                             "invalid_value")  # fmt: skip
        functions.setdefault(function["name"], function)
    if isinstance(choice, dict):
        named = choice.get("function")
        name = named.get("name") if isinstance(named, dict) else None
        if name not in functions:
            raise BadRequest(f"Invalid value for 'tool_choice': function {json.dumps(name)} is not in 'tools'.",
                             "tool_choice", "invalid_value")  # fmt: skip
        return functions[name]
    if choice not in (None, "none", "auto", "required"):
        raise BadRequest(f"Invalid value: {json.dumps(choice)}. Supported values are: 'none', 'auto', and "
                         "'required'.", "tool_choice", "invalid_value")  # fmt: skip
    if choice == "required" or (choice != "none" and messages[-1]["role"] == "user"):
        return next(iter(functions.values()))
    return None


def _schema(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The JSON schema the content follows, in JSON mode."""
    response_format = body.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        if not any("json" in _text(m).lower() for m in messages):
            raise BadRequest("'messages' must contain the word 'json' in some form, to use 'response_format' of "
                             "type 'json_object'.", "messages")  # fmt: skip
        return ANSWER_SCHEMA
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest("Missing required parameter: 'response_format.json_schema.name'.",
                             "response_format.json_schema.name", "missing_required_parameter")  # fmt: skip
        schema = spec.get("schema")
        return schema if isinstance(schema, dict) else ANSWER_SCHEMA
    raise BadRequest(f"Invalid value: {json.dumps(kind)}. Supported values are: 'text', 'json_object', and "
                     "'json_schema'.", "response_format.type", "invalid_value")  # fmt: skip


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


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
        results.insert(0, f" Using {names.get(message.get('tool_call_id')) or 'a tool'}: {_text(message)}.")
    return "".join(results)


def _prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    texts = [_text(m) for m in messages]
    for call in (c for m in messages for c in m.get("tool_calls") or []):
        texts += [str(_function(call).get("name", "")), str(_function(call).get("arguments", ""))]
    return sum(len(TOKEN.findall(t)) for t in texts)


def _function(call: Mapping[str, Any]) -> Mapping[str, Any]:
    function = call.get("function")
    return function if isinstance(function, dict) else {}


@dataclass(frozen=True)
class Pacing:
    """When the tokens come: the command line's flags, in seconds."""

    delay_s: float
    first_token_s: float | None
    token_s: float
    min_tokens: int

    def first_token(self, question: str, sleep: str | None) -> float:
        if sleep:
            return float(sleep)
        if self.first_token_s is not None:
            return self.first_token_s
        # A base delay with +-25% spread per question, like a real model's varying length.
        spread = int(hashlib.sha256(question.encode()).hexdigest()[:4], 16) / 0xFFFF - 0.5
        return self.delay_s * (1 + spread / 2)


@dataclass
class Stream:
    """A stream in progress, as GET /standin/streams reports it."""

    id: str
    question: str
    tokens_total: int
    tokens_sent: int = 0
    held: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def report(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "tokens_sent": self.tokens_sent,
                "tokens_total": self.tokens_total, "held": self.held}  # fmt: skip


CALLS: web.AppKey[Counter[str]] = web.AppKey("calls", Counter)
PACING: web.AppKey[Pacing] = web.AppKey("pacing", Pacing)
# [calls in flight, most in flight at once since the last GET /standin/concurrency]
IN_FLIGHT: web.AppKey[list[int]] = web.AppKey("in_flight", list)
STREAMS: web.AppKey[dict[str, Stream]] = web.AppKey("streams", dict)
ENDED: web.AppKey[Counter[str]] = web.AppKey("ended", Counter)


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> web.Response:
    kind = "server_error" if status >= 500 else "requests" if status == 429 else "invalid_request_error"
    error = {"message": message, "type": kind, "param": param, "code": code}
    return web.json_response({"error": error}, status=status)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    try:
        ask = parse(await request.json())
    except BadRequest as exc:
        return _error(400, str(exc), exc.param, exc.code)
    except ValueError:
        return _error(400, "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.")
    request.app[CALLS][ask.question] += 1
    flight = request.app[IN_FLIGHT]
    flight[0] += 1
    flight[1] = max(flight)
    try:
        return await _answer(request, ask)
    finally:
        flight[0] -= 1


async def _answer(request: web.Request, ask: Ask) -> web.StreamResponse:
    faults = dict(MARKER.findall(ask.question))
    pacing = request.app[PACING]
    reply = compose(ask, pacing.min_tokens)
    await asyncio.sleep(pacing.first_token(ask.question, faults.get("sleep")))
    if "status" in faults:
        return _error(int(faults["status"]), "stand-in fault")
    if ask.stream:
        return await _stream(request, ask, reply, faults)
    await asyncio.sleep(pacing.token_s * (len(reply.pieces) - 1))
    if "malformed" in faults:
        return web.json_response({"unexpected": True})
    if "drop-after" in faults:
        _drop(request)
        return web.Response()  # never sent: the connection is closed
    return web.json_response({
        "id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": ask.body["model"],
        "choices": [{"index": 0, **_shaped(faults.get("as"), reply)}],
        "usage": reply.usage(), "service_tier": "default", "system_fingerprint": FINGERPRINT,
    })  # fmt: skip


def _shaped(shape: str | None, reply: Reply) -> dict[str, Any]:
    """A choice's message and finish_reason; `[[standin:as=...]]` makes it a refusal, a tool call whose arguments
    are not JSON, or an answer cut short (length, content_filter)."""
    message, finish = reply.message(), reply.finish_reason
    if shape == "refusal":
        message, finish = {**message, "content": None, "refusal": "I can't help with that."}, "stop"
    elif shape == "bad_args":
        call = {"id": "call_bad", "type": "function", "function": {"name": "lookup", "arguments": "{not json"}}
        message, finish = {**message, "content": None, "tool_calls": [call]}, "tool_calls"
    elif shape is not None:
        finish = shape
    return {"message": message, "logprobs": None, "finish_reason": finish}


def _completion_id() -> str:
    return "chatcmpl-standin-" + uuid.uuid4().hex


def _drop(request: web.Request) -> None:
    # Closing the transport ends the connection without the rest of the body: aiohttp's final write then fails.
    if request.transport is not None:
        request.transport.close()


async def _stream(request: web.Request, ask: Ask, reply: Reply, faults: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache"})  # fmt: skip
    await response.prepare(request)
    stream = Stream(_completion_id(), ask.question, len(reply.pieces))
    request.app[STREAMS][stream.id] = stream
    ending = "abandoned"
    try:
        with contextlib.suppress(ConnectionResetError):  # the client went away: it stays "abandoned"
            ending = await _send(response, ask, reply, stream, faults, request.app[PACING].token_s)
    finally:
        del request.app[STREAMS][stream.id]
        request.app[ENDED][ending] += 1
    if ending == "dropped":
        _drop(request)
    return response


async def _send(
    response: web.StreamResponse, ask: Ask, reply: Reply, stream: Stream, faults: dict[str, str], token_s: float
) -> str:
    """Sends the stream's events; how it ended ("finished" or "dropped")."""
    if "malformed" in faults:
        await response.write(_event({"unexpected": True}) + b"data: [DONE]\n\n")
        return "finished"
    base: dict[str, Any] = {
        "id": stream.id, "object": "chat.completion.chunk", "created": int(time.time()), "model": ask.body["model"],
        "service_tier": "default", "system_fingerprint": FINGERPRINT,
    }  # fmt: skip
    if ask.include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _event({**base, "choices": [choice]})

    first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    if reply.call:
        call_id, name = reply.call
        first.update(content=None, tool_calls=[{"index": 0, "id": call_id, "type": "function",
                                                "function": {"name": name, "arguments": ""}}])  # fmt: skip
    await response.write(chunk(first))
    for piece in reply.pieces:
        if await _checkpoint(stream, faults):
            return "dropped"
        if stream.tokens_sent:
            await asyncio.sleep(token_s)
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]} if reply.call else {"content": piece}
        await response.write(chunk(delta))
        stream.tokens_sent += 1
    if await _checkpoint(stream, faults):
        return "dropped"
    await response.write(chunk({}, reply.finish_reason))
    if ask.include_usage:
        await response.write(_event({**base, "choices": [], "usage": reply.usage()}))
    await response.write(b"data: [DONE]\n\n")
    return "finished"


async def _checkpoint(stream: Stream, faults: dict[str, str]) -> bool:
    """Holds the stream here if a hold-after marker says so; whether a drop-after marker ends it here."""
    if "hold-after" in faults and int(faults["hold-after"]) == stream.tokens_sent:
        stream.held = True
        await stream.release.wait()
        stream.held = False
    return "drop-after" in faults and int(faults["drop-after"]) == stream.tokens_sent


def _event(data: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def calls(request: web.Request) -> web.Response:
    counter = request.app[CALLS]
    question = request.query.get("q")
    count = counter[question] if question is not None else sum(counter.values())
    return web.json_response({"calls": count})


async def concurrency(request: web.Request) -> web.Response:
    flight = request.app[IN_FLIGHT]
    now, peak = flight
    flight[1] = now
    return web.json_response({"in_flight": now, "peak": peak})


async def streams(request: web.Request) -> web.Response:
    ended = request.app[ENDED]
    in_progress = [s.report() for s in request.app[STREAMS].values()]
    return web.json_response({"in_progress": in_progress, **{ending: ended[ending] for ending in ENDINGS}})


async def release(request: web.Request) -> web.Response:
    wanted = request.query.get("id")
    chosen = [s for s in request.app[STREAMS].values() if wanted in (None, s.id)]
    for stream in chosen:
        stream.release.set()
    return web.json_response({"released": len(chosen)})


async def _say_standin(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Standin-LLM"] = "not a real model"
    response.headers["x-request-id"] = "req_standin_" + uuid.uuid4().hex


def make_app(
    delay_s: float = 0.8, first_token_s: float | None = None, token_s: float = 0.0, min_tokens: int = 0
) -> web.Application:
    """The stand-in; the arguments are the command line's flags, in seconds (see the module's docstring)."""
    app = web.Application()
    app[CALLS] = Counter()
    app[PACING] = Pacing(delay_s, first_token_s, token_s, min_tokens)
    app[IN_FLIGHT] = [0, 0]
    app[STREAMS] = {}
    app[ENDED] = Counter()
    app.on_response_prepare.append(_say_standin)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/standin/calls", calls)
    app.router.add_get("/standin/concurrency", concurrency)
    app.router.add_get("/standin/streams", streams)
    app.router.add_post("/standin/release", release)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=800.0,
        help="the first token's delay, +-25%% per question, unless --first-token-ms is given",
    )
    parser.add_argument("--first-token-ms", type=float, help="the first token's delay, the same for every question")
    parser.add_argument("--token-ms", type=float, default=0.0, help="the pace of the tokens after the first")
    parser.add_argument("--tokens", type=int, default=0, help="pad answers to at least this many tokens")
    args = parser.parse_args()
    first_token_s = None if args.first_token_ms is None else args.first_token_ms / 1000
    app = make_app(args.delay_ms / 1000, first_token_s, args.token_ms / 1000, args.tokens)
    # A client that goes away cancels its call, as it stops a real model's generation: streams count as
    # "abandoned" at once and calls in flight go down.
    web.run_app(app, host=args.host, port=args.port, print=None, handler_cancellation=True)


if __name__ == "__main__":
    main()
