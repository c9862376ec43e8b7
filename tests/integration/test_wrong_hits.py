"""Online, where the truth arrives later: per tenant, the hits the workers served and the feedback that called one
wrong, counted in Redis and shown by `dejavu status`."""

from __future__ import annotations

import asyncio
import uuid

from producer.client import Client
from schemas.messages import Tier
from tests.conftest import wait_until
from worker.runtime import redis_client
from worker.settings import Settings
from worker.tools.cli import _tenants, collect_status, wrong_hits


def counted(tenant: str) -> dict[str, object]:
    async def read() -> dict[str, dict[str, object]]:
        r = redis_client(Settings().redis_url)
        try:
            return await wrong_hits(r)
        finally:
            await r.aclose()

    return asyncio.run(read()).get(tenant, {})


def test_hits_and_wrong_hit_feedback_per_tenant(client: Client, tenant: str) -> None:
    question = f"How long does {uuid.uuid4().hex[:10]} keep in the fridge?"
    first = client.ask(question, tenant=tenant)
    assert first.tier == Tier.LLM and first.entry_id
    wait_until(lambda: client.ask(question, tenant=tenant).tier == Tier.EXACT)
    hit = client.ask(question, tenant=tenant)
    assert hit.tier == Tier.EXACT
    served = counted(tenant)["hits_served"]
    assert isinstance(served, int) and served >= 2  # the LLM's answer is no hit; the asks since are

    assert client.feedback(hit, reason="stale").blocked == 1
    # A second report on the same entry finds nothing to remove and is not counted again.
    assert client.feedback(hit.entry_id or "", tenant=tenant).removed.redis == 0
    assert counted(tenant) == {"hits_served": served, "wrong_hit_feedback": 1, "wrong_hit_rate": round(1 / served, 4)}
    # Another tenant's counts do not move.
    assert counted(f"{tenant}-other") == {}

    status = asyncio.run(collect_status(Settings()))
    assert status["tenants"][tenant]["wrong_hit_feedback"] == 1
    assert f"- {tenant}: {served} hits, 1 wrong ({1 / served:.2%})" in _tenants(status["tenants"])


def test_status_words_tenants_plainly() -> None:
    assert _tenants({}) == "tenants   no hit served yet"
    assert "unreachable (RedisError: down)" in _tenants({"error": "RedisError: down"})
    text = _tenants({"acme": {"hits_served": 0, "wrong_hit_feedback": 0, "wrong_hit_rate": None}})
    assert "- acme: 0 hits, 0 wrong (-)" in text
