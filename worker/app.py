"""The Celery app: wiring and settings only.

Two kinds of worker node (docs/operations.md):
    celery -A worker.app worker -Q lookup,backfill -c <cores>           # CPU: embed + KNN, bulk loads
    celery -A worker.app worker -Q llm,writeback -P threads -c 32        # I/O: LLM calls, write-back
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import celeryd_init

from schemas.keys import (
    BACKFILL_QUEUE,
    BACKFILL_TASK,
    COMPLETE_TASK,
    FORGET_TASK,
    LLM_QUEUE,
    LOOKUP_QUEUE,
    LOOKUP_TASK,
    WRITEBACK_QUEUE,
    WRITEBACK_TASK,
)
from worker import broker
from worker.settings import Settings, get_settings

broker.install()


def make_app(settings: Settings) -> Celery:
    app = Celery("dejavu", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        # Replies travel on per-request Redis lists; a result backend would be a second, slower copy.
        task_ignore_result=True,
        # A task is acked after it ran, and handed back if its worker dies mid-way: no request is lost.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message at a time per process: a long LLM call never holds hits queued behind it.
        worker_prefetch_multiplier=1,
        broker_transport_options={
            # Unacked messages return to the queue after this; it must exceed the longest task.
            "visibility_timeout": settings.visibility_timeout_s,
            # Look for a dead node's messages every 5 s (kombu's default sweep is every 100 s).
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
            # A lookup request taken off the queue is marked held by its node for this long (worker.broker);
            # a producer re-sends one taken but held by no node (producer.resend).
            "taken_ttl": settings.taken_ttl_s,
        },
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        task_routes={
            LOOKUP_TASK: {"queue": LOOKUP_QUEUE},
            COMPLETE_TASK: {"queue": LLM_QUEUE},
            WRITEBACK_TASK: {"queue": WRITEBACK_QUEUE},
            FORGET_TASK: {"queue": WRITEBACK_QUEUE},
            BACKFILL_TASK: {"queue": BACKFILL_QUEUE},
        },
        task_default_queue=LOOKUP_QUEUE,
        # Task events feed Flower's live task list; they halve hit throughput, so they are a setting.
        worker_send_task_events=settings.task_events,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        # A child loads the ONNX model and opens its pools before it reports up; allow for that.
        worker_proc_alive_timeout=120,
    )
    return app


@celeryd_init.connect  # type: ignore[untyped-decorator]
def _short_redelivery_on_lookup_nodes(sender: str, conf: Any, options: dict[str, Any], **_: Any) -> None:
    """A node that consumes only lookup and backfill keeps its unacked messages under keys of its own,
    swept with a short visibility timeout: a dead lookup node's request is redelivered within seconds,
    while LLM nodes, whose tasks run for minutes, keep the long timeout on theirs."""
    # The node's name goes on the taken marks it writes (worker.broker).
    conf.broker_transport_options = {**conf.broker_transport_options, "node_name": sender}
    queues = set(options.get("queues") or ())
    if queues and queues <= {LOOKUP_QUEUE, BACKFILL_QUEUE}:
        conf.broker_transport_options = {
            **conf.broker_transport_options,
            "visibility_timeout": get_settings().lookup_visibility_timeout_s,
            "unacked_key": "unacked_lookup",
            "unacked_index_key": "unacked_lookup_index",
            "unacked_mutex_key": "unacked_lookup_mutex",
        }


app = make_app(get_settings())
