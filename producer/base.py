"""What the sync and async clients share: building requests, the Celery producer, and timeout diagnostics."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, TypedDict, Unpack

from celery import Celery
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from producer.settings import ProducerSettings
from schemas.cache import Scope, entry_id, question_hash
from schemas.enqueue import enqueue_call
from schemas.keys import (
    FORGET_TASK,
    LOOKUP_ONLY_TASK,
    LOOKUP_QUEUE,
    LOOKUP_TASK,
    STORE_TASK,
    WRITEBACK_QUEUE,
    reply_key,
)
from schemas.messages import (
    ChatReply,
    ChatRequest,
    ErrorCode,
    ForgetRequest,
    LookupRequest,
    StoredAnswer,
    StoreRequest,
)
from schemas.requests import RequestOptions, build_as, build_request
from schemas.taskwire import task_message

# A worker that takes a request right at its deadline still needs a moment to publish the error.
REPLY_GRACE_S = 2.0
# How long a timed-out caller waits for workers to answer the diagnostic ping.
PING_TIMEOUT_S = 0.5


def ping(celery: Celery, timeout: float, limit: int | None = None) -> list[str]:
    """Names of the worker nodes that answer a ping now; with `limit`, stop waiting once that many answered."""
    # A connection of its own: a pooled one left over from before a Redis restart would fail this ping.
    with celery.connection_for_write() as connection:
        replies = celery.control.ping(timeout=timeout, limit=limit, connection=connection) or []
    return sorted(name for reply in replies for name in reply)


class ReplyTimeout(TimeoutError):
    """No reply in time; the message says what the queue looked like, to tell "slow" from "no worker"."""

    def __init__(
        self,
        request_id: str,
        timeout: float,
        queue_depth: int | None,
        workers: list[str] | None,
        queue: str = LOOKUP_QUEUE,
    ) -> None:
        self.request_id = request_id
        self.timeout = timeout
        self.queue_depth = queue_depth
        self.workers = workers
        self.queue = queue
        super().__init__(timeout_message(request_id, timeout, queue_depth, workers, queue))


class Overloaded(Exception):
    """Refused at once: the lookup queue is deeper than `max_queue_depth`, so the request would time out there."""

    code = ErrorCode.OVERLOADED

    def __init__(self, queue_depth: int, retry_after_s: int) -> None:
        self.queue_depth = queue_depth
        self.retry_after_s = retry_after_s
        super().__init__(
            f"overloaded: the {LOOKUP_QUEUE} queue holds {queue_depth} requests (limit reached); "
            f"retry in {retry_after_s}s or add lookup workers"
        )


def enqueue_args(request: ChatRequest, message: bytes, settings: ProducerSettings) -> tuple[list[str], list[Any]]:
    """The enqueue script's keys and arguments for one request's task message (schemas.enqueue)."""
    return enqueue_call(LOOKUP_QUEUE, request.request_id, message, request.deadline, settings.max_queue_depth,
                        settings.max_queue_bytes)  # fmt: skip


def check_enqueued(result: list[int], settings: ProducerSettings) -> None:
    """Interpret the enqueue script's answer ({depth, place}): Overloaded when it refused the message."""
    depth = int(result[0])
    if depth < 0:
        raise Overloaded(-depth, settings.overloaded_retry_after_s)


def timeout_message(
    request_id: str, timeout: float, queue_depth: int | None, workers: list[str] | None, queue: str = LOOKUP_QUEUE
) -> str:
    depth = "unknown" if queue_depth is None else f"{queue_depth} message(s)"
    if workers is None:
        who = "the worker ping could not be sent"
    elif workers:
        # Their host names stay out: this text can reach a caller (`.workers` has them).
        who = f"{len(workers)} worker(s) answer a ping, so they are busy or slow"
    else:
        who = "no worker answers a ping: start one (celery -A worker.app worker)"
    return f"no reply to request {request_id} within {timeout:.2f}s; the {queue} queue holds {depth}; {who}"


class ForgetOptions(TypedDict, total=False):
    """What `forget` removes besides one entry id: the entry of a question in a scope, or a whole tenant."""

    question: str | None
    all_entries: bool
    tenant: str | None
    model: str | None
    system: str | None
    timeout: float | None


class FeedbackOptions(TypedDict, total=False):
    reason: str | None
    # The answer that was served (taken from the reply when given one): blocked even before its write-back lands.
    answer: str | None
    # Only an entry of this tenant (the gateway's caller); None: an operator's feedback on any entry.
    tenant: str | None
    timeout: float | None


# What `store` takes as the answer (schemas.verbs.StoredAnswer.of).
Response = str | StoredAnswer | Mapping[str, Any]
# A forget request and how long to wait for its reply.
ForgetCall = tuple[ForgetRequest, float]


