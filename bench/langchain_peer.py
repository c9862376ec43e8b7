"""Issue #21 item 5: the same LangChain application behind `set_llm_cache`, with the anchor's own LangChain cache
(langchain_redis.RedisSemanticCache: the same Redis, the same MiniLM ONNX embedder wrapped as LangChain
`Embeddings`) and with `producer.langchain.DejavuCache`, each cache at its shipped default.

`side_by_side(...)` is what `make bench-peers` calls: it runs the application once per cache, each time in a process
of its own (its memory and CPU are the application's), and returns the `langchain_*` keys for peers.json with the
figures they come from. The application stores every pair's text_a with its answer through the cache (LangChain's
own `update`), then asks every text_b once (`invoke`, one caller: the semantic-hit p50), then asks the questions that
hit again from `callers` threads (hits/s, and the process's CPU per hit). A hit is right when it serves the answer of
its own pair's text_a and the pair is labelled the same question (label 1): precision over the hits, recall over
the label-1 pairs. LangChain's own InMemoryCache, asked its exact hits the same way, is the baseline that CPU per hit
is counted beyond (LangChain's overhead, which both pay). While asking, the caches take no new answers, so a miss's
model answer never becomes a later hit.

    python -m bench.langchain_peer --pairs tests/data/medical_pairs.jsonl --limit 40   # a tiny run, own stack
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from langchain_core.caches import BaseCache, InMemoryCache
from langchain_core.globals import set_llm_cache
from langchain_core.language_models import FakeListChatModel
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration

APPS = ("inmemory", "redis_semantic", "dejavu")
STORED = "[stored answer] "
MIN_CONCURRENT_CALLS = 200

Pair = tuple[str, str, int]  # text_a, text_b, label


def side_by_side(
    pairs: Sequence[Pair], redis_url: str, env: Mapping[str, str], callers: int = 8, timeout_s: float = 1800
) -> dict[str, Any]:
    """Run the application with each cache; `env` points DejavuCache (the producer's DEJAVU_* settings) at the stack.
    Returns the langchain_* ratio keys, plus `langchain_apps` with every figure per cache."""
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="langchain-peer-") as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"pairs": pairs, "redis_url": redis_url, "callers": callers}), "utf-8")
        for app in APPS:
            done = subprocess.run(
                [sys.executable, "-m", "bench.langchain_peer", "--app", app, "--job", str(job)],
                env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout_s, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"the LangChain app with {app} failed:\n{done.stderr[-4000:]}")
            runs[app] = json.loads(done.stdout.strip().splitlines()[-1])
    base, theirs, ours = runs["inmemory"], runs["redis_semantic"], runs["dejavu"]

    def beyond_base(run: dict[str, Any]) -> float:
        return float(run["cpu_per_hit_ms"] - base["cpu_per_hit_ms"])

    return {
        "langchain_app_rss_vs_redis_semantic": ours["rss_mb"] / theirs["rss_mb"],
        "langchain_app_cpu_per_hit_vs_redis_semantic": _ratio(beyond_base(ours), beyond_base(theirs)),
        "langchain_precision_minus_redis_semantic": ours["precision"] - theirs["precision"],
        "langchain_hits_per_s_vs_redis_semantic": _ratio(ours["hits_per_s"], theirs["hits_per_s"]),
        "langchain_hit_p50_vs_redis_semantic": _ratio(ours["semantic_hit_p50_ms"], theirs["semantic_hit_p50_ms"]),
        "langchain_apps": runs,
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# --- the application, one process per cache ---


def app(kind: str, job: dict[str, Any]) -> dict[str, Any]:
    pairs: list[Pair] = [tuple(p) for p in job["pairs"]]
    cache, closing = _cache(kind, job["redis_url"])
    frozen = Frozen(cache)
    set_llm_cache(frozen)
    model = FakeListChatModel(responses=["[model answer]"])
    try:
        stored = sorted({a for a, _, _ in pairs})
        load_s = _load(frozen, model, stored)
        frozen.frozen = True
        # InMemoryCache serves exact repeats only: its hits are the stored questions asked again.
        asked = stored if kind == "inmemory" else [b for _, b, _ in pairs]
        served, latencies = [], []
        for text in asked:
            start = time.perf_counter()
            served.append(str(model.invoke(text).content))
            latencies.append((time.perf_counter() - start) * 1000)
        hits = [i for i, answer in enumerate(served) if answer.startswith(STORED)]
        semantic = [latencies[i] for i in hits if kind == "inmemory" or asked[i] != pairs[i][0]]
        figures = _judge(pairs, served) if kind != "inmemory" else {}
        hit_texts = [asked[i] for i in hits]
        concurrent = _concurrent(model, hit_texts, int(job["callers"])) if hit_texts else {}
        return {
            "app": kind, "stored": len(stored), "asked": len(asked), "hits": len(hits), "load_s": round(load_s, 3),
            "semantic_hit_p50_ms": statistics.median(semantic) if semantic else float("nan"),
            **figures, **concurrent, "rss_mb": _rss_mb(),
        }  # fmt: skip
    finally:
        set_llm_cache(None)
        closing()


class Frozen(BaseCache):
    """The cache as the application uses it; once `frozen`, LangChain's updates after a miss are dropped."""

    def __init__(self, inner: BaseCache) -> None:
        self.inner, self.frozen = inner, False

    def lookup(self, prompt: str, llm_string: str) -> Any:
        return self.inner.lookup(prompt, llm_string)

    def update(self, prompt: str, llm_string: str, return_val: Any) -> None:
        if not self.frozen:
            self.inner.update(prompt, llm_string, return_val)

    def clear(self, **kwargs: Any) -> None:
        self.inner.clear(**kwargs)


def _cache(kind: str, redis_url: str) -> tuple[BaseCache, Callable[[], None]]:
    """The cache under test and how to empty it afterwards. Each is imported only by the process that runs it: what
    it loads is the application's memory."""
    if kind == "inmemory":
        memory = InMemoryCache()
        return memory, memory.clear
    if kind == "redis_semantic":
        from langchain_redis import RedisSemanticCache

        semantic = RedisSemanticCache(redis_url=redis_url, embeddings=_minilm(), name=f"lcpeer-{uuid.uuid4().hex[:8]}")
        return semantic, semantic.clear
    from producer.langchain import DejavuCache

    ours = DejavuCache(tenant=f"lcpeer-{uuid.uuid4().hex[:8]}")

    def clear() -> None:
        ours.clear()
        ours.close()

    return ours, clear


def _minilm() -> Any:
    """The workers' MiniLM ONNX embedder as LangChain Embeddings, two intra-op threads as the peers run it."""
    from langchain_core.embeddings import Embeddings

    from worker.embed import Embedder
    from worker.settings import Settings

    settings = Settings()
    embedder = Embedder(settings.profile(), settings.model_cache_dir, threads=2)
    embedder.warm_up()

    class MiniLM(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [embedder.embed_one(t).tolist() for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return list(embedder.embed_one(text).tolist())

    return MiniLM()


def _load(cache: Frozen, model: FakeListChatModel, questions: Sequence[str]) -> float:
    """Store each question's answer the way LangChain does after a model call; wait until the last is served."""
    llm_string = model._get_llm_string()
    start = time.perf_counter()
    for q in questions:
        cache.update(dumps([HumanMessage(q)]), llm_string, [ChatGeneration(message=AIMessage(STORED + q))])
    last = dumps([HumanMessage(questions[-1])])
    end = time.monotonic() + 120
    # DejavuCache's write-backs land after update returns; the others store before it returns.
    while cache.lookup(last, llm_string) is None and time.monotonic() < end:
        time.sleep(0.05)
    return time.perf_counter() - start


def _judge(pairs: Sequence[Pair], served: Sequence[str]) -> dict[str, Any]:
    hits = [(pair, answer.removeprefix(STORED)) for pair, answer in zip(pairs, served, strict=True)
            if answer.startswith(STORED)]  # fmt: skip
    right = sum(1 for (a, _, label), source in hits if label == 1 and source == a)
    positives = sum(1 for _, _, label in pairs if label == 1)
    return {"precision": right / len(hits) if hits else float("nan"), "recall": right / positives if positives else 0.0,
            "right_hits": right, "positives": positives}  # fmt: skip


def _concurrent(model: FakeListChatModel, texts: Sequence[str], callers: int) -> dict[str, Any]:
    calls = [texts[i % len(texts)] for i in range(max(MIN_CONCURRENT_CALLS, len(texts)))]
    cpu, start = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        answers = list(pool.map(lambda t: str(model.invoke(t).content), calls))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    served = sum(1 for a in answers if a.startswith(STORED))
    return {"hits_per_s": served / wall, "cpu_per_hit_ms": cpu / max(served, 1) * 1000, "callers": callers}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- a tiny run on a stack of its own ---


def load_pairs(path: Path, limit: int) -> list[Pair]:
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [(r["text_a"], r["text_b"], int(r["label"])) for r in rows[:limit]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", choices=APPS, help="(internal) run the application with this cache")
    parser.add_argument("--job", type=Path, help="(internal) the job file side_by_side wrote")
    parser.add_argument("--pairs", type=Path, help="JSONL of text_a, text_b, label")
    parser.add_argument("--limit", type=int, default=40, help="pairs to use")
    parser.add_argument("--callers", type=int, default=8)
    args = parser.parse_args()
    if args.app is not None:
        print(json.dumps(app(args.app, json.loads(args.job.read_text("utf-8")))))
        return
    from producer.client import Client
    from producer.settings import ProducerSettings
    from worker.local.servers import LocalStack, free_port

    with tempfile.TemporaryDirectory(prefix="langchain-peer-stack-") as root:
        stack = LocalStack(Path(root), redis_port=free_port(), pg_port=free_port(), llm_port=free_port(),
                           llm_delay_ms=0, durable=False)  # fmt: skip
        stack.start()
        try:
            os.environ.update(stack.env())
            stack.start_workers(nodes=1, concurrency=1, llm_threads=2)
            client = Client(ProducerSettings())
            client.wait_for_workers(2)
            client.close()
            result = side_by_side(load_pairs(args.pairs, args.limit), stack.redis_url, stack.env(), args.callers)
        finally:
            stack.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
