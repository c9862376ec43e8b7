"""One error root, split by what the caller can do about it."""

from __future__ import annotations

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.messages import ErrorCode, ReplyError

# Redis down: nothing can be replied or queued, so the task is retried.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
# Postgres down or restarting (connection refused, reset, or not yet accepting connections).
PG_DOWN = (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError, asyncpg.InterfaceError)
# A server down or restarting: worth retrying later, or skipping on the reply path; anything else is a bug.
UNREACHABLE = (TimeoutError, RedisConnectionError, RedisTimeoutError, *PG_DOWN)


class DejavuError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigurationError(DejavuError):
    """Fail at start: the message says which DEJAVU_* setting to fix."""


class TransientError(DejavuError):
    """A server was unreachable or busy; the task is retried."""


class ReplyableError(DejavuError):
    """A request that cannot be answered; it becomes a typed error reply."""

    code: ErrorCode = ErrorCode.INTERNAL
    retryable: bool = False

    def to_reply(self) -> ReplyError:
        return ReplyError(code=self.code, message=str(self), retryable=self.retryable)


class InvalidRequest(ReplyableError):
    code = ErrorCode.INVALID_REQUEST


class DeadlineExceeded(ReplyableError):
    code = ErrorCode.DEADLINE
    retryable = True


class LLMError(ReplyableError):
    code = ErrorCode.LLM_ERROR
    retryable = True


class LLMTimeout(ReplyableError):
    code = ErrorCode.LLM_TIMEOUT
    retryable = True


class NotCached(ReplyableError):
    code = ErrorCode.NOT_CACHED
