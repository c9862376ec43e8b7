"""The gateway's error responses, in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`; a worker's
error reply gets its status and body from producer.errors."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from producer.base import Overloaded, ReplyTimeout
from producer.errors import error_type, http_status, openai_error, retry_after
from schemas.messages import ChatReply, ForgetReply

M = TypeVar("M")

TIMED_OUT = "no answer within the request's deadline; retry, or allow more time (header x-dejavu-timeout)"


class GatewayError(Exception):
    """Ends a request with an error response; `body` replaces the OpenAI-style body (native /v1/ask replies)."""

    def __init__(
        self, status: int, code: str, message: str, *, body: str | None = None, headers: dict[str, str] | None = None,
        error: dict[str, Any] | None = None, detail: str | None = None, param: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.code, self.message, self.body, self.headers = status, code, message, body, headers
        # For the log only (under the request id): what the caller must not see.
        self.detail = detail
        self.error = error or {"message": message, "type": error_type(status), "param": param, "code": code}

    def payload(self) -> dict[str, Any]:
        return {"error": self.error}

    def response(self) -> web.Response:
        text = self.body or json.dumps(self.payload())
        return web.Response(status=self.status, text=text, content_type="application/json", headers=self.headers)


def failed(reply: ChatReply | ForgetReply, body: str | None = None) -> GatewayError:
    """A worker's error reply as a response (producer.errors: the provider's 4xx as it gave it)."""
    error = reply.error
    assert error is not None
    wait = retry_after(error)
    headers = {"Retry-After": str(wait)} if wait is not None else None
    return GatewayError(http_status(error), error.code.value, error.message, body=body, headers=headers,
                        error=openai_error(error)["error"])  # fmt: skip


async def queued(call: Awaitable[M]) -> M:
    """Wait for a call through the queues; a timeout, backpressure or an unreachable Redis becomes an HTTP error."""
    try:
        return await call
    except ReplyTimeout as exc:
        raise GatewayError(504, "timeout", TIMED_OUT, detail=str(exc)) from None
    except Overloaded as exc:
        headers = {"Retry-After": str(exc.retry_after_s)}
        message = "the cache is overloaded; retry after the time in Retry-After"
        raise GatewayError(503, "overloaded", message, headers=headers, detail=str(exc)) from None
    except (RedisError, OSError, OperationalError) as exc:
        message = "the cache's request queue is unreachable; retry later"
        raise GatewayError(503, "unavailable", message, detail=repr(exc)) from None
