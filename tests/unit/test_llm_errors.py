"""worker.llm against a tiny provider that answers a given status and body: what reaches the caller is the
provider's 4xx as it gave it, a 429 after the retries, and fixed texts for the rest, never the URL or its body."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

from producer.errors import exit_code, http_status, openai_error, retry_after
from schemas.cache import AnswerMeta, LLMAnswer
from schemas.cli import EXIT_ERROR_REPLY, EXIT_UNAVAILABLE
from schemas.messages import ChatMessage, ChatRequest, ErrorCode, ReplyError, ToolCall
from worker.errors import ReplyableError
from worker.llm import LLMClient, answer_of, cacheable
from worker.llm_slots import LLMSlots

SECRET = "sk-operator-0123456789"
ORG = "org-Secret42"


def _request() -> ChatRequest:
    return ChatRequest(
        messages=[ChatMessage(role="user", content="What is gout?")], tenant="t", model="m",
        reply_to="dejavu:reply:x", deadline=time.time() + 10,
    )  # fmt: skip


async def _call(status: int, body: Any, headers: dict[str, str] | None = None) -> tuple[ReplyError, int, str]:
    """One completion against a provider that always answers `status` with `body`: the reply error, how many
    calls the provider saw, and the base URL it listened on."""
    calls = 0

    async def handler(_: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response(body, status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = TestServer(app)
    await server.start_server()
    base = f"http://{server.host}:{server.port}/v1"
    try:
        async with aiohttp.ClientSession() as session:
            slots = LLMSlots(aioredis.Redis(), limit=0, lease_s=1)
            llm = LLMClient(session, base, SECRET, timeout_s=5, max_retries=2, backoff_s=0.01, slots=slots)
            with pytest.raises(ReplyableError) as raised:
                await llm.complete(_request())
    finally:
        await server.close()
    return raised.value.to_reply(), calls, base


def _openai(message: str, kind: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_provider_4xx_is_relayed_as_it_came_and_not_retried(status: int) -> None:
    body = _openai("This model's maximum context length is 8192 tokens.", "invalid_request_error",
                   "context_length_exceeded", "messages")  # fmt: skip
    error, calls, _ = asyncio.run(_call(status, body))
    assert calls == 1 and error.code == ErrorCode.LLM_REJECTED and not error.retryable
    assert http_status(error) == status
    assert openai_error(error) == body
    assert exit_code(error) == EXIT_ERROR_REPLY


def test_a_429_is_retried_then_relayed_with_retry_after_and_nothing_of_its_text() -> None:
    body = _openai(f"Rate limit reached for gpt-4o in organization {ORG} on requests per min", "requests",
                   "rate_limit_exceeded")  # fmt: skip
    error, calls, base = asyncio.run(_call(429, body, {"Retry-After": "0.01"}))
    assert calls == 3 and error.code == ErrorCode.LLM_RATE_LIMITED and error.retryable
    assert http_status(error) == 429 and retry_after(error) == 1 and exit_code(error) == EXIT_UNAVAILABLE
    shown = json.dumps(openai_error(error))
    assert ORG not in shown and base not in shown
    assert openai_error(error)["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("status", [401, 403])
def test_the_operators_credentials_refused_is_a_fixed_502(status: int) -> None:
    body = _openai(f"Incorrect API key provided: sk-...{SECRET[-4:]}", "invalid_request_error", "invalid_api_key")
    error, calls, base = asyncio.run(_call(status, body))
    assert calls == 1 and error.code == ErrorCode.UPSTREAM_AUTH and http_status(error) == 502
    assert SECRET[-4:] not in error.message and base not in error.message


@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_after_the_retries_is_a_fixed_502(status: int) -> None:
    error, calls, base = asyncio.run(
        _call(status, _openai(f"upstream {ORG} broke at 10.0.0.7:8000", "server_error", None))
    )
    assert calls == 3 and error.code == ErrorCode.LLM_ERROR and http_status(error) == 502
    assert ORG not in error.message and "10.0.0.7" not in error.message and base not in error.message


def test_a_provider_that_is_down_is_a_fixed_502() -> None:
    async def call() -> ReplyError:
        async with aiohttp.ClientSession() as session:
            llm = LLMClient(session, "http://user:pw@127.0.0.1:9/v1", SECRET, timeout_s=2, max_retries=1,
                            backoff_s=0.01, slots=LLMSlots(aioredis.Redis(), limit=0, lease_s=1))  # fmt: skip
            with pytest.raises(ReplyableError) as raised:
                await llm.complete(_request())
            return raised.value.to_reply()

    error = asyncio.run(call())
    assert error.code == ErrorCode.LLM_ERROR and "127.0.0.1" not in error.message and "pw" not in error.message


def _completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}]}


def test_content_null_with_a_refusal_or_audio_is_an_answer_never_cached() -> None:
    refusal = answer_of(_completion({"content": None, "refusal": "I can't help with that."}))
    assert refusal.meta.refusal == "I can't help with that." and not cacheable(refusal)
    audio = answer_of(_completion({"content": None, "audio": {"id": "audio_1", "data": "UklG", "transcript": "hi"}}))
    assert audio.meta.audio is not None and not cacheable(audio)
    with pytest.raises(ValueError):  # an empty text and nothing else: a garbled reply, retried
        answer_of(_completion({"content": ""}))


@pytest.mark.parametrize("finish", ["length", "content_filter"])
def test_an_answer_cut_short_is_never_cached(finish: str) -> None:
    assert not cacheable(answer_of(_completion({"content": "Gout is"}, finish)))
    assert cacheable(answer_of(_completion({"content": "Gout is a form of arthritis."})))


def test_tool_arguments_that_are_not_json_are_never_cached() -> None:
    def call(arguments: str) -> LLMAnswer:
        tool = ToolCall.model_validate({"id": "c1", "function": {"name": "f", "arguments": arguments}})
        return LLMAnswer(answer="", meta=AnswerMeta(tool_calls=[tool], finish_reason="tool_calls"))

    assert not cacheable(call("{not json")) and cacheable(call('{"city": "Oslo"}'))


def test_an_internal_exception_reaches_the_caller_as_a_fixed_message() -> None:
    from worker.pipeline import _internal

    try:
        raise ConnectionError("redis://:hunter2@10.1.2.3:6379 refused")
    except ConnectionError as exc:
        reply = _internal(_request(), exc)
    assert reply.error is not None and reply.error.code == ErrorCode.INTERNAL
    assert "10.1.2.3" not in reply.error.message and "hunter2" not in reply.error.message
    assert reply.request_id in reply.error.message  # the log has the detail under it
