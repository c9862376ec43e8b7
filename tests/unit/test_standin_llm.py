"""The stand-in LLM speaks OpenAI's chat-completions API: the official SDK, and raw HTTP for the wire's details."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from worker.local.standin.answer import TOKEN, standin_answer, variant_of
from worker.local.standin.serve import make_app

MODEL = "standin-1"
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"}, "days": {"type": "integer"}, "hourly": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}, "note": {"type": "string"},
            },
            "required": ["city", "days", "hourly", "unit"],
        },
    },
}  # fmt: skip
CLOCK: Any = {"type": "function", "function": {"name": "clock"}}


@pytest.fixture(scope="module")
def serve() -> Iterator[Callable[..., str]]:
    """Starts stand-ins (make_app's keyword arguments) on an event loop of their own; each one's base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: list[TestServer] = []

    def start(**pacing: Any) -> str:
        server = TestServer(make_app(**pacing))
        asyncio.run_coroutine_threadsafe(server.start_server(), loop).result(10)
        servers.append(server)
        return f"http://{server.host}:{server.port}"

    yield start
    for server in servers:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture(scope="module")
def url(serve: Callable[..., str]) -> str:
    return serve(delay_s=0.0, token_s=0.001)


@pytest.fixture
def sdk(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        yield client


def user(question: str) -> list[Any]:
    return [{"role": "user", "content": question}]


def http(url: str, body: object = None, raw: bytes | None = None) -> tuple[int, str | None, bytes]:
    """POSTs a body (GETs without one): the status, the X-Standin-LLM header and the body."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.headers.get("X-Standin-LLM"), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("X-Standin-LLM"), exc.read()


def events(body: bytes) -> list[str]:
    """The data of each server-sent event, checking the framing."""
    text = body.decode()
    assert text.endswith("\n\n")
    frames = text.split("\n\n")[:-1]
    assert all(f.startswith("data: ") and "\n" not in f for f in frames), text
    return [f.removeprefix("data: ") for f in frames]


def streams(url: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(http(f"{url}/standin/streams")[2])
    return result


def test_a_completion_has_openais_shape_and_says_it_is_a_stand_in(url: str, sdk: openai.OpenAI) -> None:
    question = "What is glaucoma?"
    raw = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=user(question))
    assert raw.headers["X-Standin-LLM"] == "not a real model"
    completion = ChatCompletion.model_validate(json.loads(raw.http_response.content))
    answer = standin_answer(question)
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL and completion.system_fingerprint == "standin"
    choice = completion.choices[0]
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant" and choice.message.content == answer
    assert answer.startswith("[stand-in LLM, not a real model]") and question in answer
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, len(TOKEN.findall(answer)))
    assert completion.usage.total_tokens == 4 + len(TOKEN.findall(answer))
    assert json.loads(http(f"{url}/standin/calls?q={urllib.parse.quote(question)}")[2]) == {"calls": 1}


def test_a_stream_has_openais_framing_and_the_usage_last(url: str) -> None:
    question = "How do lenses focus?"
    body = {"model": MODEL, "messages": user(question), "stream": True, "stream_options": {"include_usage": True}}
    status, standin, raw = http(f"{url}/v1/chat/completions", body)
    assert status == 200 and standin == "not a real model"
    data = events(raw)
    assert data[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(d) for d in data[:-1]]
    assert {c.id for c in chunks} == {chunks[0].id} and all(c.object == "chat.completion.chunk" for c in chunks)
    first = json.loads(data[0])["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": "", "refusal": None} and first["finish_reason"] is None
    *tokens, finish, usage = chunks
    assert [c.choices[0].finish_reason for c in (*tokens, finish)] == [None] * len(tokens) + ["stop"]
    answer = standin_answer(question)
    assert [c.choices[0].delta.content for c in tokens[1:]] == TOKEN.findall(answer)
    assert all(json.loads(d)["usage"] is None for d in data[:-2])
    assert usage.choices == [] and usage.usage is not None
    assert (usage.usage.prompt_tokens, usage.usage.completion_tokens) == (5, len(TOKEN.findall(answer)))


def test_the_sdk_reads_a_stream_and_without_include_usage_there_is_no_usage(sdk: openai.OpenAI) -> None:
    question = "Why is the sky blue?"
    with sdk.chat.completions.create(model=MODEL, messages=user(question), stream=True) as stream:
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == standin_answer(question)
    assert all(c.usage is None and c.choices for c in chunks)


def test_a_client_gets_its_first_chunk_while_the_stand_in_is_still_generating(url: str, sdk: openai.OpenAI) -> None:
    question = "Hold after one token [[standin:hold-after=1]]"
    finished = streams(url)["finished"]
    with sdk.chat.completions.create(model=MODEL, messages=user(question), stream=True) as stream:
        role, first = next(stream), next(stream)
        (mine,) = [s for s in streams(url)["in_progress"] if s["id"] == first.id]
        assert mine["question"] == question and mine["held"]
        assert mine["tokens_sent"] == 1 < mine["tokens_total"] == len(TOKEN.findall(standin_answer(question)))
        assert json.loads(http(f"{url}/standin/release?id={first.id}", {})[2]) == {"released": 1}
        rest = list(stream)
    assert role.choices[0].delta.role == "assistant" and role.id == first.id == rest[-1].id
    text = "".join(c.choices[0].delta.content or "" for c in [first, *rest])
    assert text == standin_answer(question)
    report = streams(url)
    assert report["finished"] == finished + 1 and all(s["id"] != first.id for s in report["in_progress"])


def test_a_client_that_goes_away_leaves_its_stream_abandoned(url: str, sdk: openai.OpenAI) -> None:
    abandoned = streams(url)["abandoned"]
    question = "Hang up on me [[standin:hold-after=2]]"
    with sdk.chat.completions.create(model=MODEL, messages=user(question), stream=True) as stream:
        next(stream)
    end = time.monotonic() + 10
    while streams(url)["abandoned"] == abandoned and time.monotonic() < end:
        time.sleep(0.01)
    assert streams(url)["abandoned"] == abandoned + 1


def test_a_dropped_stream_makes_the_sdk_raise(url: str, sdk: openai.OpenAI) -> None:
    question = "Drop me [[standin:drop-after=3]]"
    dropped = streams(url)["dropped"]
    received: list[ChatCompletionChunk] = []
    with (
        sdk.chat.completions.create(model=MODEL, messages=user(question), stream=True) as stream,
        pytest.raises(openai.APIConnectionError),
    ):
        received.extend(stream)
    assert "".join(c.choices[0].delta.content or "" for c in received) == "".join(
        TOKEN.findall(standin_answer(question))[:3]
    )
    assert streams(url)["dropped"] == dropped + 1
    with pytest.raises(openai.APIConnectionError):
        sdk.chat.completions.create(model=MODEL, messages=user(question))


def test_a_tool_call_round_trip(sdk: openai.OpenAI) -> None:
    question = "Will it rain in Lyon this week?"
    messages = user(question)
    asked = sdk.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER, CLOCK])
    choice = asked.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": question, "days": 1, "hourly": True, "unit": "celsius"}

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "14 °C and rain"},
    ]
    final = sdk.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER, CLOCK])
    answer = final.choices[0].message.content
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.tool_calls is None
    assert answer is not None and question in answer and answer.endswith(" Using get_weather: 14 °C and rain.")

    # Streamed, the same call comes in pieces: the id, type and name first, then the arguments.
    with sdk.chat.completions.create(model=MODEL, messages=user(question), tools=[WEATHER, CLOCK], stream=True) as s:
        chunks = list(s)
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices[0].delta.tool_calls]
    assert (deltas[0].id, deltas[0].type, deltas[0].function and deltas[0].function.name) == (
        call.id, "function", "get_weather",
    )  # fmt: skip
    pieces = [d.function.arguments for d in deltas[1:] if d.function and d.function.arguments]
    assert len(pieces) > 2 and "".join(pieces) == call.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_picks_or_forbids_the_call(sdk: openai.OpenAI) -> None:
    messages = user("What time is it?")
    named = sdk.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "clock"}},
    )  # fmt: skip
    assert named.choices[0].message.tool_calls is not None
    (call,) = named.choices[0].message.tool_calls
    assert call.type == "function" and (call.function.name, call.function.arguments) == ("clock", "{}")
    none = sdk.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"


def test_max_tokens_cuts_the_answer_with_length(sdk: openai.OpenAI) -> None:
    question = "Explain the retina."
    cut = sdk.chat.completions.create(model=MODEL, messages=user(question), max_tokens=5)
    assert cut.choices[0].finish_reason == "length" and cut.usage is not None and cut.usage.completion_tokens == 5
    assert cut.choices[0].message.content == "".join(TOKEN.findall(standin_answer(question))[:5])
    with sdk.chat.completions.create(
        model=MODEL, messages=user(question), max_completion_tokens=3, stream=True
    ) as stream:
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(
        TOKEN.findall(standin_answer(question))[:3]
    )
    assert chunks[-1].choices[0].finish_reason == "length"
    roomy = sdk.chat.completions.create(model=MODEL, messages=user(question), max_tokens=1000)
    assert roomy.choices[0].finish_reason == "stop" and roomy.choices[0].message.content == standin_answer(question)


def test_json_modes_answer_json(sdk: openai.OpenAI) -> None:
    question = "Describe a lens as JSON."
    loose = sdk.chat.completions.create(model=MODEL, messages=user(question), response_format={"type": "json_object"})
    answer = json.loads(loose.choices[0].message.content or "")
    assert set(answer) == {"answer"} and question in answer["answer"]

    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"}, "score": {"type": "number"}, "kind": {"enum": ["convex", "concave"]},
            "tags": {"type": "array", "items": {"type": "string"}}, "optional": {"type": "string"},
        },
        "required": ["title", "score", "tags", "kind"], "additionalProperties": False,
    }  # fmt: skip
    strict = sdk.chat.completions.create(
        model=MODEL, messages=user(question),
        response_format={"type": "json_schema", "json_schema": {"name": "lens", "schema": schema, "strict": True}},
    )  # fmt: skip
    lens = json.loads(strict.choices[0].message.content or "")
    assert lens == {"title": lens["title"], "score": 1, "tags": [lens["title"]], "kind": "convex"}
    assert question in lens["title"] and lens["title"].startswith("[stand-in LLM")

    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(
            model=MODEL, messages=user("Describe a lens."), response_format={"type": "json_object"}
        )
    assert refused.value.param == "messages"


def test_answers_are_deterministic_and_change_with_the_parameters(sdk: openai.OpenAI) -> None:
    question = "What does the cornea do?"

    def answer(**extra: Any) -> str:
        body = {"model": MODEL, "messages": user(question), **extra}
        return sdk.chat.completions.create(**body).choices[0].message.content or ""

    bare = answer()
    assert bare == answer() == standin_answer(question)
    with sdk.chat.completions.create(model=MODEL, messages=user(question), stream=True) as stream:
        assert "".join(c.choices[0].delta.content or "" for c in stream) == bare
    variants: list[dict[str, Any]] = [
        {"temperature": 0.2}, {"temperature": 0.3}, {"seed": 7}, {"top_p": 0.5}, {"model": "gpt-4o"},
        {"messages": [{"role": "system", "content": "Be brief."}, *user(question)]},
    ]  # fmt: skip
    answers = [answer(**v) for v in variants]
    assert len({bare, *answers}) == len(variants) + 1
    assert all(question in a and "(variant " in a for a in answers)
    assert answers[0] == answer(temperature=0.2)
    body = {"model": MODEL, "messages": user(question), "temperature": 0.2}
    assert answers[0] == standin_answer(question, variant_of(body))


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": MODEL}, "messages", "missing_required_parameter"),
        ({"messages": user("x")}, None, None),
        ({"model": MODEL, "messages": []}, "messages", "empty_array"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"model": MODEL, "messages": [{"role": "user", "content": 3}]}, "messages[0].content", "invalid_type"),
        ({"model": MODEL, "messages": user("x"), "n": 2}, "n", "unsupported_value"),
        ({"model": MODEL, "messages": user("x"), "max_tokens": 0}, "max_tokens", "integer_below_min_value"),
        ({"model": MODEL, "messages": user("x"), "temperature": 3}, "temperature", "decimal_above_max_value"),
        ({"model": MODEL, "messages": user("x"), "stream_options": {"include_usage": True}}, "stream_options", None),
        ({"model": MODEL, "messages": [*user("x"), {"role": "tool", "tool_call_id": "c1", "content": "y"}]},
         "messages.[1].role", None),
        ({"model": MODEL, "messages": user("x"), "tool_choice": "auto"}, "tool_choice", None),
        ({"model": MODEL, "messages": user("x"), "tools": [{"type": "function"}]}, "tools[0]", "invalid_value"),
        ({"model": MODEL, "messages": user("x"), "response_format": {"type": "xml"}}, "response_format.type",
         "invalid_value"),
    ],
)  # fmt: skip
def test_bad_input_gets_openais_400(url: str, body: dict[str, Any], param: str | None, code: str | None) -> None:
    status, standin, raw = http(f"{url}/v1/chat/completions", body)
    error = json.loads(raw)["error"]
    assert status == 400 and standin == "not a real model"
    assert error == {"message": error["message"], "type": "invalid_request_error", "param": param, "code": code}
    assert isinstance(error["message"], str) and error["message"]


def test_unreadable_json_and_n_through_the_sdk(url: str, sdk: openai.OpenAI) -> None:
    status, _, raw = http(f"{url}/v1/chat/completions", raw=b"{not json")
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model=MODEL, messages=user("Two answers?"), n=2)
    assert (refused.value.code, refused.value.param) == ("unsupported_value", "n")


def test_fault_markers_still_work(url: str, sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.chat.completions.create(model=MODEL, messages=user("Fail [[standin:status=503]]"))
    assert failed.value.status_code == 503 and failed.value.type == "server_error"
    status, _, raw = http(f"{url}/v1/chat/completions", {"model": MODEL, "messages": user("Bad [[standin:malformed]]")})
    assert status == 200 and json.loads(raw) == {"unexpected": True}
    body = {"model": MODEL, "messages": user("Bad [[standin:malformed]]"), "stream": True}
    assert events(http(f"{url}/v1/chat/completions", body)[2]) == ['{"unexpected": true}', "[DONE]"]
    assert set(json.loads(http(f"{url}/standin/concurrency")[2])) == {"in_flight", "peak"}


def test_pacing_and_answer_length_flags(serve: Callable[..., str]) -> None:
    """A first token after first_token_s, the others token_s apart, 40 tokens: lower bounds only, which hold on any
    machine however loaded."""
    url = serve(first_token_s=0.05, token_s=0.005, min_tokens=40)
    question = "Short?"
    least = 0.05 + 39 * 0.005 - 0.001
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as sdk:
        start = time.monotonic()
        whole = sdk.chat.completions.create(model=MODEL, messages=user(question))
        assert time.monotonic() - start >= least
        start = time.monotonic()
        with sdk.chat.completions.create(model=MODEL, messages=user(question), stream=True) as stream:
            first = next(stream)
            assert time.monotonic() - start >= 0.05 - 0.001
            rest = list(stream)
        assert time.monotonic() - start >= least
    answer = standin_answer(question, min_tokens=40)
    assert whole.choices[0].message.content == answer and len(TOKEN.findall(answer)) == 40
    assert whole.usage is not None and whole.usage.completion_tokens == 40
    assert "".join(c.choices[0].delta.content or "" for c in [first, *rest]) == answer
