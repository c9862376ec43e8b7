"""Request bodies: reading JSON within the size limit, the native bodies, and the deadline headers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from producer.gateway.errors import GatewayError
from producer.gateway.state import SETTINGS
from producer.openai_compat import OpenAIRejects
from schemas.messages import ENTRY_ID_PATTERN, MAX_REASON_CHARS, CacheControl, ChatMessage, ErrorCode

# The OpenAI endpoint's body has no deadline field: callers set one with a header (seconds, or Unix time).
TIMEOUT_HEADER = "x-dejavu-timeout"
DEADLINE_HEADER = "x-dejavu-deadline"

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class AskBody(BaseModel):
    """The native request: a question or messages; the tenant comes from the API key, the id from the gateway."""

    model_config = ConfigDict(extra="forbid")

    question: str | None = None
    messages: list[ChatMessage] | None = None
    model: str | None = None
    system: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    deadline: float | None = None
    # OpenAI generation fields and extensions by name (forwarded, part of the scope), and cache control.
    params: dict[str, Any] | None = None
    cache: CacheControl | None = None

    @model_validator(mode="after")
    def _one_question(self) -> AskBody:
        if (self.question is None) == (self.messages is None):
            raise ValueError("send either question or messages")
        if self.timeout is not None and self.deadline is not None:
            raise ValueError("send either timeout or deadline")
        return self


class FeedbackBody(BaseModel):
    """Feedback on a cached answer; the tenant comes from the API key, so a caller only reaches its own entries."""

    model_config = ConfigDict(extra="forbid")

    # A reply's entry_id (header x-dejavu-entry).
    entry_id: str = Field(pattern=ENTRY_ID_PATTERN)
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)
    # The answer that was served: blocked even if its write-back has not landed yet.
    answer: str | None = None


async def read_json(request: web.Request) -> Any:
    limit = request.app[SETTINGS].gateway_max_body_bytes
    too_large = GatewayError(413, "body_too_large", f"the request body is over the limit of {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise GatewayError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    except RecursionError:  # json's decoder recurses once per nesting level: [[[[...]]]] deep enough ends here
        raise GatewayError(400, "invalid_json", "the request body is nested too deeply") from None


def parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise GatewayError(400, "invalid_request", describe(exc)) from None


def describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


def guarded(make: Callable[[], T]) -> T:
    """A body conversion that raises ValueError for what the cache cannot honour, as a 400."""
    try:
        return make()
    except OpenAIRejects as exc:
        raise GatewayError(400, "invalid_request", str(exc), param=exc.param) from None
    except ValueError as exc:
        raise GatewayError(400, "invalid_request", str(exc)) from None


def check_deadline(timeout: float | None, deadline: float | None) -> None:
    if deadline is not None and deadline <= time.time():
        raise GatewayError(504, ErrorCode.DEADLINE.value, "the request's deadline has already passed")
    if timeout is not None and timeout <= 0:
        raise GatewayError(504, ErrorCode.DEADLINE.value, "the request's timeout is not positive")


def header_deadline(request: web.Request) -> tuple[float | None, float | None]:
    values: list[float | None] = []
    for name in (TIMEOUT_HEADER, DEADLINE_HEADER):
        raw = request.headers.get(name)
        try:
            values.append(None if raw is None else float(raw))
        except ValueError:
            raise GatewayError(400, "invalid_request", f"header {name} must be a number, not {raw!r}") from None
    return values[0], values[1]


def cache_control(request: web.Request) -> CacheControl:
    """The Cache-Control request header's no-cache, no-store, only-if-cached and max-age=N; other directives are
    ignored."""
    fields: dict[str, Any] = {}
    for directive in request.headers.get("Cache-Control", "").lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-cache", "no-store", "only-if-cached"):
            fields[name.replace("-", "_")] = True
        elif name == "max-age":
            if not value.strip().isdigit():
                raise GatewayError(
                    400, "invalid_request", f"Cache-Control max-age must be whole seconds, not {value!r}"
                )
            fields["max_age_s"] = int(value)
    return CacheControl(**fields)
