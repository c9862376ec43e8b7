"""Operator surfaces closed by default, /healthz from a status refreshed at most once a second, and streams that
survive a caller going away."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from pathlib import Path

import pytest

from producer.base import make_celery
from producer.settings import ProducerSettings
from schemas.keys import COMPLETE_TASK
from tests.conftest import wait_until
from tests.integration.conftest import Gateway, get
from tests.integration.test_gateway_errors import chat, start_gateway
from worker.local.servers import LocalStack


@pytest.mark.parametrize(
    ("host", "public", "opened"),
    [("0.0.0.0", "", False), ("0.0.0.0", "true", True), ("127.0.0.1", "", True)],
)
def test_without_an_operator_key_metrics_open_only_on_loopback_or_when_public(
    stack: LocalStack, gateway: Gateway, tmp_path: Path, host: str, public: str, opened: bool
) -> None:
    with start_gateway(stack, gateway, tmp_path, host=host, DEJAVU_METRICS_KEY="", DEJAVU_METRICS_PUBLIC=public) as url:
        local = Gateway(url.replace(host, "127.0.0.1"), gateway.keys, gateway.metrics_key)
        status, _ = get(local, "/metrics", anonymous=True)
        assert (status == 200) == opened and status in (200, 401)
        status, body = get(local, "/healthz", anonymous=True)
        assert ("reasons" in json.loads(body)) == opened


def test_healthz_checks_run_at_most_once_a_second(gateway: Gateway) -> None:
    def checks() -> float:
        _, text = get(gateway, "/metrics")
        line = next(x for x in text.decode().splitlines() if x.startswith("dejavu_gateway_health_checks_total"))
        return float(line.split()[-1])

    before, start = checks(), time.monotonic()
    for _ in range(30):
        assert get(gateway, "/healthz", anonymous=True)[0] == 200
    elapsed = time.monotonic() - start
    assert checks() - before <= elapsed / 1.0 + 1


def test_a_caller_that_leaves_mid_stream_is_logged_as_such(stack: LocalStack, gateway: Gateway, tmp_path: Path) -> None:
    question = f"[[standin:hold-after=2]] Why is the sky blue {uuid.uuid4().hex}?"
    headers = {"Authorization": f"Bearer {gateway.key_a}", "Content-Type": "application/json"}
    with start_gateway(stack, gateway, tmp_path) as url:
        conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(chat(question, True)), headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.readline().startswith(b"data:")
        resp.close()  # the caller goes away mid-answer
        conn.close()
        wait_until(lambda: any(question in s["question"] for s in stack.llm_streams()["in_progress"]))
        stack.release_llm_streams()
        log = next(tmp_path.glob("gateway-*.log"))
        wait_until(lambda: "disconnected mid-stream" in log.read_text())
        assert "unexpected error" not in log.read_text() and "Traceback" not in log.read_text()


def test_flower_and_inspect_show_no_prompt_in_task_arguments(stack: LocalStack, gateway: Gateway) -> None:
    question = f"[[standin:hold-after=2]] Why is the grass green {uuid.uuid4().hex}?"
    headers = {"Authorization": f"Bearer {gateway.key_a}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]), timeout=30)
    celery = make_celery(ProducerSettings())
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(chat(question, True)), headers=headers)
        resp = conn.getresponse()
        wait_until(lambda: any(question in s["question"] for s in stack.llm_streams()["in_progress"]))
        # The LLM task (handed off by the lookup task) is running, held by the stand-in. What Flower's events and
        # `inspect active --safe` show of its arguments is their argsrepr.
        # A connection of its own: a pooled one from before a Redis restart (test_faults) would fail the broadcast.
        with celery.connection_for_write() as connection:
            active = celery.control.inspect(timeout=2, connection=connection).active(safe=True) or {}
        tasks = [t for node in active.values() for t in node if t["name"] == COMPLETE_TASK]
        assert tasks and all(t["args"].startswith("<") and t["args"].endswith("bytes>") for t in tasks)
        assert question not in json.dumps(active)
    finally:
        stack.release_llm_streams()
        resp.read()
        conn.close()
        celery.close()
