"""A Python client: enqueue a chat request on the `lookup` queue and wait on its reply list.

It needs only the broker URL; it sends the task by name, so it never imports the worker's code.
Safe to share across threads: Celery's producer pool and redis-py's connection pool are.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import redis
from celery import Celery

from schemas.keys import LOOKUP_QUEUE, LOOKUP_TASK, reply_key
from schemas.messages import CTX_MAX_QUESTION_BYTES, ChatMessage, ChatReply, ChatRequest
from worker.settings import Settings, get_settings

# A worker that takes a request right at its deadline still needs a moment to publish the error.
REPLY_GRACE_S = 2.0


class ReplyTimeout(TimeoutError):
    """No reply in time; the message says what the queue looked like, to tell "slow" from "no worker"."""


class Client:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        # No read timeout: replies are awaited with BLPOP, whose own timeout bounds the wait.
        self.redis = redis.Redis.from_url(
            self.settings.redis_url, protocol=2, socket_timeout=None, socket_connect_timeout=5
        )
        self.celery = Celery("dejavu-producer", broker=self.settings.redis_url)
        self.celery.conf.update(
            broker_transport_options={"visibility_timeout": self.settings.visibility_timeout_s},
            broker_connection_retry_on_startup=True,
        )

    def request(
        self,
        question: str | None = None,
        *,
        messages: Sequence[ChatMessage | dict[str, str]] | None = None,
        tenant: str = "default",
        model: str | None = None,
        system: str | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> ChatRequest:
        """Build and validate a request; bad input raises pydantic's ValidationError here, not in a worker."""
        if (question is None) == (messages is None):
            raise ValueError("pass either question or messages")
        msgs: list[ChatMessage | dict[str, str]] = (
            list(messages) if messages is not None else [{"role": "user", "content": question or ""}]
        )
        if system is not None:
            msgs.insert(0, {"role": "system", "content": system})
        fields: dict[str, object] = {
            "messages": msgs,
            "tenant": tenant,
            "model": model or self.settings.llm_model,
            "deadline": time.time() + (timeout or self.settings.default_timeout_s),
        }
        fields["request_id"] = request_id or uuid.uuid4().hex
        fields["reply_to"] = reply_key(str(fields["request_id"]))
        return ChatRequest.model_validate(fields, context={CTX_MAX_QUESTION_BYTES: self.settings.max_question_bytes})

    def send(self, request: ChatRequest) -> str:
        """Enqueue a validated request; returns its id."""
        self.celery.send_task(LOOKUP_TASK, args=[request.model_dump_json()], queue=LOOKUP_QUEUE)
        return request.request_id

    def submit(self, question: str | None = None, **kwargs: object) -> str:
        """Fire and forget: enqueue and return the request id; read the reply later with `get_reply`."""
        return self.send(self.request(question, **kwargs))  # type: ignore[arg-type]

    def get_reply(self, request_id: str, timeout: float) -> ChatReply:
        popped = self.redis.blpop([reply_key(request_id)], timeout=timeout)
        if popped is None:
            depth = self.redis.llen(LOOKUP_QUEUE)
            raise ReplyTimeout(
                f"no reply to request {request_id} within {timeout:.1f}s; the lookup queue holds "
                f"{depth} message(s) — if that does not go down, no worker is consuming it"
            )
        return ChatReply.model_validate_json(popped[1])

    def ask(self, question: str | None = None, **kwargs: object) -> ChatReply:
        """Enqueue and wait for the reply (or its typed error)."""
        request = self.request(question, **kwargs)  # type: ignore[arg-type]
        self.send(request)
        return self.get_reply(request.request_id, max(0.0, request.deadline - time.time()) + REPLY_GRACE_S)

    def workers(self, timeout: float = 1.0) -> list[str]:
        """Names of the worker nodes that answer a ping now."""
        replies = self.celery.control.ping(timeout=timeout) or []
        return sorted(name for reply in replies for name in reply)

    def wait_for_workers(self, count: int = 1, timeout: float = 120.0) -> list[str]:
        """Block until `count` worker nodes answer (they load the model before consuming)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = self.workers()
            if len(found) >= count:
                return found
            time.sleep(0.5)
        raise ReplyTimeout(f"fewer than {count} worker(s) answered a ping within {timeout:.0f}s")

    def close(self) -> None:
        self.redis.close()
        self.celery.close()
