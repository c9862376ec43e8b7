"""The HTTP gateway as other services see it: the official OpenAI SDK and plain HTTP, against the real stack."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from schemas.keys import entry_prefix
from schemas.messages import ChatReply, Tier
from tests.conftest import llm_calls
from tests.integration.conftest import Gateway, get, post
from worker.local.servers import LocalStack

PROFILE = "minilm"


def fresh_question() -> str:
    return f"How long does a {uuid.uuid4().hex[:10]} take to recover?"


def wait_for_entry(rdb: redis.Redis, entry_id: str | None, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if entry_id and rdb.exists(entry_prefix(PROFILE) + entry_id):
            return
        time.sleep(0.05)
    raise AssertionError(f"entry {entry_id} was not written back in time")


def chat_body(question: str, **extra: Any) -> dict[str, Any]:
    return {"model": "standin-1", "messages": [{"role": "user", "content": question}], **extra}


@pytest.fixture
def sdk(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key_a, max_retries=0, timeout=30) as client:
        yield client


def test_openai_sdk_gets_a_miss_then_a_hit(sdk: openai.OpenAI, rdb: redis.Redis, stack: LocalStack) -> None:
    question = fresh_question()
    messages: list[Any] = [{"role": "user", "content": question}]
    raw = sdk.chat.completions.with_raw_response.create(model="standin-1", messages=messages)
    miss = raw.parse()
    assert raw.headers["x-dejavu-tier"] == "llm"
    assert miss.object == "chat.completion" and miss.model == "standin-1"
    assert miss.choices[0].message.role == "assistant" and miss.choices[0].finish_reason == "stop"
    answer = miss.choices[0].message.content
    assert answer is not None and question in answer and "stand-in LLM" in answer
    wait_for_entry(rdb, raw.headers["x-dejavu-entry"])

    raw = sdk.chat.completions.with_raw_response.create(model="standin-1", messages=messages)
    assert raw.headers["x-dejavu-tier"] == "exact"
    assert float(raw.headers["x-dejavu-similarity"]) == 1.0
    assert raw.parse().choices[0].message.content == answer
    assert llm_calls(stack, question) == 1


def test_openai_sdk_streams_a_miss_then_a_hit(sdk: openai.OpenAI, rdb: redis.Redis) -> None:
    question = fresh_question()
    messages: list[Any] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
    tiers, answers = [], []
    for _ in range(2):
        with sdk.chat.completions.with_streaming_response.create(
            model="standin-1", messages=messages, stream=True
        ) as resp:
            tiers.append(resp.headers["x-dejavu-tier"])
            assert resp.headers["content-type"].startswith("text/event-stream")
            chunks = list(resp.parse())
            entry = resp.headers["x-dejavu-entry"]
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "stop"
        answers.append("".join(c.choices[0].delta.content or "" for c in chunks))
        wait_for_entry(rdb, entry)
    assert tiers == ["llm", "exact"]
    assert answers[0] == answers[1] and question in answers[0]


def test_stream_ends_with_done(gateway: Gateway) -> None:
    status, _, body = post(gateway, "/v1/chat/completions", chat_body(fresh_question(), stream=True), gateway.key_a)
    assert status == 200
    events = [line.removeprefix("data: ") for line in body.decode().split("\n\n") if line]
    assert events[-1] == "[DONE]"
    reasons = [json.loads(e)["choices"][0]["finish_reason"] for e in events[:-1]]
    assert reasons[-1] == "stop" and set(reasons[:-1]) == {None} and len(reasons) > 2  # streamed token by token


def test_native_ask_returns_the_reply_contract(gateway: Gateway, rdb: redis.Redis) -> None:
    question = fresh_question()
    status, headers, body = post(gateway, "/v1/ask", {"question": question, "system": "Be brief."}, gateway.key_a)
    assert status == 200, body
    reply = ChatReply.model_validate_json(body)
    assert reply.ok and reply.tier == Tier.LLM and question in (reply.answer or "")
    assert headers["x-dejavu-tier"] == "llm" and headers["x-dejavu-request-id"] == reply.request_id
    wait_for_entry(rdb, reply.entry_id)
    status, headers, body = post(gateway, "/v1/ask", {"question": question, "system": "Be brief."}, gateway.key_a)
    hit = ChatReply.model_validate_json(body)
    assert hit.tier == Tier.EXACT and hit.answer == reply.answer and hit.entry_id == reply.entry_id


def test_tenant_a_cannot_read_tenant_b(gateway: Gateway, rdb: redis.Redis) -> None:
    question = fresh_question()
    status, headers, _ = post(gateway, "/v1/chat/completions", chat_body(question), gateway.key_a)
    assert status == 200
    wait_for_entry(rdb, headers["x-dejavu-entry"])
    # Same question with the other key, even when the body claims tenant A: a miss in B's own scope.
    body = chat_body(question, tenant=gateway.keys[gateway.key_a], user=gateway.keys[gateway.key_a])
    status, other, _ = post(gateway, "/v1/chat/completions", body, gateway.key_b)
    assert status == 200 and other["x-dejavu-tier"] == "llm"
    assert other["x-dejavu-entry"] != headers["x-dejavu-entry"]
    # The native endpoint refuses a tenant in the body outright.
    status, _, error = post(gateway, "/v1/ask", {"question": question, "tenant": "x"}, gateway.key_b)
    assert status == 400 and "tenant" in json.loads(error)["error"]["message"]


@pytest.mark.parametrize(
    ("key", "code"), [(None, "missing_api_key"), ("not-a-key", "invalid_api_key")], ids=["missing", "unknown"]
)
def test_missing_or_unknown_key_is_401(gateway: Gateway, key: str | None, code: str) -> None:
    for path in ("/v1/chat/completions", "/v1/ask"):
        status, headers, body = post(gateway, path, chat_body(fresh_question()), key)
        error = json.loads(body)["error"]
        assert status == 401 and error["code"] == code and error["type"] == "authentication_error"
        assert headers["WWW-Authenticate"] == "Bearer"


def test_the_openai_sdk_sees_401_as_authentication_error(gateway: Gateway) -> None:
    with (
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="wrong", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.chat.completions.create(model="standin-1", messages=[{"role": "user", "content": "hi?"}])


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v1/chat/completions", b"{not json", 400, "not valid JSON"),
        ("/v1/ask", b"\xff\xfe garbage", 400, "not valid JSON"),
        ("/v1/chat/completions", b'{"model": "m"}', 400, "messages"),
        ("/v1/chat/completions", b'{"messages": []}', 400, "messages"),
        ("/v1/chat/completions", b'{"messages": [{"role": "tool", "content": "x"}]}', 400, "tool_call_id"),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "n": 3}', 400, "n"),
        ("/v1/ask", b'{"question": "   "}', 400, "empty"),
        ("/v1/ask", b'{"question": "a", "messages": [{"role": "user", "content": "b"}]}', 400, "either"),
        ("/v1/ask", json.dumps({"question": "x" * 9000}).encode(), 400, "over the limit"),
        ("/v1/ask", b"[1, 2]", 400, "body"),
    ],
    ids=["bad-json", "bad-bytes", "no-messages", "empty-messages", "tool-role", "n>1", "blank-question",
         "question-and-messages", "question-too-long", "not-an-object"],
)  # fmt: skip
def test_bad_input_gets_400_with_a_message(gateway: Gateway, path: str, body: bytes, status: int, needle: str) -> None:
    got, _, raw = post(gateway, path, body, gateway.key_a)
    error = json.loads(raw)["error"]
    assert got == status and needle in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_body_over_the_limit_is_413_and_the_gateway_keeps_serving(gateway: Gateway) -> None:
    huge = json.dumps(chat_body("x" * (1024 * 1024 + 10))).encode()
    status, _, body = post(gateway, "/v1/chat/completions", huge, gateway.key_a)
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
    status, _, _ = post(gateway, "/v1/ask", {"question": fresh_question()}, gateway.key_a)
    assert status == 200


def test_passed_deadline_is_504(gateway: Gateway, stack: LocalStack) -> None:
    question = fresh_question()
    status, _, body = post(gateway, "/v1/ask", {"question": question, "deadline": time.time() - 1}, gateway.key_a)
    assert status == 504 and json.loads(body)["error"]["code"] == "deadline"
    status, _, body = post(
        gateway, "/v1/chat/completions", chat_body(question), gateway.key_a, {"x-dejavu-deadline": "1"}
    )
    assert status == 504 and json.loads(body)["error"]["code"] == "deadline"
    assert llm_calls(stack, question) == 0


def test_deadline_passing_in_the_worker_is_504(gateway: Gateway) -> None:
    # The stand-in LLM takes ~100 ms; 30 ms is not enough, and the worker answers with a typed error.
    status, _, body = post(gateway, "/v1/ask", {"question": fresh_question(), "timeout": 0.03}, gateway.key_a)
    assert status == 504
    reply = ChatReply.model_validate_json(body)
    assert reply.error is not None and reply.error.code in {"deadline", "llm_timeout"}


def test_llm_failure_is_502(gateway: Gateway) -> None:
    question = f"{fresh_question()} [[standin:status=500]]"
    status, _, body = post(gateway, "/v1/chat/completions", chat_body(question), gateway.key_a)
    error = json.loads(body)["error"]
    assert status == 502 and error["code"] == "llm_error" and error["type"] == "api_error"


def test_unknown_route_is_a_json_404(gateway: Gateway) -> None:
    status, body = get(gateway, "/v1/models/nope")
    assert status == 404 and json.loads(body)["error"]["type"] == "not_found_error"


def test_healthz_reports_each_part_to_the_operator(gateway: Gateway) -> None:
    status, body = get(gateway, "/healthz")
    report = json.loads(body)
    assert status == 200 and report["status"] == "ok", report
    assert report["redis"]["ok"] and report["postgres"]["ok"] and report["workers"]["names"]


@pytest.mark.parametrize("key", [None, "wrong-key", "tenant-key"])
def test_healthz_tells_anyone_else_only_the_status(gateway: Gateway, key: str | None) -> None:
    headers = {} if key is None else {"Authorization": f"Bearer {gateway.key_a if key == 'tenant-key' else key}"}
    request = urllib.request.Request(f"{gateway.url}/healthz", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert json.loads(resp.read()) == {"status": "ok"}


def test_metrics_need_the_metrics_key(gateway: Gateway) -> None:
    status, body = get(gateway, "/metrics", anonymous=True)
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"


def gateway_counts(gateway: Gateway) -> dict[tuple[str, ...], float]:
    """The gateway's request, hit, miss and error counters and its latency counts on /metrics, by name and labels;
    the /metrics requests themselves left out."""
    status, body = get(gateway, "/metrics")
    assert status == 200, body
    return {
        (sample.name, *sorted(f"{k}={v}" for k, v in sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name.startswith("dejavu_gateway_")
        and sample.name.endswith(("_total", "_count"))
        and sample.labels.get("endpoint") != "/metrics"
    }


def test_metrics_count_hits_misses_and_errors(gateway: Gateway, rdb: redis.Redis) -> None:
    before = gateway_counts(gateway)
    # A miss, two exact hits of its answer once it is written back, and a body that is not JSON.
    question = fresh_question()
    status, headers, _ = post(gateway, "/v1/chat/completions", chat_body(question), gateway.key_a)
    assert status == 200 and headers["x-dejavu-tier"] == "llm"
    wait_for_entry(rdb, headers["x-dejavu-entry"])
    for _ in range(2):
        status, headers, _ = post(gateway, "/v1/chat/completions", chat_body(question), gateway.key_a)
        assert status == 200 and headers["x-dejavu-tier"] == "exact"
    status, _, _ = post(gateway, "/v1/chat/completions", b"{", gateway.key_a)
    assert status == 400
    after = gateway_counts(gateway)
    moved = {series: value - before.get(series, 0.0) for series, value in after.items() if value != before.get(series)}
    chat = "endpoint=/v1/chat/completions"
    assert moved == {
        ("dejavu_gateway_requests_total", chat): 4,
        ("dejavu_gateway_misses_total",): 1,
        ("dejavu_gateway_hits_total", "tier=exact"): 2,
        ("dejavu_gateway_errors_total", "code=invalid_json"): 1,
        ("dejavu_gateway_request_seconds_count", chat, "outcome=llm"): 1,
        ("dejavu_gateway_request_seconds_count", chat, "outcome=exact"): 2,
        ("dejavu_gateway_request_seconds_count", chat, "outcome=error"): 1,
    }


@pytest.mark.parametrize("opening, closing", [("[", "]"), ('{"a":', "}")])
def test_a_body_nested_5000_deep_is_a_400(gateway: Gateway, opening: str, closing: str) -> None:
    body = (opening * 5000 + "1" + closing * 5000).encode()
    status, _, payload = post(gateway, "/v1/chat/completions", body, gateway.key_a)
    assert status == 400 and json.loads(payload)["error"]["code"] == "invalid_json"
