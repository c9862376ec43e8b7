"""LangChain's ChatOpenAI pointed at the gateway: invoke, stream and bind_tools work as against OpenAI, and the
second ask of each is served from the cache (the stand-in LLM counts one call)."""

from __future__ import annotations

import uuid

import pytest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

from tests.conftest import llm_calls
from tests.integration.conftest import Gateway
from tests.integration.test_chat_api import WEATHER
from worker.local.servers import LocalStack


@pytest.fixture
def chat(gateway: Gateway) -> ChatOpenAI:
    return ChatOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key_a, model="standin-1", max_retries=0,  # type: ignore[arg-type]
                      timeout=30)  # fmt: skip


def question(text: str) -> str:
    return f"{text} ({uuid.uuid4().hex[:8]})?"


def test_invoke(chat: ChatOpenAI, stack: LocalStack) -> None:
    q = question("What is the capital of Norway")
    answers = [chat.invoke(q).content for _ in range(2)]
    assert q in str(answers[0]) and answers[0] == answers[1] and llm_calls(stack, q) == 1


def test_stream(chat: ChatOpenAI, stack: LocalStack) -> None:
    q = question("Why do cats purr")
    pieces = [str(chunk.content) for chunk in chat.stream(q)]
    assert len([p for p in pieces if p]) > 2 and q in "".join(pieces)  # token by token on a miss
    assert "".join(str(chunk.content) for chunk in chat.stream(q)) == "".join(pieces)
    assert llm_calls(stack, q) == 1


def test_bind_tools(chat: ChatOpenAI, stack: LocalStack) -> None:
    q = question("What is the weather in Bergen")
    with_tools = chat.bind_tools([WEATHER])
    first, second = with_tools.invoke(q), with_tools.invoke(q)
    assert isinstance(first, AIMessage) and first.tool_calls and first.tool_calls[0]["name"] == "get_weather"
    assert isinstance(second, AIMessage) and second.tool_calls == first.tool_calls and llm_calls(stack, q) == 1
