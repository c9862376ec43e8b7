"""OpenAI's chat-completion shapes the contracts are made of: messages and tool calls, tools, response formats,
and token usage, as OpenAI writes them."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# "developer" is the newer OpenAI name for a system message; both count as the system prompt.
Role = Literal["system", "developer", "user", "assistant", "tool"]
SYSTEM_ROLES = frozenset({"system", "developer"})


class ToolFunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    # JSON text, as the model wrote it (OpenAI does not promise it parses).
    arguments: str


class ToolCall(BaseModel):
    """One function call in an assistant message, as OpenAI sends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: ToolFunctionCall


class ChatMessage(BaseModel):
    """One message of the conversation: system/developer/user text, an assistant's text or tool calls, or a
    tool's result for one of those calls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str | None = None
    # Assistant messages only: the calls the model made (content may then be null).
    tool_calls: tuple[ToolCall, ...] | None = None
    # Tool messages only: the call this is the result of.
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=128)
    name: str | None = Field(default=None, max_length=64)
    # Assistant messages only, as an earlier answer came: its refusal, its audio ({"id": ...}), a legacy
    # function_call. Forwarded, and part of the history.
    refusal: str | None = None
    audio: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _fits_its_role(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError(f"only assistant messages carry tool_calls, not {self.role!r} ones")
        answered = self._answered_by()
        if answered and self.role != "assistant":
            raise ValueError(f"only assistant messages carry {', '.join(answered)}, not {self.role!r} ones")
        if (self.tool_call_id is not None) != (self.role == "tool"):
            raise ValueError("a tool message needs the tool_call_id of the call it answers, and only it has one")
        if self.content is None and not (self.role == "assistant" and (self.tool_calls or answered)):
            raise ValueError(f"a {self.role} message needs content (only an assistant's tool calls come without)")
        return self

    def _answered_by(self) -> dict[str, Any]:
        return {k: v for k, v in (("refusal", self.refusal), ("audio", self.audio),
                                  ("function_call", self.function_call)) if v is not None}  # fmt: skip

    def history_text(self) -> str:
        """How this message enters the scope's context hash (text-only messages: as in version 1)."""
        text = f"{self.role}:{self.content}"
        answered = self._answered_by()
        if self.tool_calls is None and self.tool_call_id is None and not answered:
            return text
        calls = [c.model_dump() for c in self.tool_calls or ()]
        parts: list[Any] = [calls, self.tool_call_id, *([answered] if answered else [])]
        return f"{text}|{json.dumps(parts, sort_keys=True, separators=(',', ':'))}"


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    # A JSON Schema object, passed on as given.
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema", serialization_alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """`text`, JSON mode (`json_object`) or structured output (`json_schema`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("response_format type 'json_schema' goes with a json_schema object, and only it")
        return self


class Usage(BaseModel):
    """Tokens, as OpenAI counts them in `usage`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
