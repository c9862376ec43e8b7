"""Random and mutated messages thrown at the running lookup task and gateway: every one gets a typed error
or a valid reply, and both keep serving afterwards."""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from producer.client import Client
from schemas.keys import LOOKUP_QUEUE, LOOKUP_TASK
from schemas.messages import CTX_ALLOW_EXPIRED, CTX_MAX_QUESTION_BYTES, ChatRequest, ErrorCode
from schemas.settings import CommonSettings
from schemas.taskwire import task_message
from tests.fuzz_strategies import deeply_nested, json_values, mutated_requests, valid_request
from tests.integration.conftest import Gateway, post

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TENANT = f"fuzz-{uuid.uuid4().hex[:8]}"
# What the gateway may answer; never 500, never a dropped connection.
GATEWAY_STATUSES = {200, 400, 413, 422, 502, 503, 504}


def expected_error(raw: str) -> ErrorCode | None:
    """The error the contract calls for, as a worker validates `raw` (None: a valid request, still in time)."""
    context = {CTX_MAX_QUESTION_BYTES: CommonSettings().max_question_bytes, CTX_ALLOW_EXPIRED: True}
    try:
        request = ChatRequest.model_validate_json(raw, context=context)
    except ValidationError:
        return ErrorCode.INVALID_REQUEST
    return ErrorCode.DEADLINE if request.expired() else None


@FUZZ
@given(mutated_requests(tenant=TENANT))
def test_lookup_task_answers_every_mutated_request(client: Client, rdb: redis.Redis, request: dict[str, Any]) -> None:
    # The request keeps its request_id and reply_to, so whatever else is wrong it can be answered.
    raw = json.dumps(request)
    expected = expected_error(raw)
    rdb.lpush(LOOKUP_QUEUE, task_message(LOOKUP_TASK, LOOKUP_QUEUE, [raw]))
    reply = client.get_reply(request["request_id"], timeout=20)
    assert reply.request_id == request["request_id"]
    if expected is None:
        assert reply.error is None and reply.answer and reply.tier is not None, reply
    else:
        assert reply.error is not None and reply.error.code == expected and reply.answer is None, reply


def test_the_lookup_task_still_serves_after_the_fuzz(client: Client) -> None:
    reply = client.ask(f"Alive after the fuzz {uuid.uuid4().hex}?", tenant=TENANT)
    assert reply.ok and reply.answer, reply


@FUZZ
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_junk_on_the_lookup_queue_is_dropped_and_the_worker_keeps_serving(
    client: Client, rdb: redis.Redis, junk: bytes
) -> None:
    # Raw junk instead of a task envelope, and junk as the task's argument.
    rdb.lpush(LOOKUP_QUEUE, junk, task_message(LOOKUP_TASK, LOOKUP_QUEUE, [junk.decode("utf-8", "replace")]))
    request = valid_request(TENANT, question=f"Still serving after junk {uuid.uuid4().hex[:6]}?")
    rdb.lpush(LOOKUP_QUEUE, task_message(LOOKUP_TASK, LOOKUP_QUEUE, [json.dumps(request)]))
    assert client.get_reply(request["request_id"], timeout=20).ok


gateway_bodies = (
    st.binary(max_size=300)
    | deeply_nested
    | json_values.map(lambda v: json.dumps(v).encode())
    | mutated_requests(tenant=TENANT).map(lambda r: json.dumps(r).encode())
    | st.fixed_dictionaries(
        {"model": st.text(max_size=20) | json_values, "messages": st.lists(json_values, max_size=3) | json_values},
        optional={"stream": json_values, "question": json_values, "timeout": json_values, "max_tokens": json_values},
    ).map(lambda b: json.dumps(b).encode())
)


@FUZZ
@given(path=st.sampled_from(["/v1/chat/completions", "/v1/ask"]), body=gateway_bodies)
def test_gateway_answers_every_body_with_a_status_and_a_message(gateway: Gateway, path: str, body: bytes) -> None:
    status, _, payload = post(gateway, path, body, gateway.key_a)
    assert status in GATEWAY_STATUSES, (status, payload[:300])
    if status != 200:
        error = json.loads(payload)["error"]
        assert error["message"]


def test_the_gateway_still_serves_after_the_fuzz(gateway: Gateway) -> None:
    status, _, body = post(gateway, "/v1/ask", {"question": f"Alive after the fuzz {uuid.uuid4().hex}?"}, gateway.key_a)
    assert status == 200 and json.loads(body)["answer"]
