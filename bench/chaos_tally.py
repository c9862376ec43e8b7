"""What `make chaos` counts after a run: lost, duplicated and wrong answers, where each lost request was last
seen, and how soon the requests a killed node held were answered."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from pydantic import ValidationError

from bench.chaos_load import Group, Outcome, Run
from bench.stats import pct
from producer.aclient import AsyncClient
from schemas.keys import QUEUED_PREFIX, REPLIED_PREFIX, TAKEN_PREFIX, reply_key
from schemas.messages import ChatReply

# kombu's unacked copies: the LLM/write-back nodes' keys and the lookup nodes' own (worker.app).
UNACKED_KEYS = ("unacked", "unacked_lookup")


async def duplicates(client: AsyncClient, outcomes: list[Outcome]) -> dict[str, int]:
    """Replies published a second time for a request already answered (a second reply, other than the one read),
    and replies that came back identical after a Redis crash replayed its append-only file (the same reply, read
    once already: not a second answer)."""
    read = [o for o in outcomes if o.reply is not None and o.kind != "streamed"]
    async with client.redis.pipeline(transaction=False) as pipe:
        for o in read:
            pipe.lrange(reply_key(o.request_id), 0, -1)
        waiting = await pipe.execute()
    second = replayed = 0
    for o, raws in zip(read, waiting, strict=True):
        for raw in raws:
            try:
                again = ChatReply.model_validate_json(raw)
            except ValidationError:
                second += 1
                continue
            if again == o.reply:
                replayed += 1
            else:
                second += 1
    return {"duplicated": second, "replayed_after_redis_crash": replayed}


async def post_mortem(client: AsyncClient, lost: list[Outcome]) -> list[dict[str, Any]]:
    """Where each lost request was last seen: by its producer's last look (producer.resend), and in Redis now."""
    if not lost:
        return []
    copies: list[bytes] = []
    for key in UNACKED_KEYS:
        copies += await client.redis.hvals(key)  # type: ignore[misc]
    unacked = b"".join(copies)
    found = []
    for o in lost:
        rid = o.request_id
        async with client.redis.pipeline(transaction=False) as pipe:
            pipe.get(QUEUED_PREFIX + rid)
            pipe.get(TAKEN_PREFIX + rid)
            pipe.exists(REPLIED_PREFIX + rid)
            pipe.llen(reply_key(rid))
            queued, taken, replied, replies = await pipe.execute()
        found.append({
            "request_id": rid, "kind": o.kind,
            "producer_last_saw": client.resender.seen(rid),
            "queued_marker": None if queued is None else int(queued),
            "taken_by": None if taken is None else taken.decode(),
            "replied": bool(replied), "replies_waiting": int(replies),
            "unacked_copy": rid.encode() in unacked,
        })  # fmt: skip
    return found


def killed_node_latencies(run: Run, kind: str) -> list[float]:
    """For each request a killed node of `kind` ("lookup", "llm") held when it was killed: from the kill to its
    answer, in ms (one never answered is counted lost)."""
    by_id = {o.request_id: o for o in run.outcomes}
    out = []
    for fault in run.faults:
        if f"_{kind}_node" not in fault["fault"]:
            continue
        for rid in fault.get("held", []):
            answered_at = by_id[rid].answered_at if rid in by_id else None
            if answered_at is not None:
                out.append((answered_at - fault["at_monotonic"]) * 1000)
    return out


