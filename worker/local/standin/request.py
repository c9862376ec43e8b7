"""Request validation: a chat-completions body checked as OpenAI checks it, or BadRequest with OpenAI's words.

Bad input gets a 400 with OpenAI's body, {"error": {"message", "type", "param", "code"}} (serve.py writes it); so does
`n` other than 1, which the stand-in does not support (as some OpenAI models do not). What the checked request
asks for (a tool call, JSON content, a token limit) is read here too, and answered by answer.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
RANGES = {"temperature": (0, 2), "top_p": (0, 1), "presence_penalty": (-2, 2), "frequency_penalty": (-2, 2)}
ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


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
        body=body, messages=messages, question=message_text(asker), stream=bool(stream),
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
        if not any("json" in message_text(m).lower() for m in messages):
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


def message_text(message: Mapping[str, Any]) -> str:
    """A message's text: its content, or the text parts of it."""
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""
