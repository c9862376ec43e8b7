"""The provider's errors as the provider gives them, through the real pipeline and every surface; and nothing of
the stack (hosts, ports, secrets, worker names, exception text) in any error a caller sees."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from producer import ReplyFailed, raise_for_error
from producer.client import Client
from schemas.cli import EXIT_ERROR_REPLY, EXIT_UNAVAILABLE
from schemas.messages import ErrorCode
from tests.conftest import llm_calls
from tests.integration.conftest import Gateway, dejavu, post
from worker.local.servers import SECRETS, LocalStack, free_port

# What each provider status becomes for the caller, and the caller's `error.code`.
MAPPED = {400: (400, None), 404: (404, None), 413: (413, None), 422: (422, None),
          429: (429, "rate_limit_exceeded"), 401: (502, "upstream_auth"), 403: (502, "upstream_auth"),
          500: (502, "llm_error"), 503: (502, "llm_error")}  # fmt: skip


def chat(question: str, stream: bool = False) -> dict[str, object]:
    return {"model": "standin-1", "messages": [{"role": "user", "content": question}], "stream": stream}


def faulty(status: int) -> str:
    return f"What is gout {uuid.uuid4().hex}? [[standin:status={status}]]"


def sse_error(body: bytes) -> bool:
    return b'"error"' in body and b"text/event-stream" not in body


@pytest.mark.parametrize("status", sorted(MAPPED))
def test_each_provider_status_reaches_the_caller_as_mapped(gateway: Gateway, status: int) -> None:
    want_status, want_code = MAPPED[status]
    got, headers, raw = post(gateway, "/v1/chat/completions", chat(faulty(status)), gateway.key_a)
    error = json.loads(raw)["error"]
    assert got == want_status and error["code"] == want_code and headers.get("x-request-id")
    if status in (400, 404, 413, 422):  # the stand-in's own body, relayed
        assert error["message"] == "stand-in fault" and error["type"] == "invalid_request_error"
    if status == 429:
        assert int(headers["Retry-After"]) >= 1
    # Streamed, it fails before its first token: the same status and body, not a 200 and an error event.
    got_stream, _, raw_stream = post(gateway, "/v1/chat/completions", chat(faulty(status), True), gateway.key_a)
    assert got_stream == want_status and json.loads(raw_stream)["error"]["code"] == want_code
    # The native route: the same status, the ChatReply as body.
    got_ask, _, raw_ask = post(gateway, "/v1/ask", {"question": faulty(status)}, gateway.key_a)
    assert got_ask == want_status and json.loads(raw_ask)["error"]["code"] in {c.value for c in ErrorCode}


def test_the_openai_sdk_gets_its_own_exceptions_and_does_not_retry_a_400(stack: LocalStack, gateway: Gateway) -> None:
    question = faulty(400)
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key_a, max_retries=2, timeout=30) as sdk:
        with pytest.raises(openai.BadRequestError):
            sdk.chat.completions.create(model="standin-1", messages=[{"role": "user", "content": question}])
        with pytest.raises(openai.RateLimitError):
            sdk.with_options(max_retries=0).chat.completions.create(
                model="standin-1", messages=[{"role": "user", "content": faulty(429)}]
            )
    assert llm_calls(stack, question) == 1  # neither the worker nor the SDK asked again


def test_the_python_client_and_the_cli_map_them_too(stack: LocalStack, client: Client, tenant: str) -> None:
    reply = client.ask(faulty(422), tenant=tenant)
    assert reply.error is not None and reply.error.code == ErrorCode.LLM_REJECTED
    with pytest.raises(ReplyFailed) as raised:
        raise_for_error(reply)
    assert raised.value.status == 422 and not raised.value.retryable
    assert dejavu(stack, "ask", faulty(400), "--tenant", tenant).returncode == EXIT_ERROR_REPLY
    assert dejavu(stack, "ask", faulty(429), "--tenant", tenant).returncode == EXIT_UNAVAILABLE


@pytest.mark.parametrize("shape", ["length", "content_filter", "refusal", "bad_args"])
def test_answers_cut_short_refused_or_with_broken_tool_arguments_are_never_cached(
    stack: LocalStack, gateway: Gateway, shape: str
) -> None:
    question = f"What is gout {uuid.uuid4().hex}? [[standin:as={shape}]]"
    for _ in range(2):
        status, headers, raw = post(gateway, "/v1/chat/completions", chat(question), gateway.key_a)
        assert status == 200 and headers["x-dejavu-tier"] == "llm"
        choice = json.loads(raw)["choices"][0]
        if shape == "refusal":  # relayed as the provider sent it: content null, the refusal beside it
            assert choice["message"]["content"] is None and choice["message"]["refusal"]
        elif shape == "bad_args":
            assert choice["message"]["tool_calls"][0]["function"]["arguments"] == "{not json"
        else:
            assert choice["finish_reason"] == shape
    assert llm_calls(stack, question) == 2  # the second ask went to the LLM again


# --- nothing internal in any response ---


@contextlib.contextmanager
def start_gateway(stack: LocalStack, gateway: Gateway, tmp: Path, host: str = "127.0.0.1", **env: str) -> Iterator[str]:
    """A gateway of its own (`env` over the session's settings; "" unsets one), stopped on leaving the `with`; its
    log is tmp/gateway-<port>.log."""
    port = free_port()
    environ = {**os.environ, **stack.env(), "DEJAVU_GATEWAY_API_KEYS": json.dumps(gateway.keys),
               "DEJAVU_METRICS_KEY": gateway.metrics_key, **env}  # fmt: skip
    environ = {name: value for name, value in environ.items() if value != ""}
    with (tmp / f"gateway-{port}.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "producer.gateway", "--host", host, "--port", str(port)],
                                env=environ, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        end = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < end, (tmp / f"gateway-{port}.log").read_text()
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(15)


def _forbidden(stack: LocalStack, gateway: Gateway) -> list[str]:
    """What no response may carry: the stack's secrets, hosts and ports, worker names, exception text."""
    words = [stack.secrets[name] for name in SECRETS] + [gateway.metrics_key, *gateway.keys]
    words += ["127.0.0.1", "localhost", socket.gethostname(), "celery@", "Traceback", "redis://", "postgresql://",
              "Error(", "Exception", "queue holds", "dejavu:"]  # fmt: skip
    words += [f":{port}" for port in (stack.redis_port, stack.pg_port, stack.llm_port)]
    return words


def test_no_response_carries_anything_internal(stack: LocalStack, gateway: Gateway, tmp_path: Path) -> None:
    seen: list[tuple[str, int, dict[str, str], bytes]] = []

    def record(what: str, g: Gateway, path: str, body: dict[str, object], headers: dict[str, str] | None = None) -> int:
        status, got, raw = post(g, path, body, g.key_a, headers)
        seen.append((what, status, got, raw))
        return status

    for status in MAPPED:  # each upstream status, unstreamed and streamed
        record(f"upstream {status}", gateway, "/v1/chat/completions", chat(faulty(status)))
        record(f"upstream {status} streamed", gateway, "/v1/chat/completions", chat(faulty(status), True))
        record(f"upstream {status} ask", gateway, "/v1/ask", {"question": faulty(status)})
    slow = f"What is gout {uuid.uuid4().hex}? [[standin:sleep=9]]"
    assert record("deadline", gateway, "/v1/ask", {"question": slow, "timeout": 0.5}) == 504
    assert (
        record("malformed", gateway, "/v1/ask", {"question": f"Gout {uuid.uuid4().hex} [[standin:malformed]]"}) == 502
    )
    closed = f"redis://:{stack.secrets['REDIS_PASSWORD']}@127.0.0.1:{free_port()}/0"
    with start_gateway(stack, gateway, tmp_path, DEJAVU_REDIS_URL=closed) as url:  # Redis down
        assert (
            record("redis down", Gateway(url, gateway.keys, gateway.metrics_key), "/v1/ask", {"question": "x?"}) == 503
        )
    # No worker consumes this database's queues: the request waits out its deadline.
    idle = stack.redis_url.rsplit("/", 1)[0] + "/7"
    with start_gateway(stack, gateway, tmp_path, DEJAVU_REDIS_URL=idle) as url:
        g = Gateway(url, gateway.keys, gateway.metrics_key)
        assert (
            record("worker down", g, "/v1/chat/completions", chat("What is gout?"), {"x-dejavu-timeout": "0.5"}) == 504
        )
    forbidden = _forbidden(stack, gateway)
    leaks = [(what, word) for what, _, headers, raw in seen for word in forbidden
             if word in raw.decode(errors="replace") or any(word in v for v in headers.values())]  # fmt: skip
    assert leaks == []
    assert all(status >= 400 and headers.get("x-request-id") for _, status, headers, _ in seen)


def test_what_openai_rejects_is_refused_before_it_is_enqueued(stack: LocalStack, gateway: Gateway) -> None:
    question = f"What is gout {uuid.uuid4().hex}?"
    for extra, param in [({"tools": []}, "tools"), ({"tool_choice": "auto"}, "tool_choice"), ({"stop": ""}, "stop")]:
        status, headers, raw = post(gateway, "/v1/chat/completions", {**chat(question), **extra}, gateway.key_a)
        assert status == 400 and json.loads(raw)["error"]["param"] == param and headers.get("x-request-id")
    status, _, _ = post(gateway, "/v1/ask", {"question": question, "params": {"tools": []}}, gateway.key_a)
    assert status == 400
    assert llm_calls(stack, question) == 0


def test_a_history_as_openai_accepts_it_is_answered(gateway: Gateway) -> None:
    body = {"model": "standin-1", "stream": None, "stream_options": None, "messages": [
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": None, "refusal": "No.", "annotations": []},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "Still no."}]},
        {"role": "user", "content": f"What is gout {uuid.uuid4().hex}?"},
        {"role": "assistant", "content": "Gout is"},
    ]}  # fmt: skip
    status, _, raw = post(gateway, "/v1/chat/completions", body, gateway.key_a)
    assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"], raw
