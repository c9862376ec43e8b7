"""LangChain's `set_llm_cache(DejavuCache(...))` in front of real LangChain models (issue #21): ChatOpenAI pointed
straight at the stand-in LLM (not at the gateway), whose call counter shows what the cache saved, and LangChain's
own fake chat model and plain-text LLM, to show that any provider is cached the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.caches import RETURN_VAL_TYPE
from langchain_core.globals import set_llm_cache
from langchain_core.language_models import FakeListChatModel, FakeListLLM
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from producer.client import Client
from producer.langchain import DejavuCache
from producer.settings import ProducerSettings
from tests.conftest import llm_calls, wait_until
from worker.local.servers import LocalStack, free_port

QUESTION = "What are the symptoms of glaucoma?"
PARAPHRASE = "What are the signs and symptoms of glaucoma?"


@tool
def lookup_condition(name: str) -> str:
    """Look a medical condition up by name."""
    return name


class Recorded(DejavuCache):
    """The cache, noting what LangChain last stored, so that a test can wait for that write-back to land."""

    last: tuple[str, str] = ("", "")

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        super().update(prompt, llm_string, return_val)
        self.last = (prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        await super().aupdate(prompt, llm_string, return_val)
        self.last = (prompt, llm_string)

    def landed(self) -> None:
        """Wait for the last answer's write-back (`update` queues it and does not wait)."""
        wait_until(lambda: self.lookup(*self.last) is not None)


@pytest.fixture
def cache(stack: LocalStack, tenant: str) -> Iterator[Recorded]:
    c = Recorded(tenant=tenant, settings=ProducerSettings())
    set_llm_cache(c)
    yield c
    set_llm_cache(None)
    c.close()


def chat(stack: LocalStack, **fields: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=stack.llm_url, api_key="not-needed", model="standin-1", max_retries=0, **fields)


def served(message: Any) -> dict[str, Any]:
    assert isinstance(message, AIMessage)
    return dict(message.response_metadata["dejavu"])


def test_chat_openai_under_set_llm_cache(stack: LocalStack, cache: Recorded) -> None:
    model = chat(stack, temperature=0)
    calls = llm_calls(stack, QUESTION)
    first = model.invoke(QUESTION)
    assert llm_calls(stack, QUESTION) == calls + 1 and "dejavu" not in first.response_metadata
    cache.landed()
    again = model.invoke(QUESTION)
    assert llm_calls(stack, QUESTION) == calls + 1  # served by the cache: no new call
    assert (again.content, again.additional_kwargs) == (first.content, first.additional_kwargs)
    assert again.usage_metadata is not None and first.usage_metadata is not None
    assert again.usage_metadata["input_tokens"] == first.usage_metadata["input_tokens"]
    hit = served(again)
    assert hit["saved_tokens"] == first.usage_metadata["total_tokens"] > 0
    # A paraphrase: the semantic tier, no call for it either.
    para_calls = llm_calls(stack, PARAPHRASE)
    para = model.invoke(PARAPHRASE)
    assert para.content == first.content and served(para)["tier"] in ("redis", "pgvector")
    assert llm_calls(stack, PARAPHRASE) == para_calls and served(para)["entry_id"] == hit["entry_id"]
    # Another temperature is another scope: the model is called.
    chat(stack, temperature=0.7).invoke(QUESTION)
    assert llm_calls(stack, QUESTION) == calls + 2
    # clear() empties it: the next call goes to the model again.
    cache.clear()
    model.invoke(QUESTION)
    assert llm_calls(stack, QUESTION) == calls + 3


def test_forgetting_the_tenant_forgets_what_its_langchain_cache_stored(
    stack: LocalStack, cache: Recorded, client: Client, tenant: str
) -> None:
    # Given an answer the LangChain cache stored (under a tenant of its own per model and parameters) ...
    model = chat(stack, temperature=0)
    model.invoke(QUESTION)
    cache.landed()
    # ... an operator who forgets the whole tenant (`dejavu forget --all --tenant T`) forgets it too.
    reply = client.forget(all_entries=True, tenant=tenant)
    assert reply.ok and reply.removed is not None and reply.removed.redis >= 1 and reply.removed.pgvector >= 1
    assert cache.lookup(*cache.last) is None