class RequestBuilder:
    """What the sync and async clients share: building a request needs no I/O."""

    settings: ProducerSettings

    def request(self, question: str | None = None, **options: Unpack[RequestOptions]) -> ChatRequest:
        """Build and validate a request (no I/O); bad input raises pydantic's ValidationError here."""
        return build_request(self.settings, question, **options)

    def lookup_request(self, question: str | None = None, **options: Unpack[RequestOptions]) -> LookupRequest:
        """A lookup-only request (no I/O): the lookup stages, never the LLM; same options as `request`."""
        return build_as(LookupRequest, self.settings, question, {}, **options)

    def store_request(
        self, question: str | None = None, *, response: Response, **options: Unpack[RequestOptions]
    ) -> StoreRequest:
        """A store request (no I/O): `response` (its text, a StoredAnswer, or the provider's chat.completion) as the
        answer to the request `question`/options make; an empty, cut-short or refused answer raises ValueError."""
        fields = {"answer": StoredAnswer.of(response)}
        return build_as(StoreRequest, self.settings, question, fields, **options)

    def forget_call(self, entry: str | None = None, **options: Unpack[ForgetOptions]) -> ForgetCall:
        """Remove one entry id (only of `tenant`, if given), the entry `question` is stored under in the scope of
        tenant/model/system (as `ask` would look it up), or with `all_entries` every entry of `tenant`."""
        question, tenant, everything = options.get("question"), options.get("tenant"), options.get("all_entries")
        if (entry is not None) + (question is not None) + bool(everything) != 1:
            raise ValueError("forget takes one of: an entry id, question=..., or all_entries=True with tenant=...")
        if question is not None:
            scoped = build_request(
                self.settings, question, tenant=tenant or "default", model=options.get("model"),
                system=options.get("system"),
            )  # fmt: skip
            scope = Scope.of(scoped, self.settings.scope_includes_history)
            entry, tenant = entry_id(scope, question_hash(question)), scope.tenant
        elif everything and tenant is None:
            raise ValueError("all_entries=True needs the tenant whose entries to forget")
        return self._forget(entry_id=entry, tenant=tenant), options.get("timeout") or self.settings.default_timeout_s

    def feedback_call(self, entry: str | ChatReply, **options: Unpack[FeedbackOptions]) -> ForgetCall:
        """Feedback on an entry id, or on a reply: its answer is blocked even before its write-back lands."""
        eid, answer = entry, options.get("answer")
        if isinstance(entry, ChatReply):
            if entry.entry_id is None:
                raise ValueError("this reply names no cache entry (an error reply?): nothing to give feedback on")
            eid, answer = entry.entry_id, entry.answer
        request = self._forget(
            entry_id=eid, tenant=options.get("tenant"), bad=True, reason=options.get("reason"), answer=answer
        )
        return request, options.get("timeout") or self.settings.default_timeout_s

    def _forget(self, **fields: object) -> ForgetRequest:
        rid = uuid.uuid4().hex
        return ForgetRequest.model_validate({**fields, "request_id": rid, "reply_to": reply_key(rid)})


def reply_wait_s(request: ChatRequest) -> float:
    """How long to wait for a request's reply: until its deadline, plus the worker's grace to say it expired."""
    return max(0.0, request.deadline - time.time()) + REPLY_GRACE_S


SOCKET_TIMEOUT_S = 10.0
BLOCK_S = 5.0
# TCP keepalive probes after 5 s idle, every 2 s, 3 of them: a silently dead peer is noticed within ~11 s.
KEEPALIVE = (
    {socket.TCP_KEEPIDLE: 5, socket.TCP_KEEPINTVL: 2, socket.TCP_KEEPCNT: 3} if hasattr(socket, "TCP_KEEPIDLE") else {}
)


def block_waits(timeout: float) -> Iterator[float]:
    """The waits of the blocking pops that together wait `timeout` seconds, each at most BLOCK_S; then 0.0 (one
    last non-blocking look)."""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        yield min(left, BLOCK_S)
    yield 0.0


def redis_options(settings: ProducerSettings) -> dict[str, Any]:
    """Connection options shared by the sync and async clients (each with its redis-py BlockingConnectionPool).

    Every request waiting for its reply holds one connection (BLPOP). redis-py's default pool refuses the
    101st with MaxConnectionsError, which under a spike failed sends; a blocking pool of
    `client_max_connections` makes the next caller wait for a free connection instead.
    """
    return {
        "protocol": 2,
        # A connection to a Redis that vanished fails within this instead of hanging; blocking pops wait at most
        # BLOCK_S per command (and repeat), so the read timeout never cuts a wait short.
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_keepalive": True,
        "socket_keepalive_options": KEEPALIVE,
        "socket_connect_timeout": 5,
        "max_connections": settings.client_max_connections,
        "timeout": None,  # the pool's: how long a caller waits for a free connection
        # Ride out a Redis restart (refused connections, then LOADING while it replays its append-only file)
        # for ~5 s. A send retried after a lost reply may enqueue twice: the request id keeps that one reply.
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, BusyLoadingError],
    }


RETRY_BACKOFF = ExponentialBackoff(cap=1.0, base=0.05)
RETRIES = 8


def make_celery(settings: ProducerSettings) -> Celery:
    """A producer-only Celery app: it sends tasks by name and never imports the worker's code."""
    app = Celery("dejavu-producer", broker=settings.redis_url)
    app.conf.update(
        broker_connection_retry_on_startup=True,
    )
    return app


def lookup_message(request: ChatRequest) -> bytes:
    """The task message that enqueues a validated request (an ask, a lookup-only or a store request, each under its
    own task name): LPUSH it onto LOOKUP_QUEUE (schemas.taskwire)."""
    task = (
        LOOKUP_ONLY_TASK if isinstance(request, LookupRequest) else
        STORE_TASK if isinstance(request, StoreRequest) else LOOKUP_TASK
    )  # fmt: skip
    # The request id doubles as the task id, so Flower and the worker logs name the same thing.
    return task_message(task, LOOKUP_QUEUE, [request.model_dump_json()], task_id=request.request_id)


def forget_message(request: ForgetRequest) -> bytes:
    """The task message for a forget: LPUSH it onto WRITEBACK_QUEUE, where the workers with Postgres access run it."""
    return task_message(FORGET_TASK, WRITEBACK_QUEUE, [request.model_dump_json()], task_id=request.request_id)
