"""Per-tenant limits at the gateway, counted in Redis: a flooding tenant gets 429s, the other none; cache hits
do not count against the LLM limits; `no-cache` only where the key allows it; the queue's bytes are bounded too."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from producer.base import Overloaded
from producer.client import Client
from producer.settings import ProducerSettings
from schemas.keys import LOOKUP_QUEUE
from tests.conftest import wait_until
from tests.integration.conftest import Gateway, post
from tests.integration.test_gateway_errors import chat, start_gateway
from worker.local.servers import LocalStack

LIMITS = {"max_in_flight": 2, "llm_calls_per_minute": 3, "allow_no_cache": False}


@pytest.fixture(scope="module")
def limited(stack: LocalStack, gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway where key-a (the noisy tenant) has LIMITS, in the new form, key-b the old form (none), and key-c
    one LLM call a minute."""
    suffix = uuid.uuid4().hex[:8]
    noisy, quiet, frugal = f"key-a-{suffix}", f"key-b-{suffix}", f"key-c-{suffix}"
    keys = {noisy: f"noisy-{suffix}", quiet: f"quiet-{suffix}", frugal: f"frugal-{suffix}"}
    config = {noisy: {"tenant": keys[noisy], "limits": LIMITS}, quiet: keys[quiet],
              frugal: {"tenant": keys[frugal], "limits": {"llm_calls_per_minute": 1}}}  # fmt: skip
    tmp = Path(tmp_path_factory.mktemp("limited"))
    g = Gateway("", keys, gateway.metrics_key)
    with start_gateway(stack, g, tmp, DEJAVU_GATEWAY_API_KEYS=json.dumps(config)) as url:
        yield Gateway(url, keys, gateway.metrics_key)


def _not_at_a_minutes_end() -> None:
    # The per-minute counters turn with the minute: start with room for the test inside one.
    wait_until(lambda: time.time() % 60 < 40, timeout=30)


def test_the_flooding_tenant_gets_429s_and_the_other_none(limited: Gateway) -> None:
    _not_at_a_minutes_end()

    def ask(key: str) -> tuple[int, dict[str, str], bytes]:
        body = chat(f"What is gout {uuid.uuid4().hex}? [[standin:sleep=0.3]]")
        return post(limited, "/v1/chat/completions", body, key)

    with ThreadPoolExecutor(12) as pool:  # both at once
        answers = list(pool.map(ask, [limited.key_a] * 8 + [limited.key_b] * 4))
    noisy, quiet = answers[:8], answers[8:]
    refused = [(h, json.loads(b)["error"]) for s, h, b in noisy if s == 429]
    assert refused and all(e["code"] == "rate_limit_exceeded" and int(h["Retry-After"]) >= 1 for h, e in refused)
    assert sum(s == 200 for s, _, _ in noisy) <= LIMITS["llm_calls_per_minute"]
    assert [s for s, _, _ in quiet] == [200] * 4


def test_hits_do_not_count_and_no_cache_needs_the_keys_leave(limited: Gateway) -> None:
    status, _, raw = post(limited, "/v1/chat/completions", chat("What is gout?"), limited.key_a,
                          {"Cache-Control": "no-cache"})  # fmt: skip
    assert status == 403 and json.loads(raw)["error"]["code"] == "no_cache_not_allowed"
    _not_at_a_minutes_end()
    frugal = next(k for k in limited.keys if k.startswith("key-c"))
    question = f"What is gout {uuid.uuid4().hex}?"
    # Its one LLM call of the minute, then the same question again: hits, served though the LLM budget is spent.
    tiers = [post(limited, "/v1/chat/completions", chat(question), frugal)[1].get("x-dejavu-tier") for _ in range(4)]
    assert tiers == ["llm", "exact", "exact", "exact"]
    # A miss now would need the LLM: 429, streamed or not, and nothing asked of the LLM.
    for stream in (False, True):
        status, headers, raw = post(limited, "/v1/chat/completions", chat(f"Gout {uuid.uuid4().hex}?", stream), frugal)
        assert status == 429 and json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
        assert int(headers["Retry-After"]) >= 1


def test_the_queue_refuses_by_bytes_as_well_as_by_depth(stack: LocalStack) -> None:
    # A queue of its own, on a database no worker consumes: the byte limit refuses what the depth limit would let in.
    settings = ProducerSettings(redis_url=stack.redis_url.rsplit("/", 1)[0] + "/8", max_queue_depth=1000,
                                max_queue_bytes=64 * 1024)  # fmt: skip
    client, r = Client(settings), redis.Redis.from_url(settings.redis_url)
    try:
        big = "x" * 6000
        with pytest.raises(Overloaded):
            for _ in range(100):
                client.submit(f"{big} {uuid.uuid4().hex}?", tenant="bytes", timeout=30)
        assert 1 < int(r.llen(LOOKUP_QUEUE)) < 100
    finally:
        r.delete(LOOKUP_QUEUE)
        r.close()
        client.close()
