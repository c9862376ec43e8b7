"""The peers benchmark's batching phase: this project's lookups with DEJAVU_LOOKUP_BATCH off and on, same run.

The stack's lookup nodes are restarted with batching on, measured, and restarted as they were. Measured:
- one caller, one question after the other (a batch is then the request alone): the semantic-hit p50 both ways;
- the same decisions both ways: every paraphrase ask (cycled to `asks`) answered alone, and then sent in waves of
  `wave` requests at once, so that the nodes take them in batches; a decision is the tier and the entry served.
  Asks say `no_store`, so a miss stores nothing and every ask meets the same cache;
- with batching on, CPU per semantic hit and hits/s of `callers` callers, as the client's were measured.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import redis

from bench.cpu import Sampler
from bench.peer_systems import Ours
from bench.peers_cpu import Forget, cpu_per_hit
from schemas.messages import ChatReply
from worker.local.servers import LocalStack
from worker.settings import Settings

NO_STORE = {"no_store": True}


def restart_lookup_nodes(stack: LocalStack, ours: Ours, names: Sequence[str], sampler: Sampler, batch: bool) -> None:
    """The solo lookup nodes restarted with DEJAVU_LOOKUP_BATCH on or off (the rest of the environment as it was)."""
    for name in names:
        stack.stop_one(name)
    saved = os.environ.get("DEJAVU_LOOKUP_BATCH")
    os.environ["DEJAVU_LOOKUP_BATCH"] = "true" if batch else "false"
    try:
        for name in names:
            stack.start_worker(name, "lookup,backfill", "solo", 1)
            sampler.add(name, stack.procs[name].pid)
    finally:
        if saved is None:
            os.environ.pop("DEJAVU_LOOKUP_BATCH")
        else:
            os.environ["DEJAVU_LOOKUP_BATCH"] = saved
    ours.client.wait_for_workers(len(names) + 1)


def decision(reply: ChatReply) -> str:
    return f"{reply.tier.value if reply.tier else 'error'}:{reply.entry_id}"


def one_caller(ours: Ours, texts: Sequence[str]) -> tuple[list[float], list[str]]:
    """Per-ask latency (ms) of the asks served by the Redis KNN tier, and every ask's decision."""
    semantic_ms, decisions = [], []
    for text in texts:
        start = time.perf_counter()
        reply = ours.client.ask(text, tenant=ours.tenant, timeout=60, cache=NO_STORE)
        if reply.tier is not None and reply.tier.value == "redis":
            semantic_ms.append((time.perf_counter() - start) * 1000)
        decisions.append(decision(reply))
    return semantic_ms, decisions


def in_waves(ours: Ours, texts: Sequence[str], wave: int) -> list[str]:
    """Every ask's decision, the asks sent `wave` at a time and their replies read after each wave was sent."""
    client, decisions = ours.client, []
    for at in range(0, len(texts), wave):
        requests = [client.request(t, tenant=ours.tenant, timeout=120, cache=NO_STORE) for t in texts[at : at + wave]]
        for request in requests:
            client.send(request)
        decisions += [decision(client.get_reply(r.request_id, timeout=120)) for r in requests]
    return decisions


def run(
    stack: LocalStack, ours: Ours, lookup_nodes: Sequence[str], paraphrases: Sequence[str], semantic: Sequence[str],
    asks: int, wave: int, callers: int, sampler: Sampler, rdb: redis.Redis, components: Sequence[str], forget: Forget,
) -> dict[str, Any]:  # fmt: skip
    """Alone, then batched, then the nodes as they were."""
    cycled = [paraphrases[i % len(paraphrases)] for i in range(asks)] if paraphrases else []
    started_batched = Settings().lookup_batch  # the nodes as the run started them (DEJAVU_LOOKUP_BATCH)
    try:
        common = {"paraphrases": paraphrases, "semantic": semantic, "callers": callers, "rdb": rdb,
                  "components": components, "forget": forget}  # fmt: skip
        phase = functools.partial(_phase, stack, ours, lookup_nodes, sampler, **common)
        alone_ms, alone, alone_all, cpu_alone = phase(batch=False, restart=started_batched)
        batched_ms, batched, _, cpu = phase(batch=True, restart=True)
        in_batches = in_waves(ours, cycled, wave)
    finally:
        restart_lookup_nodes(stack, ours, lookup_nodes, sampler, batch=started_batched)
    differ = [
        (text, alone_all[text], got) for text, got in zip(cycled, in_batches, strict=True) if got != alone_all[text]
    ]
    p50 = {"unbatched": _p50(alone_ms), "batched": _p50(batched_ms)}
    return {
        "semantic_hit_p50_ms": p50,
        "semantic_hits_1_caller": {"unbatched": len(alone_ms), "batched": len(batched_ms)},
        "one_caller_same_decisions": sum(a == b for a, b in zip(alone, batched, strict=True)),
        "asks": len(cycled), "wave": wave,
        "agreement": round(1 - len(differ) / len(cycled), 6) if cycled else None,
        "differences": [{"question": t, "alone": a, "batched": b} for t, a, b in differ[:20]],
        "cpu_unbatched": cpu_alone,
        "cpu_batched": cpu,
        "batch_max": os.environ.get("DEJAVU_LOOKUP_BATCH_MAX", "8 (default)"),
    }  # fmt: skip


def _phase(
    stack: LocalStack, ours: Ours, lookup_nodes: Sequence[str], sampler: Sampler, batch: bool, restart: bool,
    paraphrases: Sequence[str], semantic: Sequence[str], callers: int, rdb: redis.Redis, components: Sequence[str],
    forget: Forget,
) -> tuple[list[float], list[str], dict[str, str], dict[str, Any] | None]:  # fmt: skip
    """The lookup nodes with batching on or off (restarted when `restart`): every paraphrase's decision (which also
    warms a restarted node up), then the semantic-hit latencies at one caller and the CPU per hit."""
    if restart:
        restart_lookup_nodes(stack, ours, lookup_nodes, sampler, batch)
    decisions = dict(zip(paraphrases, one_caller(ours, paraphrases)[1], strict=True))
    semantic_ms, semantic_decisions = one_caller(ours, semantic)
    cpu = cpu_per_hit(ours, semantic, callers, sampler, rdb, components, forget) if semantic else None
    return semantic_ms, semantic_decisions, decisions, cpu


def _p50(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None
