"""What the sync and async clients share: building requests, the Celery producer, and timeout diagnostics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import TypedDict, Unpack

from celery import Celery

from schemas.keys import LOOKUP_QUEUE, LOOKUP_TASK, reply_key
from schemas.messages import CTX_MAX_QUESTION_BYTES, ChatMessage, ChatRequest, ErrorCode
from schemas.taskwire import task_message
from worker.settings import Settings

# A worker that takes a request right at its deadline still needs a moment to publish the error.
REPLY_GRACE_S = 2.0
# How long a timed-out caller waits for workers to answer the diagnostic ping.
PING_TIMEOUT_S = 0.5

MessageInput = ChatMessage | dict[str, str]


class ReplyTimeout(TimeoutError):
    """No reply in time; the message says what the queue looked like, to tell "slow" from "no worker"."""

    def __init__(self, request_id: str, timeout: float, queue_depth: int | None, workers: list[str] | None) -> None:
        self.request_id = request_id
        self.timeout = timeout
        self.queue_depth = queue_depth
        self.workers = workers
        super().__init__(timeout_message(request_id, timeout, queue_depth, workers))


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


def check_enqueued(result: int, settings: Settings) -> None:
    """Interpret the enqueue script's answer (schemas: worker/lua/enqueue_bounded.lua)."""
    if result < 0:
        raise Overloaded(-result, settings.overloaded_retry_after_s)


def timeout_message(request_id: str, timeout: float, queue_depth: int | None, workers: list[str] | None) -> str:
    depth = "unknown" if queue_depth is None else f"{queue_depth} message(s)"
    if workers is None:
        who = "the worker ping could not be sent"
    elif workers:
        who = f"{len(workers)} worker(s) answer a ping ({', '.join(workers)}), so they are busy or slow"
    else:
        who = "no worker answers a ping: start one (celery -A worker.app worker)"
    return f"no reply to request {request_id} within {timeout:.2f}s; the {LOOKUP_QUEUE} queue holds {depth}; {who}"


class RequestOptions(TypedDict, total=False):
    """Everything a request takes besides the question; one typed list for every client method."""

    messages: Sequence[MessageInput] | None
    tenant: str
    model: str | None
    system: str | None
    timeout: float | None
    deadline: float | None
    request_id: str | None


def build_request(settings: Settings, question: str | None = None, **options: Unpack[RequestOptions]) -> ChatRequest:
    """Build and validate a request; bad input raises pydantic's ValidationError here, not in a worker."""
    messages, system = options.get("messages"), options.get("system")
    timeout, deadline = options.get("timeout"), options.get("deadline")
    if (question is None) == (messages is None):
        raise ValueError("pass either question or messages")
    if timeout is not None and deadline is not None:
        raise ValueError("pass either timeout or deadline")
    msgs: list[MessageInput] = list(messages) if messages is not None else [{"role": "user", "content": question or ""}]
    if system is not None:
        msgs.insert(0, {"role": "system", "content": system})
    rid = options.get("request_id") or uuid.uuid4().hex
    fields: dict[str, object] = {
        "messages": msgs,
        "tenant": options.get("tenant", "default"),
        "model": options.get("model") or settings.llm_model,
        "deadline": deadline if deadline is not None else time.time() + (timeout or settings.default_timeout_s),
        "request_id": rid,
        "reply_to": reply_key(rid),
    }
    return ChatRequest.model_validate(fields, context={CTX_MAX_QUESTION_BYTES: settings.max_question_bytes})


class RequestBuilder:
    """What the sync and async clients share: building a request needs no I/O."""

    settings: Settings

    def request(self, question: str | None = None, **options: Unpack[RequestOptions]) -> ChatRequest:
        """Build and validate a request (no I/O); bad input raises pydantic's ValidationError here."""
        return build_request(self.settings, question, **options)


def reply_wait_s(request: ChatRequest) -> float:
    """How long to wait for a request's reply: until its deadline, plus the worker's grace to say it expired."""
    return max(0.0, request.deadline - time.time()) + REPLY_GRACE_S


def make_celery(settings: Settings) -> Celery:
    """A producer-only Celery app: it sends tasks by name and never imports the worker's code."""
    app = Celery("dejavu-producer", broker=settings.redis_url)
    app.conf.update(
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
    )
    return app


def lookup_message(request: ChatRequest) -> bytes:
    """The task message that enqueues a validated request: LPUSH it onto LOOKUP_QUEUE (schemas.taskwire)."""
    # The request id doubles as the task id, so Flower and the worker logs name the same thing.
    return task_message(LOOKUP_TASK, LOOKUP_QUEUE, [request.model_dump_json()], task_id=request.request_id)


def ping(celery: Celery, timeout: float, limit: int | None = None) -> list[str]:
    """Names of the worker nodes that answer a ping now; with `limit`, stop waiting once that many answered."""
    # A connection of its own: a pooled one left over from before a Redis restart would fail this ping.
    with celery.connection_for_write() as connection:
        replies = celery.control.ping(timeout=timeout, limit=limit, connection=connection) or []
    return sorted(name for reply in replies for name in reply)
