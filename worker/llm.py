"""The LLM, over the OpenAI-compatible chat-completions API (OpenAI, vLLM, Ollama, llama.cpp...)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

import aiohttp
from pydantic import ValidationError

from schemas.cache import AnswerMeta, LLMAnswer
from schemas.messages import ChatRequest, ToolCall, Usage
from worker.errors import DeadlineExceeded, LLMError, LLMTimeout
from worker.llm_slots import LLMSlots
from worker.reply import OnDelta

log = logging.getLogger(__name__)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class LLMClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        slots: LLMSlots,
    ) -> None:
        self.session = session
        self.slots = slots
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    async def complete(self, request: ChatRequest, on_delta: OnDelta | None = None) -> LLMAnswer:
        """The assistant's message for the whole request (every generation field and extension forwarded);
        retries 429/5xx/connection errors with backoff, within the deadline. With `on_delta`, the answer is
        streamed and each delta handed on as it arrives; once one was, a failure is no longer retried (the caller
        has shown part of an answer) and ends the call with LLMError."""
        body = request.llm_body()
        if on_delta is not None:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        deadline = request.deadline
        for attempt in range(self.max_retries + 1):
            if deadline <= time.time():
                raise DeadlineExceeded("the deadline passed while waiting for the LLM")
            last = attempt == self.max_retries
            relayed = Relay(on_delta)
            try:
                async with self.slots.slot(deadline):
                    # The wait for a slot may have used up some of the deadline.
                    timeout = aiohttp.ClientTimeout(total=max(0.001, min(self.timeout_s, deadline - time.time())))
                    async with self.session.post(self.url, json=body, headers=self.headers, timeout=timeout) as resp:
                        if resp.status == 200:
                            if on_delta is None:
                                return answer_of(await resp.json(content_type=None))
                            return await relayed.read(resp)
                        detail = (await resp.text())[:300]
                    if resp.status not in RETRY_STATUSES or last:
                        raise LLMError(f"the LLM at {self.url} answered HTTP {resp.status}: {detail}")
                    delay = _retry_after(resp.headers.get("Retry-After"))
            except TimeoutError as exc:
                if relayed.sent:
                    raise LLMTimeout(f"the LLM at {self.url} stopped mid-answer ({relayed.sent} deltas sent)") from exc
                if last or deadline - time.time() <= 0:
                    raise LLMTimeout(f"the LLM at {self.url} did not answer in time") from exc
                delay = None
            except (aiohttp.ClientError, ValueError) as exc:
                if last or relayed.sent:
                    raise LLMError(f"no usable answer from the LLM at {self.url}: {exc}") from exc
                delay = None
            pause = delay if delay is not None else self.backoff_s * 2**attempt * random.uniform(0.5, 1.5)
            log.warning("LLM call failed (attempt %d), retrying in %.2fs", attempt + 1, pause)
            await asyncio.sleep(min(pause, max(0.0, deadline - time.time())))
        raise AssertionError("unreachable: the loop returns or raises")


class Relay:
    """Reads an SSE chat-completion stream, hands each delta on, and assembles the whole message."""

    def __init__(self, on_delta: OnDelta | None) -> None:
        self.on_delta = on_delta
        self.sent = 0
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    async def read(self, resp: aiohttp.ClientResponse) -> LLMAnswer:
        done = False
        async for line in resp.content:
            data = line.strip()
            if not data.startswith(b"data:"):
                continue  # blank separators, comments, `event:` lines
            payload = data[5:].strip()
            if payload == b"[DONE]":
                done = True
                break
            await self.chunk(json.loads(payload))
        if not done and self.finish is None:
            raise ValueError("the LLM's stream ended before its last chunk")
        return answer_of({"choices": [{"message": self.message(), "finish_reason": self.finish}], "usage": self.usage})

    async def chunk(self, chunk: Any) -> None:
        if not isinstance(chunk, dict):
            raise ValueError(f"a stream chunk is not an object: {str(chunk)[:200]}")
        if "error" in chunk:
            raise ValueError(f"the LLM's stream reported an error: {str(chunk['error'])[:300]}")
        self.usage = chunk.get("usage") or self.usage
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            self.finish = choice.get("finish_reason") or self.finish
            self.text.append(delta.get("content") or "")
            for call in delta.get("tool_calls") or ():
                self._merge(call)
            piece = {k: v for k, v in delta.items() if k in ("content", "tool_calls") and v}
            if piece and self.on_delta is not None:
                await self.on_delta(piece)
                self.sent += 1

    def _merge(self, fragment: dict[str, Any]) -> None:
        # A tool call arrives in pieces: id, type and name first, then the arguments a few characters at a time.
        call = self.calls.setdefault(int(fragment.get("index", 0)), {"type": "function", "function": {}})
        call["id"] = fragment.get("id") or call.get("id")
        function = fragment.get("function") or {}
        if function.get("name"):
            call["function"]["name"] = function["name"]
        call["function"]["arguments"] = call["function"].get("arguments", "") + (function.get("arguments") or "")

    def message(self) -> dict[str, Any]:
        calls = [self.calls[i] for i in sorted(self.calls)]
        return {"role": "assistant", "content": "".join(self.text), **({"tool_calls": calls} if calls else {})}


def answer_of(data: Any) -> LLMAnswer:
    """The assistant message of a chat completion: text, tool calls, or both. ValueError: a malformed body is
    retried like a 5xx (a proxy may have garbled one reply); a message with neither is an error too."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        content, calls = message.get("content"), message.get("tool_calls")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ValueError(f"the reply is not a chat completion: {str(data)[:200]}") from exc
    has_text = isinstance(content, str) and content.strip() != ""
    if not has_text and not calls:
        raise ValueError("the reply has neither text content nor tool calls")
    try:
        meta = AnswerMeta(
            tool_calls=[ToolCall.model_validate(c) for c in calls] if calls else None,
            finish_reason=choice.get("finish_reason") or ("tool_calls" if calls else "stop"),
            usage=Usage.model_validate(data["usage"]) if data.get("usage") else None,
            created_at=time.time(),
        )
    except ValidationError as exc:
        raise ValueError(f"the reply's tool calls or usage do not validate: {exc}") from exc
    return LLMAnswer(answer=content if isinstance(content, str) else "", meta=meta)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
