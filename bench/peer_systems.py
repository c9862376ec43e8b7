"""The systems the peers benchmark compares, behind one small interface.

Each one stores entries with its own store loop and answers a question with what it served: the index of the
entry (bench.reference.MISS when it served nothing from the cache), the answer text and where it came from.
RedisVL and GPTCache run in this process, as a team using them would; this project runs end to end (enqueue ->
worker -> reply) through the Python client and through the HTTP gateway. Every system embeds with the same
function, worker.embed.Embedder.
"""

from __future__ import annotations

import http.client
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bench.peers_data import Entry
from bench.reference import MISS, Vectors
from producer.client import Client
from producer.settings import ProducerSettings
from schemas.cache import Scope, entry_id, question_hash
from worker.embed import Embedder
from worker.settings import Settings
from worker.tools import backfill
from worker.tools.backfill_read import WARM_ALL, Fields


@dataclass(frozen=True)
class Served:
    entry: int  # index into the workload's entries, or MISS
    answer: str | None
    tier: str  # "cache" for the in-process peers; this project's reply tier (exact, redis, pgvector, llm)


Lookup = Callable[[str], Served]


class System(Protocol):
    name: str

    def store(self, entries: Sequence[Entry]) -> float:
        """Load every entry with the system's own store loop; returns entries stored per second."""
        ...

    def caller(self) -> Lookup:
        """A lookup function for one calling thread (most systems share one; an HTTP caller owns a connection)."""
        ...

    def close(self) -> None: ...


def _index_by_question(entries: Sequence[Entry]) -> dict[str, int]:
    return {e.question: i for i, e in enumerate(entries)}


class Reference:
    """Exhaustive numpy search over vectors embedded one question at a time: what should hit."""

    name = "reference"

    def __init__(self, embedder: Embedder, vectors: Vectors, threshold: float) -> None:
        self.embedder, self.vectors, self.threshold = embedder, vectors, threshold
        self.entries: Sequence[Entry] = ()

    def store(self, entries: Sequence[Entry]) -> float:
        # The vectors come precomputed (cached across runs), so there is no store loop to time.
        self.entries = entries
        return float("nan")

    def caller(self) -> Lookup:
        return self.lookup

    def lookup(self, text: str) -> Served:
        scores = self.vectors @ self.embedder.embed_one(text)
        best = int(scores.argmax())
        if scores[best] < self.threshold:
            return Served(MISS, None, "cache")
        return Served(best, self.entries[best].answer, "cache")

    def close(self) -> None:
        pass


class RedisVL:
    """redisvl.extensions.cache.llm.SemanticCache, its default index (FLAT, COSINE), in this process."""

    name = "redisvl"

    def __init__(self, embedder: Embedder, redis_url: str, threshold: float) -> None:
        from redisvl.extensions.cache.llm import SemanticCache  # type: ignore[import-untyped]
        from redisvl.utils.vectorize import CustomTextVectorizer  # type: ignore[import-untyped]

        vectorizer = CustomTextVectorizer(embed=lambda text: embedder.embed_one(text).tolist())
        # RedisVL's threshold is a Redis COSINE distance, 1 - cosine similarity (its docstring: "[0-2]").
        self.cache = SemanticCache(
            name="peers_redisvl",
            redis_url=redis_url,
            distance_threshold=1.0 - threshold,
            vectorizer=vectorizer,
            overwrite=True,
        )
        self.index: dict[str, int] = {}

    def store(self, entries: Sequence[Entry]) -> float:
        self.index = _index_by_question(entries)
        start = time.perf_counter()
        for e in entries:
            self.cache.store(prompt=e.question, response=e.answer)
        return len(entries) / (time.perf_counter() - start)

    def caller(self) -> Lookup:
        return self.lookup

    def lookup(self, text: str) -> Served:
        hits = self.cache.check(prompt=text, num_results=1)
        if not hits:
            return Served(MISS, None, "cache")
        return Served(self.index.get(hits[0]["prompt"], MISS), hits[0]["response"], "cache")

    def close(self) -> None:
        self.cache.delete()


def gptcache_threshold(cosine: float) -> float:
    """GPTCache's similarity_threshold for a cosine threshold, with sqlite + faiss and SearchDistanceEvaluation.

    faiss returns the squared L2 distance d = 2 - 2 cos (unit vectors); the evaluation scores 4 - d and a hit
    needs score >= 4 * threshold, so cos >= 2 * threshold - 1.
    """
    return (cosine + 1.0) / 2.0


