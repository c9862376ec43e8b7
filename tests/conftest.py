"""Real servers for the whole test session: Redis + RediSearch, PostgreSQL + pgvector, the stand-in LLM,
one Celery worker node and Flower, all started by the project itself (worker.local.servers)."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.client import Client
from producer.settings import ProducerSettings
from schemas.health import QUEUES
from worker.local.servers import LocalStack, free_port
from worker.settings import get_settings

# Short LLM limits so fault tests take seconds, not minutes.
WORKER_ENV = {
    # Long enough that a loaded 2-core machine never times out the 100 ms stand-in by accident.
    "DEJAVU_LLM_TIMEOUT_S": "4",
    "DEJAVU_LLM_MAX_RETRIES": "1",
    "DEJAVU_LLM_BACKOFF_S": "0.05",
    # A killed node's task comes back within seconds (the LLM call above takes at most ~8 s).
    "DEJAVU_VISIBILITY_TIMEOUT_S": "20",
    "DEJAVU_LOOKUP_VISIBILITY_TIMEOUT_S": "10",
    # Small enough that a test's burst of cold questions meets the pool-wide cap.
    "DEJAVU_LLM_MAX_CONCURRENCY": "4",
}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = Path(tmp_path_factory.mktemp("stack"))
    s = LocalStack(
        root, redis_port=free_port(), pg_port=free_port(), llm_port=free_port(), llm_delay_ms=100, durable=False
    )
    s.start()
    saved = dict(os.environ)
    # Workers inherit these (start_worker passes os.environ on).
    os.environ.update({**s.env(), **WORKER_ENV})
    get_settings.cache_clear()
    try:
        s.flower_port = free_port()  # type: ignore[attr-defined]
        s.start_workers(nodes=1, concurrency=2, llm_threads=8)
        s.start_flower(s.flower_port)  # type: ignore[attr-defined]
        client = Client(ProducerSettings())
        client.wait_for_workers(2)
        client.close()
        yield s
    finally:
        s.stop()
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


@pytest.fixture(scope="session")
def client(stack: LocalStack) -> Iterator[Client]:
    c = Client(ProducerSettings())
    yield c
    c.close()


@pytest.fixture(scope="session")
def rdb(stack: LocalStack) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(stack.redis_url)
    yield r
    r.close()


@pytest.fixture
def tenant() -> str:
    """A fresh tenant per test: scopes keep tests from seeing each other's entries."""
    return f"t-{uuid.uuid4().hex[:12]}"


def llm_concurrency(stack: LocalStack) -> dict[str, int]:
    """The stand-in's calls in flight now, and the most at once since the last read."""
    url = f"{stack.llm_url.removesuffix('/v1')}/standin/concurrency"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return dict(json.load(resp))


def wait_until(check: Callable[[], object], timeout: float = 15.0) -> None:
    """Poll `check` until it is true; write-backs and worker starts land asynchronously."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def llm_calls(stack: LocalStack, question: str) -> int:
    """How many times the stand-in LLM was asked this exact question."""
    return stack.llm_calls(question)


def stack_logs(stack: LocalStack) -> str:
    """What every process of the stack has logged so far (one file each; workers at INFO)."""
    return "".join(path.read_text(errors="replace") for path in sorted(stack.root.glob("*.log")))


def task_result(stack: LocalStack, task_id: str) -> str:
    """The return value a worker logged for task `task_id`, once it has run: the worker's own word that it acted.
    Celery logs it at INFO ("Task NAME[ID] succeeded in Ts: VALUE"), the level LocalStack starts workers at."""
    succeeded = re.compile(rf"\[{re.escape(task_id)}\] succeeded in [^:]*: (.*)")
    found: list[str] = []

    def ran() -> bool:
        found[:] = succeeded.findall(stack_logs(stack))
        return bool(found)

    wait_until(ran)
    return found[0]


def worker_tasks(client: Client, nodes: list[str], *lists: str) -> list[dict[str, Any]] | None:
    """The tasks the worker `nodes` list as `lists` ("active", "reserved", "scheduled"); None if one did not answer."""
    found: list[dict[str, Any]] = []
    # A connection of its own: a pooled one from before a Redis restart (test_faults) would fail the broadcast.
    with client.celery.connection_for_write() as connection:
        inspect = client.celery.control.inspect(destination=nodes, timeout=5.0, limit=len(nodes), connection=connection)
        for name in lists:
            replies = getattr(inspect, name)()
            if replies is None or set(replies) != set(nodes):
                return None
            found += [task for tasks in replies.values() for task in tasks]
    return found


def wait_idle(client: Client, timeout: float = 30.0) -> None:
    """Wait until the workers have nothing left to do: every queue empty, no task running, reserved or scheduled.

    The event a test waits on before it asserts that something did not happen (a second reply, a write-back):
    had it been on its way, it would have happened by then."""
    nodes = client.workers()
    r = redis.Redis.from_url(client.settings.redis_url)

    def queued() -> int:
        return sum(int(r.llen(queue)) for queue in QUEUES)

    def idle() -> bool:
        if queued():
            return False
        # The queues once more after the nodes' lists: a task that ran in between may have handed on another.
        return worker_tasks(client, nodes, "active", "reserved", "scheduled") == [] and not queued()

    try:
        wait_until(idle, timeout)
    finally:
        r.close()
