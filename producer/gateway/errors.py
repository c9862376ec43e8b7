"""The gateway's error responses: OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, and the
HTTP status of each worker error code."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from producer.base import Overloaded, ReplyTimeout
from schemas.messages import ChatReply, ErrorCode, ForgetReply

M = TypeVar("M")

# A worker's error reply, as an HTTP status.
STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.DEADLINE: 504,
    ErrorCode.LLM_ERROR: 502,
    ErrorCode.LLM_TIMEOUT: 504,
    ErrorCode.INTERNAL: 500,
}


class GatewayError(Exception):
    """Ends a request with an error response; `body` replaces the OpenAI-style body (native /v1/ask replies)."""

    def __init__(
        self, status: int, code: str, message: str, *, body: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.body, self.headers = status, code, message, body, headers

    def payload(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": error_type(self.status), "param": None, "code": self.code}}

    def response(self) -> web.Response:
        text = self.body or json.dumps(self.payload())
        return web.Response(status=self.status, text=text, content_type="application/json", headers=self.headers)


def error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    return "invalid_request_error" if status < 500 else "api_error"


def failed(reply: ChatReply | ForgetReply, body: str | None = None) -> GatewayError:
    assert reply.error is not None
    code = reply.error.code
    return GatewayError(STATUS_BY_CODE.get(code, 500), code.value, reply.error.message, body=body)


async def queued(call: Awaitable[M]) -> M:
    """Wait for a call through the queues; a timeout, backpressure or an unreachable Redis becomes an HTTP error."""
    try:
        return await call
    except ReplyTimeout as exc:
        raise GatewayError(504, "timeout", str(exc)) from None
    except Overloaded as exc:
        headers = {"Retry-After": str(exc.retry_after_s)}
        raise GatewayError(503, "overloaded", str(exc), headers=headers) from None
    except (RedisError, OSError, OperationalError) as exc:
        raise GatewayError(503, "unavailable", f"the request queue is unreachable: {exc}") from None