def test_a_tool_call_answer_comes_back_with_its_tool_calls(stack: LocalStack, cache: Recorded) -> None:
    question = "Which condition causes halos around lights at night?"
    model = chat(stack, temperature=0)
    bound = model.bind_tools([lookup_condition])
    calls = llm_calls(stack, question)
    first = bound.invoke(question)
    assert isinstance(first, AIMessage) and first.tool_calls
    cache.landed()
    again = bound.invoke(question)
    assert isinstance(again, AIMessage) and again.tool_calls == first.tool_calls
    assert llm_calls(stack, question) == calls + 1 and served(again)["tier"] == "exact"


def test_ainvoke_the_same(stack: LocalStack, cache: Recorded) -> None:
    question = "Is glaucoma hereditary?"
    model = chat(stack, temperature=0)
    calls = llm_calls(stack, question)

    async def scenario() -> tuple[AIMessage, AIMessage]:
        try:
            first = await model.ainvoke(question)
            for _ in range(150):  # aupdate queued the write-back and did not wait for it
                if await cache.alookup(*cache.last) is not None:
                    break
                await asyncio.sleep(0.1)
            again = await model.ainvoke(question)
            await cache.aclear()
            return first, again
        finally:
            await cache.aclose()

    first, again = asyncio.run(scenario())
    assert again.content == first.content and served(again)["tier"] == "exact"
    assert llm_calls(stack, question) == calls + 1
    model.invoke(question)  # aclear() emptied it
    assert llm_calls(stack, question) == calls + 2


def test_any_provider_langchains_own_fake_chat_model(cache: Recorded, tenant: str) -> None:
    model = FakeListChatModel(responses=["Raised eye pressure damages the optic nerve.", "another answer"])
    first = model.invoke(QUESTION)
    cache.landed()
    again = model.invoke(QUESTION)
    assert again.content == first.content == "Raised eye pressure damages the optic nerve."
    assert model.i == 1  # the model answered once
    # Per model (`cache=`) as well as globally.
    own = Recorded(tenant=f"{tenant}-own", settings=ProducerSettings())
    try:
        per_model = FakeListChatModel(responses=["first", "second"], cache=own)
        assert per_model.invoke(QUESTION).content == "first"
        own.landed()
        assert per_model.invoke(QUESTION).content == "first" and per_model.i == 1
    finally:
        own.close()


def test_a_plain_text_llm_and_clearing_one_scope(cache: Recorded) -> None:
    cold = FakeListLLM(responses=["cold answer", "not asked"])
    assert cold.invoke(QUESTION) == "cold answer"
    cache.landed()
    cold_scope = cache.last
    assert cold.invoke(QUESTION) == "cold answer" and cold.i == 1
    warm = FakeListLLM(responses=["warm answer", "not asked"])  # other parameters: a scope of its own
    assert warm.invoke(QUESTION) == "warm answer"
    cache.landed()
    assert cache.last[1] != cold_scope[1]
    cache.clear(llm_string=cache.last[1])
    assert cache.lookup(*cache.last) is None
    assert cache.lookup(*cold_scope) is not None  # only that scope was cleared
    cache.clear()
    assert cache.lookup(*cold_scope) is None


def test_an_unreachable_cache_is_a_miss_not_a_failure() -> None:
    # The application's model call goes on, uncached, when the cache cannot be reached.
    settings = ProducerSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    cache = DejavuCache(tenant="down", settings=settings, timeout=5)
    model = FakeListChatModel(responses=["from the model", "not asked"], cache=cache)
    try:
        assert model.invoke(QUESTION).content == "from the model" and model.i == 1
    finally:
        cache.close()
