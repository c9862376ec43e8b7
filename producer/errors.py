"""What a worker's error reply means on every surface: an HTTP status and OpenAI-shaped body (the gateway), a
`dejavu` exit code (the CLI), and an exception (Python callers: `raise_for_error`).

The provider's own 4xx reaches the caller as that status with the provider's type, code, param and message; its
429 as a 429 with Retry-After; everything that is the operator's or the stack's business (the provider refusing
the operator's key, a 5xx, a bug) as a fixed message, with the detail in the logs under the request id.
"""

from __future__ import annotations

import math
from typing import Any

from schemas.cli import EXIT_ERROR_REPLY, EXIT_UNAVAILABLE
from schemas.messages import ChatReply, ErrorCode, ForgetReply, ReplyError

# A worker's error reply, as an HTTP status (llm_rejected: the provider's own status, one of RELAYED_STATUSES).
STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.LLM_REJECTED: 400,
    ErrorCode.LLM_RATE_LIMITED: 429,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.DEADLINE: 504,
    ErrorCode.LLM_ERROR: 502,
    ErrorCode.UPSTREAM_AUTH: 502,
    ErrorCode.LLM_TIMEOUT: 504,
    ErrorCode.INTERNAL: 500,
    ErrorCode.NOT_CACHED: 504,  # as HTTP answers only-if-cached
}
RELAYED_STATUSES = frozenset({400, 404, 413, 422})
# What a caller waits after a 429 whose provider named no time.
DEFAULT_RETRY_AFTER_S = 1


def http_status(error: ReplyError) -> int:
    if (
        error.code == ErrorCode.LLM_REJECTED
        and error.upstream is not None
        and error.upstream.status in RELAYED_STATUSES
    ):
        return error.upstream.status
    return STATUS_BY_CODE.get(error.code, 500)


def error_type(status: int) -> str:
    """OpenAI's `error.type` for a status, when the provider did not give one."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "api_error"


def openai_error(error: ReplyError) -> dict[str, Any]:
    """`{"error": {...}}` as OpenAI sends it: the provider's type, code and param when it gave them."""
    status, upstream = http_status(error), error.upstream
    relayed = upstream is not None and error.code in (ErrorCode.LLM_REJECTED, ErrorCode.LLM_RATE_LIMITED)
    code: str | None = error.code.value
    if relayed and upstream is not None:
        code = upstream.code  # as the provider gave it, null included
    if error.code == ErrorCode.LLM_RATE_LIMITED and code is None:
        code = "rate_limit_exceeded"
    return {
        "error": {
            "message": error.message,
            "type": (upstream.type if relayed and upstream is not None else None) or error_type(status),
            "param": upstream.param if relayed and upstream is not None else None,
            "code": code,
        }
    }


def retry_after(error: ReplyError) -> int | None:
    """Retry-After, whole seconds, for the errors that have one (a rate limit)."""
    if error.code != ErrorCode.LLM_RATE_LIMITED:
        return None
    return max(1, math.ceil(error.retry_after_s)) if error.retry_after_s is not None else DEFAULT_RETRY_AFTER_S


# Errors that asking again later may cure; the others need the request or the setup changed first.
LATER: frozenset[ErrorCode] = frozenset({ErrorCode.LLM_RATE_LIMITED, ErrorCode.LLM_ERROR, ErrorCode.LLM_TIMEOUT,
                                         ErrorCode.DEADLINE, ErrorCode.OVERLOADED})  # fmt: skip


def exit_code(error: ReplyError) -> int:
    """`dejavu ask`'s exit code for an error reply: 3 (EXIT_UNAVAILABLE) for what may pass, else 1."""
    return EXIT_UNAVAILABLE if error.code in LATER else EXIT_ERROR_REPLY


class ReplyFailed(Exception):
    """A worker's error reply, raised (`raise_for_error`): its code, the HTTP status it stands for, and whether
    the same request may succeed later."""

    def __init__(self, error: ReplyError, request_id: str) -> None:
        super().__init__(f"{error.code.value}: {error.message}")
        self.error, self.request_id = error, request_id
        self.status, self.retryable, self.retry_after_s = http_status(error), error.retryable, retry_after(error)


def raise_for_error(reply: ChatReply | ForgetReply) -> None:
    if reply.error is not None:
        raise ReplyFailed(reply.error, reply.request_id)
