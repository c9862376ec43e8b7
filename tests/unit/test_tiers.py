"""Every tier speaks the same verbs (worker.tiers.Tier): the same names, parameters and types."""

from __future__ import annotations

import inspect

import pytest

from worker.tiers import Tier
from worker.tiers.pgvector import PgTier
from worker.tiers.redis import RedisTier

VERBS = [name for name, value in vars(Tier).items() if inspect.iscoroutinefunction(value)]


def test_the_protocol_names_lookup_store_and_forget() -> None:
    assert VERBS == ["lookup_similar", "store", "forget", "forget_tenant", "block"]


@pytest.mark.parametrize("tier", [RedisTier, PgTier])
@pytest.mark.parametrize("verb", VERBS)
def test_each_tier_implements_each_verb_as_the_protocol_states_it(tier: type, verb: str) -> None:
    assert inspect.iscoroutinefunction(getattr(tier, verb))
    assert inspect.signature(getattr(tier, verb)) == inspect.signature(getattr(Tier, verb))
