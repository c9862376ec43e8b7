"""Lookup-only and store (issue #21) through every producer surface, on the real stack: the Python clients, the
gateway, the CLI and `dejavu report`. The stand-in LLM's counter shows that neither verb ever calls the LLM."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from producer.aclient import AsyncClient
from producer.client import Client
from producer.settings import ProducerSettings
from schemas.cli import EXIT_MISS, EXIT_OK, EXIT_USAGE
from schemas.keys import LOOKUP_QUEUE, STORE_TASK, reply_key
from schemas.messages import ChatReply, ErrorCode, StoreRequest, Tier
from tests.conftest import llm_calls, wait_until
from tests.integration.conftest import Gateway, dejavu, post
from worker.local.servers import LocalStack

QUESTION = "What are the symptoms of glaucoma?"
PARAPHRASE = "What are the signs and symptoms of glaucoma?"
USAGE = {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43}
Body = dict[str, Any]
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup_condition", "arguments": '{"name":"x"}'}}


def completion(content: str | None = "Eye pain and blurred vision.", finish: str = "stop", **message: Any) -> Body:
    """A provider's chat.completion, as OpenAI's API returns it (null fields included)."""
    msg = {"role": "assistant", "content": content, "refusal": None, "annotations": [], **message}
    choice = {"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
            "choices": [choice], "usage": USAGE}  # fmt: skip


def hit(client: Client, question: str, **options: Any) -> ChatReply:
    """The lookup once the store's write-back has landed in Redis (it is not waited for; a lookup that raced it may
    be served from pgvector, which it fills too)."""
    found: list[ChatReply] = []

    def served() -> bool:
        found[:] = [client.lookup(question, **options)]
        return found[0].tier == Tier.EXACT

    wait_until(served)
    return found[0]


def test_lookup_misses_at_once_store_fills_it_and_a_paraphrase_is_served(
    client: Client, stack: LocalStack, tenant: str
) -> None:
    before = llm_calls(stack, QUESTION), llm_calls(stack, PARAPHRASE)
    miss = client.lookup(QUESTION, tenant=tenant)
    assert miss.ok and miss.hit is False and miss.answer is None and miss.tier is None
    stored = client.store(QUESTION, response=completion(tool_calls=[CALL], finish="tool_calls"), tenant=tenant)
    assert stored.ok and stored.entry_id is not None
    reply = hit(client, QUESTION, tenant=tenant)
    assert reply.tier == Tier.EXACT and reply.entry_id == stored.entry_id and reply.similarity == 1.0
    assert reply.answer == "Eye pain and blurred vision." and reply.finish_reason == "tool_calls"
    assert [c.model_dump() for c in reply.tool_calls or ()] == [CALL]
    assert reply.saved is not None and reply.saved.model_dump() == USAGE
    para = client.lookup(PARAPHRASE, tenant=tenant)
    assert para.hit and para.tier == Tier.REDIS and para.entry_id == stored.entry_id
    # Neither verb asks the LLM; the entry is the one an ask of the same request is served.
    assert (llm_calls(stack, QUESTION), llm_calls(stack, PARAPHRASE)) == before
    asked = client.ask(QUESTION, tenant=tenant)
    assert asked.tier == Tier.EXACT and asked.entry_id == stored.entry_id and llm_calls(stack, QUESTION) == before[0]


def test_the_scope_is_the_chat_requests(client: Client, tenant: str) -> None:
    cool = {"temperature": 0.2}
    stored = client.store(QUESTION, response="Eye pain.", tenant=tenant, params=cool, system="Be brief.")
    assert hit(client, QUESTION, tenant=tenant, params=cool, system="Be brief.").entry_id == stored.entry_id
    assert client.lookup(QUESTION, tenant=tenant, params={"temperature": 0.9}, system="Be brief.").hit is False
    assert client.lookup(QUESTION, tenant=tenant, params=cool).hit is False
    assert client.lookup(QUESTION, tenant=f"{tenant}-other", params=cool, system="Be brief.").hit is False


@pytest.mark.parametrize(
    ("response", "field"),
    [
        (completion(finish="length"), "finish_reason"),
        (completion(finish="content_filter"), "finish_reason"),
        (completion(content="  "), "the answer is empty"),
        (completion(content=None, refusal="I can't help with that."), "refusal"),
        (completion(role="user"), "message.role"),
        ({**completion(), "usage": {"prompt_tokens": "many"}}, "usage.prompt_tokens"),
        ({"choices": []}, "response.choices"),
    ],
    ids=["length", "content-filter", "empty", "refusal", "not-assistant", "usage-not-numbers", "no-choice"],
)
def test_a_store_that_must_not_be_kept_is_refused_and_nothing_is_sent(
    client: Client, tenant: str, response: Body, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        client.store(QUESTION, response=response, tenant=tenant)
    assert client.lookup(QUESTION, tenant=tenant).hit is False


def test_the_worker_refuses_a_bad_store_sent_on_the_queue_as_it_is(client: Client, tenant: str) -> None:
    # Another language's producer skips the Python validation: the worker's own answers it, and stores nothing.
    good = client.store_request(QUESTION, response="Eye pain.", tenant=tenant)
    raw = json.loads(good.model_dump_json())
    raw["answer"]["finish_reason"] = "length"
    with pytest.raises(ValidationError):
        StoreRequest.model_validate(raw)
    client.celery.send_task(STORE_TASK, args=[json.dumps(raw)], queue=LOOKUP_QUEUE)
    reply = client.get_reply(good.request_id, 30)
    assert reply.error is not None and reply.error.code == ErrorCode.INVALID_REQUEST
    assert "cut short" in reply.error.message and raw["reply_to"] == reply_key(good.request_id)
    assert client.lookup(QUESTION, tenant=tenant).hit is False


def test_the_async_client_has_both_verbs(stack: LocalStack, tenant: str) -> None:
    question = f"Is {uuid.uuid4().hex[:10]} contagious?"

    async def scenario() -> tuple[ChatReply, ChatReply, ChatReply]:
        async with AsyncClient(ProducerSettings()) as client:
            miss = await client.lookup(question, tenant=tenant)
            stored = await client.store(question, response=completion("No."), tenant=tenant)
            end = time.monotonic() + 15
            # The write-back is not waited for by the store: look until it has landed.
            while not (found := await client.lookup(question, tenant=tenant)).hit and time.monotonic() < end:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            return miss, stored, found

    miss, stored, found = asyncio.run(scenario())
    assert miss.hit is False and stored.entry_id is not None
    assert found.hit and found.answer == "No." and found.entry_id == stored.entry_id
    assert llm_calls(stack, question) == 0


def test_gateway_lookup_and_store(gateway: Gateway, stack: LocalStack) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": QUESTION}], "temperature": 0.3}
    calls = llm_calls(stack, QUESTION)
    status, _, raw = post(gateway, "/v1/cache/lookup", body, gateway.key_a)
    assert (status, json.loads(raw)) == (200, {"hit": False})
    # The tenant is the API key's: one named in the body is dropped.
    stored_body = {**body, "tenant": "someone-else", "response": completion(tool_calls=[CALL], finish="tool_calls")}
    status, headers, raw = post(gateway, "/v1/cache/store", stored_body, gateway.key_a)
    assert status == 202, raw
    entry = json.loads(raw)["entry_id"]
    assert headers["x-dejavu-entry"] == entry
    found: list[tuple[int, dict[str, str], bytes]] = []

    def served() -> bool:
        found[:] = [post(gateway, "/v1/cache/lookup", body, gateway.key_a)]
        return found[0][1].get("x-dejavu-tier") == "exact"  # landed in Redis (see `hit`)

    wait_until(served)
    status, headers, raw = found[0]
    reply = json.loads(raw)
    assert status == 200 and reply["object"] == "chat.completion" and reply["hit"] is True
    assert reply["choices"][0]["message"]["tool_calls"] == [CALL]
    assert reply["choices"][0]["finish_reason"] == "tool_calls"
    assert headers["x-dejavu-tier"] == "exact" and headers["x-dejavu-entry"] == entry
    assert headers["x-dejavu-saved-tokens"] == str(USAGE["total_tokens"])
    # Another key's tenant does not see it; neither verb called the LLM.
    assert json.loads(post(gateway, "/v1/cache/lookup", body, gateway.key_b)[2]) == {"hit": False}
    assert llm_calls(stack, QUESTION) == calls


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"response": None}, "response"),
        ({"response": completion(role="user")}, "message.role"),
        ({"response": {**completion(), "usage": {"prompt_tokens": "x"}}}, "response.usage.prompt_tokens"),
        ({"response": completion(finish="length")}, "finish_reason"),
        ({"messages": []}, "messages"),
        ({"model": ""}, "model"),
    ],
    ids=["no-response", "not-assistant", "usage-not-numbers", "cut-short", "no-messages", "no-model"],
)
def test_gateway_refuses_a_malformed_store_and_stores_nothing(gateway: Gateway, change: Body, field: str) -> None:
    question = f"What is {uuid.uuid4().hex[:10]}?"
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": question}], "response": completion()}
    body = {k: v for k, v in {**body, **change}.items() if v is not None}
    status, _, raw = post(gateway, "/v1/cache/store", body, gateway.key_a)
    error = json.loads(raw)["error"]
    assert status == 400 and error["code"] in ("invalid_request", "invalid_request_error"), raw
    assert field in error["message"]
    lookup = {"model": "gpt-4o", "messages": [{"role": "user", "content": question}]}
    assert json.loads(post(gateway, "/v1/cache/lookup", lookup, gateway.key_a)[2]) == {"hit": False}


def test_cli_lookup_store_and_report(stack: LocalStack, tenant: str, tmp_path: Path) -> None:
    question = f"How is {uuid.uuid4().hex[:10]} treated?"
    scope = ["--tenant", tenant, "--param", "temperature=0"]
    assert dejavu(stack, "lookup", question, *scope).returncode == EXIT_MISS
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(completion(finish="length")))
    refused = dejavu(stack, "store", question, *scope, "--response", str(cut))
    assert refused.returncode == EXIT_USAGE and "finish_reason" in refused.stderr
    whole = tmp_path / "whole.json"
    whole.write_text(json.dumps(completion("Rest and fluids.")))
    stored = dejavu(stack, "store", question, *scope, "--response", str(whole))
    assert stored.returncode == EXIT_OK, stored.stderr
    entry = stored.stdout.strip()
    found: list[str] = []

    def served() -> bool:
        run = dejavu(stack, "lookup", question, *scope)
        found[:] = [run.stdout, run.stderr]
        return run.returncode == EXIT_OK

    wait_until(served, timeout=30)
    assert found[0].strip() == "Rest and fluids." and f"entry={entry}" in found[1]
    report = dejavu(stack, "report", "--tenant", tenant, "--json")
    counts = json.loads(report.stdout)[tenant]
    model = ProducerSettings().llm_model
    assert counts["lookup_hits"] >= 1 and counts["stores"] == 1 and counts["tier:miss"] >= 1
    assert counts[f"saved_prompt:{model}"] >= USAGE["prompt_tokens"]
    assert counts[f"saved_completion:{model}"] >= USAGE["completion_tokens"]
    table = dejavu(stack, "report", "--tenant", tenant)
    assert "lookup hits" in table.stdout and tenant in table.stdout