def tally(run: Run, groups: list[Group], seconds: float) -> dict[str, Any]:
    outcomes = run.outcomes
    replies = [o for o in outcomes if o.reply is not None]
    answered = [o for o in replies if o.reply and o.reply.ok]
    errors = Counter(str(o.reply.error.code) for o in replies if o.reply and o.reply.error)
    errors.update(o.failure for o in outcomes if o.failure in ("overloaded", "unsent"))
    wrong = [o for o in answered if o.reply and o.reply.answer not in groups[o.group].right_answers]
    # A streamed answer whose deltas are not the start of its whole answer showed the caller text twice (or lost).
    garbled = [o for o in answered if o.streamed is not None and not (o.reply.answer or "").startswith(o.streamed)]  # type: ignore[union-attr]
    latencies = [o.latency_ms for o in answered if o.latency_ms is not None]
    waits = [o.reply.timings_ms["queue_wait"] for o in answered if o.reply and "queue_wait" in o.reply.timings_ms]
    killed, killed_llm = killed_node_latencies(run, "lookup"), killed_node_latencies(run, "llm")
    return {
        "sent": len(outcomes),
        "answered": len(answered),
        "errors": dict(errors),
        "lost": sum(o.failure == "lost" for o in outcomes),
        "wrong": len(wrong),
        "wrong_examples": [
            {"asked": groups[o.group].texts, "got": (o.reply.answer or "")[:160]} for o in wrong[:5] if o.reply
        ],
        "streamed": sum(o.kind == "streamed" for o in outcomes),
        "streamed_text_duplicated": len(garbled),
        "kinds": dict(Counter(o.kind for o in outcomes)),
        "tiers": dict(Counter(str(o.reply.tier) for o in answered if o.reply)),
        "unique_cold_questions": sum(o.kind in ("cold", "streamed") for o in outcomes),
        "latency_ms": pct(latencies) if latencies else {},
        # How much of that latency was waiting on the lookup queue (the pool behind the offered rate).
        "queue_wait_ms": pct(waits) if waits else {},
        "killed_node_requests": len(killed),
        "killed_node_ms": pct(killed) if killed else {},
        "killed_node_p99_ms": pct(killed)["p99"] if killed else None,
        "killed_node_ms_raw": [round(x, 1) for x in killed],
        "killed_llm_node_requests": len(killed_llm),
        "killed_llm_node_ms": pct(killed_llm) if killed_llm else {},
        "killed_llm_node_ms_raw": [round(x, 1) for x in killed_llm],
        "achieved_rate_per_s": round(len(outcomes) / seconds, 1),
        "send_retries": run.retries["send"],
        "wait_retries": run.retries["wait"],
        "retry_causes": dict(run.retry_causes.most_common(8)),
        "faults": [{k: v for k, v in f.items() if k not in ("held", "at_monotonic")} for f in run.faults],
    }


def report(r: dict[str, Any]) -> None:
    lat, wait, killed = r["latency_ms"], r["queue_wait_ms"], r["killed_node_ms"]
    rows = [
        ("sent / answered", f"{r['sent']} / {r['answered']}  ({r['achieved_rate_per_s']}/s)"),
        ("errors", json.dumps(r["errors"])),
        ("lost / duplicated / wrong", f"{r['lost']} / {r['duplicated']} / {r['wrong']}"),
        ("streamed / text shown twice", f"{r['streamed']} / {r['streamed_text_duplicated']}"),
        ("llm calls / unique cold questions", f"{r['llm_calls']} / {r['unique_cold_questions']}"),
        ("re-sent by the producers", json.dumps(r["resent"])),
        (f"burst of {r['burst_size']}: llm calls / answered", f"{r['burst_llm_calls']} / {r['burst_answered']}"),
        (
            f"burst of {r['paraphrase_burst_size']} split over a paraphrase: llm calls",
            f"{r['paraphrase_burst_llm_calls']}",
        ),
        ("latency p50 / p99 under load", f"{lat.get('p50')} / {lat.get('p99')} ms"),
        ("of which lookup-queue wait p50 / p99", f"{wait.get('p50')} / {wait.get('p99')} ms"),
        (
            f"killed lookup nodes' {r['killed_node_requests']} requests: kill to answer p50 / p99",
            f"{killed.get('p50')} / {killed.get('p99')} ms",
        ),
        (
            f"killed LLM node's {r['killed_llm_node_requests']} requests: kill to answer p50 / p99",
            f"{r['killed_llm_node_ms'].get('p50')} / {r['killed_llm_node_ms'].get('p99')} ms",
        ),
        ("tiers", json.dumps(r["tiers"])),
        ("send / wait retries (Redis restart)", f"{r['send_retries']} / {r['wait_retries']}"),
    ]
    for name, value in rows:
        print(f"  {name:<48} {value}")
    for f in r["faults"]:
        print(f"  fault {f['fault']:<32} at {f['at_s']:>5} s, {f['in_flight']} in flight, {f.get('held_n', '-')} held")
    for lost in r["lost_requests"]:
        print(f"  lost {json.dumps(lost)}")
