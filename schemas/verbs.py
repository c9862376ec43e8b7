"""The cache's two verbs for callers that make their own LLM call (version 3): look up without asking the LLM, and
store an answer got elsewhere.

Both are chat requests (same messages, scope fields and limits as `ChatRequest`), sent on the `lookup` queue under
their own task names (schemas.keys), and answered with one `ChatReply`:
- `LookupRequest`: the lookup stages only; the reply is a hit (the cached answer, tier, similarity, entry id, the
  usage it saved; `hit: true`) or a miss (`hit: false`). It never calls the LLM nor waits for another caller's call.
- `StoreRequest`: `answer` is stored under the request's scope and question through the same write-back as an LLM
  answer; the reply names the entry id once the write-back is queued. An answer that is empty, cut short or a
  refusal is refused at validation, so nothing is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.chat import CacheControl, ChatRequest
from schemas.openai_shapes import ChatMessage, FinishReason, Usage

VERBS_VERSION: Final = 3
# Finish reasons of an answer that was cut off before its end: never stored.
CUT_SHORT = frozenset({"length", "content_filter"})


class LookupRequest(ChatRequest):
    """Look the question up in every tier; never ask the LLM."""

    version: Literal[3] = VERBS_VERSION

    @model_validator(mode="after")
    def _only_a_lookup(self) -> LookupRequest:
        if self.stream:
            raise ValueError("stream: a lookup has no LLM answer to stream")
        if self.cache.no_cache:
            raise ValueError("cache.no_cache: a lookup that skips the cache looks nothing up")
        return self


class StoredAnswer(BaseModel):
    """The answer a caller got from its own model: the assistant message and what OpenAI's choice says about it."""

    model_config = ConfigDict(extra="forbid")

    message: ChatMessage
    finish_reason: FinishReason = "stop"
    usage: Usage | None = None
    # The model that answered, as the provider named it (the scope's model is the request's `model`).
    model: str | None = Field(default=None, max_length=128)
    # OpenAI's `refusal` text, when the model declined.
    refusal: str | None = None
    # Other fields of the assistant message (LangChain's additional_kwargs), returned as given on a hit.
    message_extra: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _worth_storing(self) -> StoredAnswer:
        if self.message.role != "assistant":
            raise ValueError(f"message.role: the answer is an assistant message, not a {self.message.role!r} one")
        if self.refusal is not None:
            raise ValueError("refusal: the answer is a refusal, which is never stored")
        if self.finish_reason in CUT_SHORT:
            raise ValueError(f"finish_reason: the answer was cut short ({self.finish_reason!r}); only whole answers "
                             "are stored")  # fmt: skip
        if not (self.message.content or "").strip() and not self.message.tool_calls:
            raise ValueError("message: the answer is empty (no text, no tool calls); nothing to store")
        return self

    @property
    def text(self) -> str:
        return self.message.content or ""

    @classmethod
    def of_text(cls, text: str, **fields: Any) -> StoredAnswer:
        return cls.model_validate({"message": {"role": "assistant", "content": text}, **fields})

    @classmethod
    def of(cls, response: str | StoredAnswer | Mapping[str, Any]) -> StoredAnswer:
        """What a client's `store` takes: the answer's text, a StoredAnswer or its fields, or the provider's
        `chat.completion` object as it came (it has `choices`)."""
        if isinstance(response, str):
            return cls.of_text(response)
        if isinstance(response, StoredAnswer):
            return response
        return cls.from_completion(response) if "choices" in response else cls.model_validate(response)

    @classmethod
    def from_completion(cls, completion: Any) -> StoredAnswer:
        """The answer in a provider's `chat.completion` object, as it came: its first choice, usage and model.
        Raises ValueError (pydantic's ValidationError is one) naming the field that is wrong."""
        if not isinstance(completion, Mapping):
            raise ValueError("response: expected the provider's chat.completion object")
        choices = completion.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            raise ValueError("response.choices: expected a list holding the answer's choice")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, Mapping):
            raise ValueError("response.choices.0.message: expected the assistant message")
        if message.get("refusal"):
            raise ValueError("response.choices.0.message.refusal: the answer is a refusal, which is never stored")
        # Null fields and those the cache does not keep (annotations, audio ...) are dropped, as the gateway does;
        # no content and no tool calls is an empty answer, refused as such.
        kept = {k: message[k] for k in ("role", "content", "tool_calls") if message.get(k) is not None}
        kept.setdefault("content", None if kept.get("tool_calls") else "")
        return cls.model_validate({
            "message": kept,
            "finish_reason": choice.get("finish_reason") or ("tool_calls" if kept.get("tool_calls") else "stop"),
            "usage": completion.get("usage"),
            "model": completion.get("model"),
        })  # fmt: skip


class StoreRequest(ChatRequest):
    """Store `answer` as the answer to this request's question, in its scope."""

    version: Literal[3] = VERBS_VERSION
    answer: StoredAnswer

    @model_validator(mode="after")
    def _only_a_store(self) -> StoreRequest:
        if self.stream:
            raise ValueError("stream: a store has nothing to stream")
        if self.cache != CacheControl():
            raise ValueError("cache: cache control does not apply to a store")
        return self
