"""The LLM, over the OpenAI-compatible chat-completions API (OpenAI, vLLM, Ollama, llama.cpp...)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from schemas.messages import ChatMessage
from worker.errors import DeadlineExceeded, LLMError, LLMTimeout
from worker.llm_slots import LLMSlots

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

    async def complete(self, model: str, messages: Sequence[ChatMessage], deadline: float) -> str:
        """The assistant's answer; retries 429/5xx/connection errors with backoff, within the deadline."""
        body = {"model": model, "messages": [m.model_dump() for m in messages], "stream": False}
        for attempt in range(self.max_retries + 1):
            if deadline <= time.time():
                raise DeadlineExceeded("the deadline passed while waiting for the LLM")
            last = attempt == self.max_retries
            try:
                async with self.slots.slot(deadline):
                    # The wait for a slot may have used up some of the deadline.
                    timeout = aiohttp.ClientTimeout(total=max(0.001, min(self.timeout_s, deadline - time.time())))
                    async with self.session.post(self.url, json=body, headers=self.headers, timeout=timeout) as resp:
                        if resp.status == 200:
                            return _answer_of(await resp.json(content_type=None))
                        detail = (await resp.text())[:300]
                    if resp.status not in RETRY_STATUSES or last:
                        raise LLMError(f"the LLM at {self.url} answered HTTP {resp.status}: {detail}")
                    delay = _retry_after(resp.headers.get("Retry-After"))
            except TimeoutError as exc:
                if last or deadline - time.time() <= 0:
                    raise LLMTimeout(f"the LLM at {self.url} did not answer in time") from exc
                delay = None
            except (aiohttp.ClientError, ValueError) as exc:
                if last:
                    raise LLMError(f"no usable answer from the LLM at {self.url}: {exc}") from exc
                delay = None
            pause = delay if delay is not None else self.backoff_s * 2**attempt * random.uniform(0.5, 1.5)
            log.warning("LLM call failed (attempt %d), retrying in %.2fs", attempt + 1, pause)
            await asyncio.sleep(min(pause, max(0.0, deadline - time.time())))
        raise AssertionError("unreachable: the loop returns or raises")


def _answer_of(data: Any) -> str:
    # ValueError: a malformed body is retried like a 5xx (a gateway may have garbled one reply).
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"the reply is not a chat completion: {str(data)[:200]}") from exc
    if not isinstance(content, str) or not content.strip():
        raise ValueError("the reply has no text content")
    return content


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
