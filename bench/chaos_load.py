"""The load `make chaos` sends: question groups whose right answers are known, and careful async producers."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from bench.spine import DATA
from producer.aclient import AsyncClient
from producer.base import Overloaded, ReplyTimeout
from schemas.messages import ChatDelta, ChatReply, ChatRequest
from worker import guards
from worker.embed import Embedder
from worker.local.standin.answer import standin_answer

TIMEOUT_S = 60.0
# Every question of one group must be this far below the threshold from every other group's questions.
MARGIN = 0.05


@dataclass
class Group:
    """Questions that mean the same thing: any of their stand-in answers is a right answer for each."""

    texts: list[str]

    @property
    def right_answers(self) -> set[str]:
        return {standin_answer(t) for t in self.texts}


@dataclass
class Outcome:
    group: int
    kind: str
    request_id: str = ""
    sent_at: float = 0.0  # monotonic
    answered_at: float | None = None
    reply: ChatReply | None = None
    # Streamed asks: the text of the deltas as the client handed them on, in order.
    streamed: str | None = None
    failure: str | None = None  # "lost", "overloaded", "unsent"

    @property
    def latency_ms(self) -> float | None:
        return None if self.answered_at is None else (self.answered_at - self.sent_at) * 1000


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    in_flight: dict[str, Outcome] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)  # "send" / "wait"
    retry_causes: Counter[str] = field(default_factory=Counter)


def build_groups(embedder: Embedder, threshold: float, n: int) -> list[Group]:
    """Paraphrase pairs that are sure hits for each other and sure misses for everything else, topped up with
    single MedQuAD questions held to the same distance."""
    candidates: list[list[str]] = []
    with open(DATA / "qqp_pairs_dev.jsonl") as f:
        for line in f:
            row = json.loads(line)
            a, b = row["text_a"].strip(), row["text_b"].strip()
            if row["label"] == 1 and a.lower() != b.lower() and guards.check(b, a).ok:
                candidates.append([a, b])
    with open(DATA / "medquad_qa.jsonl") as f:
        candidates += [[json.loads(line)["question"].strip()] for line in f]
    random.Random(7).shuffle(candidates)
    groups: list[Group] = []
    kept = np.zeros((0, embedder.profile.dim), dtype=np.float32)
    for start in range(0, len(candidates), 256):
        batch = candidates[start : start + 256]
        vectors = embedder.embed([t for texts in batch for t in texts])
        offset = 0
        for texts in batch:
            v, offset = vectors[offset : offset + len(texts)], offset + len(texts)
            if len(texts) == 2 and float(v[0] @ v[1]) < threshold + 0.02:
                continue
            if len(kept) and float((kept @ v.T).max()) >= threshold - MARGIN:
                continue
            groups.append(Group(texts))
            kept = np.vstack([kept, v])
            if len(groups) == n:
                return groups
    return groups


class Load:
    """Asks as a careful client would: a send that fails because Redis is restarting is retried with the same
    request id (idempotent), and so is the wait for the reply; a share of cold asks is streamed."""

    def __init__(
        self, client: AsyncClient, groups: list[Group], tenant: str, run: Run, seed: int, stream_share: float
    ) -> None:
        self.client, self.groups, self.tenant, self.run = client, groups, tenant, run
        self.next_cold = 0
        self.rng = random.Random(seed)
        self.stream_share = stream_share
        self.warm: list[int] = []
        self.warming: list[tuple[float, int]] = []  # (warm from, group), in order

    def pick(self, cold_share: float) -> tuple[int, str, str]:
        """A group, the kind of ask and its text: cold (a group's first question, some streamed), repeat or
        paraphrase."""
        now = time.monotonic()
        while self.warming and self.warming[0][0] <= now:
            self.warm.append(self.warming.pop(0)[1])
        warm = self.warm
        if not warm or (self.rng.random() < cold_share and self.next_cold < len(self.groups)):
            i, self.next_cold = self.next_cold, self.next_cold + 1
            return i, "streamed" if self.rng.random() < self.stream_share else "cold", self.groups[i].texts[0]
        i = self.rng.choice(warm)
        texts = self.groups[i].texts
        if len(texts) > 1 and self.rng.random() < 0.5:
            return i, "paraphrase", texts[1]
        return i, "repeat", texts[0]

    async def one(self, group: int, kind: str, text: str) -> Outcome:
        out = Outcome(group, kind)
        request = self.client.request(text, tenant=self.tenant, timeout=TIMEOUT_S, stream=kind == "streamed")
        out.request_id, out.sent_at = request.request_id, time.monotonic()
        self.run.in_flight[out.request_id] = out
        try:
            if kind == "streamed":
                await self._stream(request, out)
            elif await self._send(request, out):
                out.reply = await self._wait(request, out)
        finally:
            del self.run.in_flight[out.request_id]
        if out.reply is not None:
            out.answered_at = time.monotonic()
            if kind in ("cold", "streamed") and out.reply.ok:
                # Repeats and paraphrases of it may follow once its write-back has landed.
                self.warming.append((time.monotonic() + 1.0, group))
        return out

    async def _send(self, request: ChatRequest, out: Outcome) -> bool:
        while True:
            try:
                await self.client.send(request)
                return True
            except Overloaded:
                out.failure = "overloaded"
                return False
            except (RedisError, OSError) as exc:
                # Redis is restarting: send the same request again (same id, so at most one reply).
                self._retrying("send", exc)
                if request.expired():
                    out.failure = "unsent"
                    return False
                await asyncio.sleep(0.2)

    async def _wait(self, request: ChatRequest, out: Outcome) -> ChatReply | None:
        while True:
            try:
                # A little past the deadline: the worker's `deadline` reply is an answer, not a loss.
                return await self.client.get_reply(request.request_id, max(0.1, request.deadline + 5 - time.time()))
            except ReplyTimeout:
                out.failure = "lost"
                return None
            except (RedisError, OSError) as exc:
                self._retrying("wait", exc)
                await asyncio.sleep(0.2)

    async def _stream(self, request: ChatRequest, out: Outcome) -> None:
        pieces: list[str] = []
        while True:
            try:
                async for event in self.client.stream_request(request):
                    if isinstance(event, ChatDelta):
                        pieces.append(str(event.delta.get("content") or ""))
                    elif isinstance(event, ChatReply):
                        out.reply = event
                break
            except Overloaded:
                out.failure = "overloaded"
                break
            except ReplyTimeout:
                out.failure = "lost"
                break
            except (RedisError, OSError) as exc:
                # Only the send can fail so (the inbox rides out a restart): send the same request again.
                self._retrying("send", exc)
                if request.expired():
                    out.failure = "unsent"
                    break
                await asyncio.sleep(0.2)
        out.streamed = "".join(pieces)

    def _retrying(self, what: str, exc: Exception) -> None:
        self.run.retries[what] += 1
        self.run.retry_causes[f"{what} {type(exc).__name__}: {str(exc)[:80]}"] += 1


async def drive(load: Load, total: int, rate: float, cold_share: float) -> None:
    tasks = []
    start = time.monotonic()
    for n in range(total):
        # Open loop: requests go out on schedule whether or not earlier ones were answered.
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(load.one(*load.pick(cold_share))))
    load.run.outcomes = list(await asyncio.gather(*tasks))
