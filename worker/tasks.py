"""Celery tasks: thin adapters that hand messages to the pipeline and declare retries."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown

from schemas.cache import WritebackJob
from schemas.keys import (
    BACKFILL_TASK,
    COMPLETE_TASK,
    FORGET_TASK,
    LOOKUP_ONLY_TASK,
    LOOKUP_TASK,
    STORE_TASK,
    WRITEBACK_QUEUE,
    WRITEBACK_TASK,
)
from schemas.messages import LookupRequest
from worker import backfill, forget, pipeline, runtime, verbs, writeback
from worker.app import app
from worker.batch import look_up, serve_in_batch
from worker.errors import REDIS_DOWN, TransientError
from worker.model_prep import prepared_model
from worker.settings import get_settings
from worker.tiers import Stored

log = logging.getLogger(__name__)
# The tokenizer's own thread pool would fight onnxruntime for the same cores.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Redis restarting mid-request: try again shortly; the reply is published at most once anyway.
REDIS_RETRY: dict[str, Any] = {
    "autoretry_for": REDIS_DOWN,
    "retry_backoff": 0.2,
    "retry_backoff_max": 2,
    "max_retries": 20,
}
# Handing a miss or a write-back on to the next queue rides out a Redis restart (~30 s) instead of failing
# the task: Celery's default (3 quick tries) gave up mid-restart and lost that miss or write-back.
PUBLISH_RETRY: dict[str, Any] = {"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}
# Storing and removing wait for a down Postgres instead of giving up: retried until it is back.
UNTIL_BACK: dict[str, Any] = {
    "autoretry_for": (TransientError,),
    "retry_backoff": 1,
    "retry_backoff_max": 60,
    "max_retries": None,
}


@worker_init.connect
def _prepare_model(**_: Any) -> None:
    # Once, in the parent, before the pool forks: children then only load the prepared file.
    settings = get_settings()
    profile = settings.profile()
    prepared_model(profile.model_path, settings.model_cache_dir, profile.quantize)


@worker_process_init.connect
def _open_runtime(**_: Any) -> None:
    # Prefork children serve lookups: open pools and warm the model before the first request.
    # (The threads pool of LLM/write-back nodes sends no such signal and never loads the model.)
    runtime.current(get_settings()).load_embedder()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    # Prefork children get the first signal; solo and threads pools run tasks in the main process.
    runtime.shutdown()


@app.task(name=LOOKUP_TASK, **REDIS_RETRY)
def lookup(payload: str) -> None:
    rt = runtime.current(get_settings())
    if rt.settings.lookup_batch:  # this request and any others waiting, each stage once for all (worker.batch)
        serve_in_batch(payload, rt, write_back)
        return
    outcome = rt.run(look_up(payload, rt))
    if outcome.writeback is not None:
        write_back(outcome.writeback)


@app.task(name=LOOKUP_ONLY_TASK, **REDIS_RETRY)
def lookup_only(payload: str) -> None:
    # The lookup path without the LLM: a miss is replied at once, so only a promotion may follow.
    rt = runtime.current(get_settings())
    outcome = rt.run(pipeline.handle(payload, rt, LookupRequest))
    if outcome.writeback is not None:
        write_back(outcome.writeback)


@app.task(name=STORE_TASK, **REDIS_RETRY)
def store(payload: str) -> None:
    rt = runtime.current(get_settings())
    rt.run(verbs.store(payload, rt, write_back))


@app.task(name=COMPLETE_TASK, bind=True, **REDIS_RETRY)
def complete(self: Any, payload: str) -> None:
    rt = runtime.current(get_settings())
    job = rt.run(pipeline.complete(payload, rt, node=str(self.request.hostname)))
    if job is not None:
        write_back(job)


def write_back(job: WritebackJob) -> None:
    """Hand a new or promoted entry to the write-back queue (the LLM queue's hand-off is worker.handoff)."""
    payload = job.model_dump_json()
    # argsrepr: Flower and the worker logs show this, not the tenant's prompt and answer in the payload.
    writeback_task.apply_async(args=[payload], queue=WRITEBACK_QUEUE, retry=True, retry_policy=PUBLISH_RETRY,
                               argsrepr=f"<{len(payload)} bytes>", kwargsrepr="{}")  # fmt: skip


@app.task(name=WRITEBACK_TASK, **UNTIL_BACK)
def writeback_task(payload: str) -> dict[str, Stored]:
    rt = runtime.current(get_settings())
    return rt.run(writeback.store(WritebackJob.model_validate_json(payload), rt))


@app.task(name=BACKFILL_TASK, bind=True, **UNTIL_BACK)
def backfill_chunk(self: Any, job_id: str, chunk_no: int) -> dict[str, int]:
    # Acked late like every task: a chunk whose worker died is delivered again, and then skipped if done.
    rt = runtime.current(get_settings())
    return backfill.run_chunk(job_id, chunk_no, rt, worker=str(self.request.hostname))


@app.task(name=FORGET_TASK, **UNTIL_BACK)
def forget_task(payload: str) -> None:
    # On the writeback queue: the I/O nodes hold the Postgres credentials; producers only need Redis.
    rt = runtime.current(get_settings())
    rt.run(forget.handle(payload, rt))
