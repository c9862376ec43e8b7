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
from schemas.messages import ChatRequest, ErrorCode, ReplyError, ToolCall, UpstreamError, Usage
from worker.errors import DeadlineExceeded, LLMError, LLMTimeout, ReplyableError
from worker.llm_slots import LLMSlots
from worker.reply import OnDelta

log = logging.getLogger(__name__)


# Provider statuses relayed to the caller as they are: the request itself is wrong (a bad parameter, an unknown
# model, a context too long); retrying it unchanged fails again.
RELAYED_STATUSES = frozenset({400, 404, 413, 422})
# The operator's credentials: the provider's text about them is the operator's business, not the caller's.
AUTH_STATUSES = frozenset({401, 403})
# What a caller is told when the LLM failed for reasons of its own: the detail is in the worker log.
UNAVAILABLE = "the LLM is unavailable or gave no usable answer; retry later"
RELAYED_MESSAGE_CHARS = 2000


class LLMRejected(ReplyableError):
    """The provider refused the request (400/404/413/422): relayed with its type, code, param and message."""

    code = ErrorCode.LLM_REJECTED

    def __init__(self, message: str, upstream: UpstreamError) -> None:
        super().__init__(message)
        self.upstream = upstream

    def to_reply(self) -> ReplyError:
        return ReplyError(code=self.code, message=str(self), upstream=self.upstream)


class LLMRateLimited(ReplyableError):
    """The provider's 429, still there after the worker's retries within the deadline."""

    code = ErrorCode.LLM_RATE_LIMITED
    retryable = True

    def __init__(self, upstream: UpstreamError, retry_after_s: float | None) -> None:
        super().__init__("the LLM provider's rate limit was reached; retry after the time in Retry-After")
        self.upstream, self.retry_after_s = upstream, retry_after_s

    def to_reply(self) -> ReplyError:
        return ReplyError(code=self.code, message=str(self), retryable=True, upstream=self.upstream,
                          retry_after_s=self.retry_after_s)  # fmt: skip


class UpstreamAuth(ReplyableError):
    code = ErrorCode.UPSTREAM_AUTH

    def __init__(self) -> None:
        super().__init__("the cache's credentials for the LLM provider were refused; tell the operator")


def upstream_failure(status: int, body: str, retry_after: str | None) -> ReplyableError:
    """What a provider's non-200 answer means for the caller; LLMError (a 5xx) and LLMRateLimited are retried."""
    fields = _error_fields(body)
    upstream = UpstreamError(status=status, **{k: fields.get(k) for k in ("type", "code", "param")})
    if status in RELAYED_STATUSES:
        message = fields.get("message") or f"the LLM provider rejected the request (HTTP {status})"
        return LLMRejected(message[:RELAYED_MESSAGE_CHARS], upstream)
    if status == 429:
        return LLMRateLimited(upstream, _retry_after(retry_after))
    if status in AUTH_STATUSES:
        return UpstreamAuth()
    return LLMError(UNAVAILABLE)


def _retry_delay(failure: ReplyableError, last: bool, deadline: float) -> float | None:
    """How long to wait before retrying after `failure` (None: the usual backoff); raises what is not retried."""
    if not isinstance(failure, LLMError | LLMRateLimited) or last:
        raise failure
    delay = failure.retry_after_s if isinstance(failure, LLMRateLimited) else None
    if delay is not None and time.time() + delay >= deadline:
        raise failure  # the provider asks for a longer wait than the deadline leaves
    return delay


