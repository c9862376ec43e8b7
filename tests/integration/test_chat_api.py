"""The whole chat-completion request through the gateway, with the official OpenAI SDK: tool calls, JSON mode,
parameters in the scope, streamed misses, usage and savings, per-request cache control, bad input."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from producer.client import Client
from schemas.keys import PENDING_PREFIX, entry_prefix
from tests.conftest import llm_calls, wait_idle
from tests.integration.conftest import Gateway, get
from tests.integration.test_gateway import wait_for_entry
from worker.local.servers import LocalStack

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def fresh(text: str = "What is the weather like in Oslo") -> str:
    return f"{text} ({uuid.uuid4().hex[:8]})?"


@pytest.fixture
def sdk(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key_a, max_retries=0, timeout=30) as client:
        yield client


def create(sdk: openai.OpenAI, messages: list[Any], **params: Any) -> tuple[Any, dict[str, str]]:
    raw = sdk.chat.completions.with_raw_response.create(model="standin-1", messages=messages, **params)
    return raw.parse(), dict(raw.headers)


def test_a_tool_call_round_trip_is_cached_at_each_step(sdk: openai.OpenAI, rdb: redis.Redis, stack: LocalStack) -> None:
    question = fresh()
    messages: list[Any] = [{"role": "user", "content": question}]
    first, headers = create(sdk, messages, tools=[WEATHER])
    assert headers["x-dejavu-tier"] == "llm" and first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"]
    wait_for_entry(rdb, headers["x-dejavu-entry"])
    again, headers = create(sdk, messages, tools=[WEATHER])
    assert headers["x-dejavu-tier"] == "exact" and again.choices[0].message.tool_calls == [call]
    assert again.choices[0].finish_reason == "tool_calls" and again.choices[0].message.content is None

    # The tool's result goes back; the answer made from it is cached for exactly that conversation.
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "12 degrees and rain"}]  # fmt: skip
    final, headers = create(sdk, messages, tools=[WEATHER])
    assert headers["x-dejavu-tier"] == "llm" and "12 degrees and rain" in (final.choices[0].message.content or "")
    wait_for_entry(rdb, headers["x-dejavu-entry"])
    replay, headers = create(sdk, messages, tools=[WEATHER])
    assert headers["x-dejavu-tier"] == "exact" and replay.choices[0].message.content == final.choices[0].message.content
    assert llm_calls(stack, question) == 2


def test_json_mode_answers_json(sdk: openai.OpenAI) -> None:
    done, _ = create(sdk, [{"role": "user", "content": fresh("Answer in json: what is gout")}],
                     response_format={"type": "json_object"})  # fmt: skip
    assert isinstance(json.loads(done.choices[0].message.content or ""), dict)


def test_two_temperatures_are_two_llm_calls_and_never_serve_each_other(
    sdk: openai.OpenAI, rdb: redis.Redis, stack: LocalStack
) -> None:
    question = fresh("What helps against a cold")
    messages = [{"role": "user", "content": question}]
    cold, h0 = create(sdk, messages, temperature=0)
    wait_for_entry(rdb, h0["x-dejavu-entry"])
    warm, h1 = create(sdk, messages, temperature=1.0)
    assert h1["x-dejavu-tier"] == "llm" and h1["x-dejavu-entry"] != h0["x-dejavu-entry"]
    assert warm.choices[0].message.content != cold.choices[0].message.content
    wait_for_entry(rdb, h1["x-dejavu-entry"])
    again, h2 = create(sdk, messages, temperature=0)
    assert h2["x-dejavu-tier"] == "exact" and again.choices[0].message.content == cold.choices[0].message.content
    assert llm_calls(stack, question) == 2


def test_an_answer_cut_by_max_tokens_is_never_cached(sdk: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": fresh("Explain how vaccines train the immune system")}]
    cut, headers = create(sdk, messages, max_tokens=5)
    assert cut.choices[0].finish_reason == "length"
    again, headers = create(sdk, messages, max_tokens=5)  # asked again: the LLM again, not the cut answer stored
    assert headers["x-dejavu-tier"] == "llm" and again.choices[0].finish_reason == "length"
    whole, headers = create(sdk, messages)
    assert headers["x-dejavu-tier"] == "llm" and whole.choices[0].finish_reason == "stop"
    assert len(whole.choices[0].message.content or "") > len(cut.choices[0].message.content or "")


def test_a_streamed_miss_arrives_while_the_llm_is_still_writing(sdk: openai.OpenAI, stack: LocalStack) -> None:
    question = fresh("[[standin:hold-after=2]] Why is the sky blue")
    with sdk.chat.completions.with_streaming_response.create(
        model="standin-1", messages=[{"role": "user", "content": question}], stream=True
    ) as resp:
        assert resp.headers["x-dejavu-tier"] == "llm"
        chunks = iter(resp.parse())
        received = [next(chunks) for _ in range(3)]  # the role, then the first two tokens
        assert "".join(c.choices[0].delta.content or "" for c in received)
        # The stand-in holds its stream after two tokens: what came so far came before the answer was written.
        (held,) = [s for s in stack.llm_streams()["in_progress"] if question in s["question"]]
        assert held["held"] and held["tokens_sent"] < held["tokens_total"]
        stack.release_llm_streams()
        rest = list(chunks)
    text = "".join(c.choices[0].delta.content or "" for c in [*received, *rest] if c.choices)
    assert question in text and rest[-1].choices[0].finish_reason == "stop"


def test_a_stream_that_breaks_raises_in_the_sdk_and_caches_nothing(sdk: openai.OpenAI, stack: LocalStack) -> None:
    question = fresh("[[standin:drop-after=3]] What causes tides")
    for attempt in (1, 2):
        with pytest.raises(openai.APIError):
            stream = sdk.chat.completions.create(
                model="standin-1", messages=[{"role": "user", "content": question}], stream=True
            )
            for _ in stream:
                pass
        # Nothing partial was stored: asking again asks the LLM again.
        assert llm_calls(stack, question) >= attempt


def test_include_usage_gives_the_usage_chunk_and_a_hit_reports_what_it_saved(
    sdk: openai.OpenAI, rdb: redis.Redis
) -> None:
    messages = [{"role": "user", "content": fresh("How many bones are in the hand")}]
    usages, saved = [], []
    for _ in range(2):
        with sdk.chat.completions.with_streaming_response.create(
            model="standin-1", messages=messages, stream=True, stream_options={"include_usage": True}
        ) as resp:
            chunks = list(resp.parse())
            saved.append(resp.headers.get("x-dejavu-saved-tokens"))
            entry = resp.headers["x-dejavu-entry"]
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        usages.append(chunks[-1].usage)
        wait_for_entry(rdb, entry)
    miss, hit = usages
    assert miss.completion_tokens > 0 and miss.total_tokens == miss.prompt_tokens + miss.completion_tokens
    assert hit.total_tokens == 0 and saved == [None, str(miss.total_tokens)]


def test_cache_control_no_cache_no_store_and_max_age(
    sdk: openai.OpenAI, rdb: redis.Redis, stack: LocalStack, client: Client
) -> None:
    question = fresh("What is a normal resting heart rate")
    messages = [{"role": "user", "content": question}]
    _, first = create(sdk, messages)
    wait_for_entry(rdb, first["x-dejavu-entry"])
    _, fresh_one = create(sdk, messages, extra_headers={"Cache-Control": "no-cache"})
    assert fresh_one["x-dejavu-tier"] == "llm" and llm_calls(stack, question) == 2
    _, recent = create(sdk, messages, extra_headers={"Cache-Control": "max-age=3600"})
    assert recent["x-dejavu-tier"] == "exact"
    _, too_old = create(sdk, messages, extra_headers={"Cache-Control": "max-age=0"})
    assert too_old["x-dejavu-tier"] == "llm"

    unstored = fresh("What is a normal blood pressure")
    for _ in range(2):
        _, headers = create(sdk, [{"role": "user", "content": unstored}], extra_headers={"Cache-Control": "no-store"})
        assert headers["x-dejavu-tier"] == "llm"
    wait_idle(client)  # a write-back, had one been scheduled, has run
    assert not rdb.exists(entry_prefix("minilm") + headers["x-dejavu-entry"])


@pytest.mark.parametrize(
    "params, message",
    [
        ({"n": 2}, "n must be 1"),
        ({"logprobs": True}, "log probabilities"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [WEATHER]}, "not among"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"temperature": 7}, "temperature"),
    ],
    ids=["n", "logprobs", "malformed-tools", "unknown-tool-choice", "response-format", "temperature"],
)
def test_what_a_cache_cannot_honour_is_a_400(sdk: openai.OpenAI, params: dict[str, Any], message: str) -> None:
    with pytest.raises(openai.BadRequestError, match=message):
        create(sdk, [{"role": "user", "content": fresh()}], **params)


def test_a_tool_result_without_its_call_is_a_400(sdk: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": fresh()}, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]
    with pytest.raises(openai.BadRequestError, match="no earlier call"):
        create(sdk, messages)


def test_coalesced_followers_of_a_streaming_leader_get_the_whole_answer(gateway: Gateway, stack: LocalStack) -> None:
    question = fresh("[[standin:hold-after=1]] What is the speed of light")
    messages = [{"role": "user", "content": question}]
    followed: list[tuple[str, str]] = []  # the follower's tier and answer

    def follower() -> None:
        with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key_a, max_retries=0, timeout=30) as c:
            raw = c.chat.completions.with_raw_response.create(model="standin-1", messages=messages)  # type: ignore[arg-type]
            followed.append((raw.headers["x-dejavu-tier"], raw.parse().choices[0].message.content or ""))

    # Given a streaming leader whose LLM call is held after its first token, holding the lease on its entry ...
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key_a, max_retries=0, timeout=30) as c:
        stream = c.chat.completions.create(model="standin-1", messages=messages, stream=True)  # type: ignore[arg-type]
        lease = PENDING_PREFIX + stream.response.headers["x-dejavu-entry"]
        first = next(iter(stream))
        # ... and a follower asking the same question, once the coalescer has kept it from taking that lease ...
        watcher = redis.Redis.from_url(stack.redis_url, socket_timeout=30)
        with watcher.monitor() as monitor:  # opened after the leader took the lease: any SET NX seen is another's
            thread = threading.Thread(target=follower)
            thread.start()
            end = time.monotonic() + 30
            while not tries_lease(monitor.next_command()["command"], lease):
                assert time.monotonic() < end, "the follower never reached the coalescer"
        watcher.close()
        # ... when the leader's stream goes on and ends,
        stack.release_llm_streams()
        text = (first.choices[0].delta.content or "") + "".join(
            c.choices[0].delta.content or "" for c in stream if c.choices
        )
        thread.join(30)
    # then the follower gets the leader's whole answer from the coalescer (not from a stored entry), and the LLM
    # was asked once.
    assert followed == [("coalesced", text)] and llm_calls(stack, question) == 1


def tries_lease(command: str, lease: str) -> bool:
    """Whether `command` (as MONITOR shows it) is a SET NX on `lease`: a caller trying to take it."""
    words = command.split()
    return words[:2] == ["SET", lease] and "NX" in words


def test_metrics_count_llm_calls_and_tokens_spent_and_saved_per_tenant(
    sdk: openai.OpenAI, gateway: Gateway, rdb: redis.Redis
) -> None:
    tenant = gateway.keys[gateway.key_a]

    def series() -> dict[tuple[str, str], float]:
        _, body = get(gateway, "/metrics")
        return {
            (s.name, ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
            if s.name.startswith(("dejavu_llm_calls", "dejavu_tokens"))
            and s.name.endswith("_total")
            and s.labels.get("tenant") == tenant
        }

    before = series()
    messages = [{"role": "user", "content": fresh("Which vitamins dissolve in fat")}]
    miss, headers = create(sdk, messages)
    wait_for_entry(rdb, headers["x-dejavu-entry"])
    create(sdk, messages)
    moved = {key: value - before.get(key, 0.0) for key, value in series().items() if value != before.get(key, 0.0)}
    usage = miss.usage
    assert moved == {
        ("dejavu_llm_calls_total", f"tenant={tenant}"): 1,
        ("dejavu_llm_calls_avoided_total", f"tenant={tenant},tier=exact"): 1,
        ("dejavu_tokens_spent_total", f"kind=prompt,tenant={tenant}"): usage.prompt_tokens,
        ("dejavu_tokens_spent_total", f"kind=completion,tenant={tenant}"): usage.completion_tokens,
        ("dejavu_tokens_saved_total", f"kind=prompt,tenant={tenant},tier=exact"): usage.prompt_tokens,
        ("dejavu_tokens_saved_total", f"kind=completion,tenant={tenant},tier=exact"): usage.completion_tokens,
    }