class GPTCache:
    """GPTCache with sqlite + faiss (IDMap,Flat, L2), its cap raised above the entry count, in this process."""

    name = "gptcache"

    def __init__(self, embedder: Embedder, threshold: float, root: Path, capacity: int) -> None:
        from gptcache import Cache, Config  # type: ignore[import-untyped]
        from gptcache.manager import CacheBase, VectorBase, get_data_manager  # type: ignore[import-untyped]
        from gptcache.processor.pre import get_prompt  # type: ignore[import-untyped]
        from gptcache.similarity_evaluation import SearchDistanceEvaluation  # type: ignore[import-untyped]

        root.mkdir(parents=True, exist_ok=True)
        directory = tempfile.mkdtemp(dir=root)
        manager = get_data_manager(
            CacheBase("sqlite", sql_url=f"sqlite:///{directory}/sqlite.db"),
            VectorBase("faiss", dimension=embedder.profile.dim, top_k=1, index_path=f"{directory}/faiss.index"),
            # Its default keeps 1,000 entries and evicts the rest.
            max_size=capacity,
        )
        self.cache = Cache()
        self.cache.init(
            pre_embedding_func=get_prompt,
            embedding_func=lambda text, **_: embedder.embed_one(text),
            data_manager=manager,
            similarity_evaluation=SearchDistanceEvaluation(),
            config=Config(similarity_threshold=gptcache_threshold(threshold)),
        )
        self.index: dict[str, int] = {}

    def store(self, entries: Sequence[Entry]) -> float:
        from gptcache.adapter.api import put  # type: ignore[import-untyped]

        self.index = _index_by_question(entries)
        start = time.perf_counter()
        for e in entries:
            put(e.question, e.answer, cache_obj=self.cache)
        return len(entries) / (time.perf_counter() - start)

    def caller(self) -> Lookup:
        return self.lookup

    def lookup(self, text: str) -> Served:
        from gptcache.adapter.api import get

        matched: list[Any] = []
        answer = get(text, cache_obj=self.cache, hit_callback=matched.append)
        if answer is None:
            return Served(MISS, None, "cache")
        # hit_callback receives [(cached question, score), ...], best first.
        return Served(self.index.get(matched[0][0][0], MISS), str(answer), "cache")

    def close(self) -> None:
        self.cache.data_manager.close()


CACHE_TIERS = frozenset({"exact", "redis", "pgvector"})


class Ours:
    """This project end to end through the Python client: enqueue on the lookup queue, BLPOP the reply."""

    name = "dejavu-client"

    def __init__(self, settings: Settings, tenant: str, root: Path) -> None:
        self.settings, self.tenant, self.root = settings, tenant, root
        self.client = Client(ProducerSettings())
        self.index: dict[str, int] = {}
        self.backfill: backfill.Summary | None = None

    def entry_ids(self, questions: Sequence[str]) -> list[str]:
        """The entry ids these questions get in the benchmark's scope (the id a reply names)."""
        options = backfill.Options(source="-", tenant=self.tenant)
        scope: Scope = backfill.scope_of(options, self.settings)
        return [entry_id(scope, question_hash(q)) for q in questions]

    def store(self, entries: Sequence[Entry]) -> float:
        """`dejavu backfill` of the entries as a JSONL file, every row warmed into Redis too."""
        self.index = {eid: i for i, eid in enumerate(self.entry_ids([e.question for e in entries]))}
        source = self.root / "entries.jsonl"
        with source.open("w", encoding="utf-8") as f:
            for e in entries:
                f.write(json.dumps({"question": e.question, "answer": e.answer}) + "\n")
        options = backfill.Options(source=str(source), fields=Fields("question", "answer"), tenant=self.tenant,
                                   warm_last=WARM_ALL, rejects_path=self.root / "rejects.jsonl")  # fmt: skip
        self.backfill = backfill.run(options, self.settings)
        return self.backfill.read / self.backfill.seconds

    def caller(self) -> Lookup:
        return self.lookup

    def lookup(self, text: str) -> Served:
        reply = self.client.ask(text, tenant=self.tenant, timeout=60)
        tier = reply.tier.value if reply.tier is not None else f"error:{reply.error.code if reply.error else '?'}"
        entry = self.index.get(reply.entry_id or "", MISS) if tier in CACHE_TIERS else MISS
        return Served(entry, reply.answer, tier)

    def close(self) -> None:
        self.client.close()


class Gateway:
    """This project through its HTTP gateway's OpenAI-compatible route, one keep-alive connection per caller."""

    name = "dejavu-gateway"

    def __init__(self, url: str, api_key: str, model: str, ours: Ours) -> None:
        self.url, self.api_key, self.model, self.ours = url, api_key, model, ours

    def store(self, entries: Sequence[Entry]) -> float:
        # The same stack as the client: the backfill already stored everything.
        return float("nan")

    def caller(self) -> Lookup:
        host, port = self.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}

        def lookup(text: str) -> Served:
            body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": text}]})
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            resp = conn.getresponse()
            data = json.loads(resp.read())
            tier = resp.getheader("x-dejavu-tier") or f"http:{resp.status}"
            answer = data["choices"][0]["message"]["content"] if resp.status == 200 else None
            entry = self.ours.index.get(resp.getheader("x-dejavu-entry") or "", MISS) if tier in CACHE_TIERS else MISS
            return Served(entry, answer, tier)

        return lookup

    def close(self) -> None:
        pass


def served_indices(served: Sequence[Served]) -> np.ndarray:
    return np.array([s.entry for s in served], dtype=np.int64)


# How the benchmark asks a system: one caller after the other, or `callers` threads at once.


def sequential(lookup: Any, texts: Sequence[str]) -> tuple[list[float], list[Served], float]:
    """One caller: per-question latency (ms), what was served, and the wall time (s)."""
    latencies, served = [], []
    start = time.perf_counter()
    for text in texts:
        t = time.perf_counter()
        served.append(lookup(text))
        latencies.append((time.perf_counter() - t) * 1000)
    return latencies, served, time.perf_counter() - start


def concurrent(system: System, texts: Sequence[str], callers: int) -> tuple[list[Served], float]:
    """`callers` threads, each with its own caller, share the questions; returns what was served and the wall time."""
    served: list[Served | None] = [None] * len(texts)

    def loop(i: int) -> None:
        lookup = system.caller()
        for k in range(i, len(texts), callers):
            served[k] = lookup(texts[k])

    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(loop, range(callers)))
    elapsed = time.perf_counter() - start
    return [s for s in served if s is not None], elapsed