def _error_fields(body: str) -> dict[str, str | None]:
    """OpenAI's `{"error": {"message", "type", "code", "param"}}`, each a string or None; {} for any other body."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return {}
    if not isinstance(error, dict):
        return {}
    return {k: str(error[k]) if error.get(k) is not None else None for k in ("message", "type", "code", "param")}


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
        has shown part of an answer) and ends the call with LLMError. What a caller sees of a failure says what to
        do; the provider's text and this worker's view of it go to the log, under the request id."""
        body = request.llm_body()
        if on_delta is not None:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        deadline, rid = request.deadline, request.request_id
        limited: LLMRateLimited | None = None
        for attempt in range(self.max_retries + 1):
            if deadline <= time.time():
                # A 429 the deadline cut short is still the provider's limit: the caller should wait, not hurry.
                raise limited or DeadlineExceeded("the deadline passed while waiting for the LLM")
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
                        detail = await resp.text()
                log.warning("request %s: the LLM answered HTTP %d: %s", rid, resp.status, detail[:500])
                failure = upstream_failure(resp.status, detail, resp.headers.get("Retry-After"))
                delay = _retry_delay(failure, last, deadline)
                limited = failure if isinstance(failure, LLMRateLimited) else None
            except TimeoutError as exc:
                log.warning("request %s: the LLM timed out (%d deltas sent)", rid, relayed.sent)
                if relayed.sent:
                    raise LLMTimeout("the LLM stopped mid-answer") from exc
                if last or deadline - time.time() <= 0:
                    raise LLMTimeout("the LLM did not answer in time") from exc
                delay = None
            except (aiohttp.ClientError, ValueError) as exc:
                log.warning("request %s: no usable answer from the LLM: %r", rid, exc)
                if last or relayed.sent:
                    raise LLMError(UNAVAILABLE) from exc
                delay = None
            pause = delay if delay is not None else self.backoff_s * 2**attempt * random.uniform(0.5, 1.5)
            log.warning("request %s: LLM call failed (attempt %d), retrying in %.2fs", rid, attempt + 1, pause)
            await asyncio.sleep(min(pause, max(0.0, deadline - time.time())))
        raise AssertionError("unreachable: the loop returns or raises")


class Relay:
    """Reads an SSE chat-completion stream, hands each delta on, and assembles the whole message."""

    def __init__(self, on_delta: OnDelta | None) -> None:
        self.on_delta = on_delta
        self.sent = 0
        self.text: list[str] = []
        self.refusal: list[str] = []
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
            self.refusal.append(delta.get("refusal") or "")
            for call in delta.get("tool_calls") or ():
                self._merge(call)
            piece = {k: v for k, v in delta.items() if k in ("content", "refusal", "tool_calls") and v}
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
        text, refusal = "".join(self.text), "".join(self.refusal)
        message = {"role": "assistant", "content": text if text or not refusal else None}
        return message | ({"tool_calls": calls} if calls else {}) | ({"refusal": refusal} if refusal else {})


def answer_of(data: Any) -> LLMAnswer:
    """The assistant message of a chat completion: text, tool calls, both, or (content null) a refusal or audio,
    as the provider sent it. ValueError: a malformed body is retried like a 5xx (a proxy may have garbled one
    reply); an empty text with nothing else is one too."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        content, calls = message.get("content"), message.get("tool_calls")
        refusal, audio = message.get("refusal"), message.get("audio")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ValueError(f"the reply is not a chat completion: {str(data)[:200]}") from exc
    if content is not None and not isinstance(content, str):
        raise ValueError("the reply's content is neither text nor null")
    if content is not None and not content.strip() and not (calls or refusal or audio):
        raise ValueError("the reply has neither text content nor tool calls")
    try:
        meta = AnswerMeta(
            tool_calls=[ToolCall.model_validate(c) for c in calls] if calls else None,
            finish_reason=choice.get("finish_reason") or ("tool_calls" if calls else "stop"),
            usage=Usage.model_validate(data["usage"]) if data.get("usage") else None,
            created_at=time.time(),
            refusal=refusal if isinstance(refusal, str) else None,
            audio=audio if isinstance(audio, dict) else None,
        )
    except ValidationError as exc:
        raise ValueError(f"the reply's tool calls or usage do not validate: {exc}") from exc
    return LLMAnswer(answer=content or "", meta=meta)


def cacheable(answer: LLMAnswer) -> bool:
    """Whether an answer may be stored and served again: not one cut short (length, content_filter), not a
    refusal or audio, not empty, and not a tool call whose arguments are not JSON (the caller's code would fail
    on every replay of it)."""
    meta = answer.meta
    if meta.finish_reason in ("length", "content_filter") or meta.refusal is not None or meta.audio is not None:
        return False
    if not answer.answer.strip() and not meta.tool_calls:
        return False
    for call in meta.tool_calls or ():
        try:
            json.loads(call.function.arguments)
        except ValueError:
            return False
    return True


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
