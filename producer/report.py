"""`dejavu report`: per tenant, what the cache answered and what it saved, from the workers' usage counts.

The workers add to one Redis hash per tenant and UTC day as they publish each reply (schemas.keys.usage_key),
so the counts survive restarts of every process but Redis (whose append-only file keeps them). A price table,
one JSON file (DEJAVU_PRICES_FILE: {"model": {"prompt_per_1m": 2.5, "completion_per_1m": 10.0}}), turns the
tokens saved into money; a model without a price leaves the cost column out. Lookup-only requests (`lookup`)
count as requests, their hits in their tier and as "lookup hits" (a miss as tier `miss`, which the caller's own
LLM answered); stores (`store`) count apart, as "stored".
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import redis

from schemas.keys import USAGE_PREFIX
from schemas.messages import Tier

HIT_TIERS = (Tier.EXACT, Tier.REDIS, Tier.PGVECTOR, Tier.COALESCED)


class PriceTableError(ValueError):
    """The price file does not parse; the message names the file and what is wrong."""


@dataclass
class TenantUsage:
    tenant: str
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return self.counts["requests"]

    def tier(self, tier: Tier) -> int:
        return self.counts[f"tier:{tier.value}"]

    @property
    def avoided(self) -> int:
        return sum(self.tier(t) for t in HIT_TIERS)

    def tokens(self, kind: str) -> dict[str, int]:
        """Tokens per model: kind is 'saved' or 'spent'."""
        per_model: dict[str, int] = defaultdict(int)
        for name, value in self.counts.items():
            what, _, model = name.partition(":")
            if what in (f"{kind}_prompt", f"{kind}_completion"):
                per_model[model] += value
        return dict(per_model)

    def cost(self, kind: str, prices: dict[str, dict[str, float]]) -> float | None:
        """Money for the tokens of `kind`; None when a model that has tokens has no price."""
        total = 0.0
        for name, value in self.counts.items():
            what, _, model = name.partition(":")
            if what not in (f"{kind}_prompt", f"{kind}_completion") or not value:
                continue
            if model not in prices:
                return None
            total += value * prices[model]["prompt_per_1m" if what.endswith("prompt") else "completion_per_1m"] / 1e6
        return total


def read_prices(path: Path | None) -> dict[str, dict[str, float]]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {model: {k: float(p[k]) for k in ("prompt_per_1m", "completion_per_1m")} for model, p in data.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PriceTableError(
            f'price table {path}: {exc!r}; expected {{"model": {{"prompt_per_1m": 2.5, "completion_per_1m": 10}}}}'
        ) from None


def days_since(since: str, today: dt.date) -> dt.date:
    """`7d`: the first day of the last 7 (today included)."""
    if not since.endswith("d") or not since[:-1].isdigit() or int(since[:-1]) < 1:
        raise ValueError(f"--since takes a number of days, like 7d, not {since!r}")
    return today - dt.timedelta(days=int(since[:-1]) - 1)


def collect(r: redis.Redis, tenant: str | None, first_day: dt.date) -> list[TenantUsage]:
    usage: dict[str, TenantUsage] = {}
    pattern = f"{USAGE_PREFIX}{tenant if tenant is not None else '*'}:*"
    for key in cast("Iterable[bytes]", r.scan_iter(match=pattern, count=1000)):
        name, _, day = key.decode().removeprefix(USAGE_PREFIX).rpartition(":")
        if dt.date.fromisoformat(day) < first_day:
            continue
        counts = cast("dict[bytes, bytes]", r.hgetall(key))
        usage.setdefault(name, TenantUsage(name)).counts.update({k.decode(): int(v) for k, v in counts.items()})
    return sorted(usage.values(), key=lambda u: u.tenant)


def table(usage: list[TenantUsage], prices: dict[str, dict[str, float]]) -> str:
    costs = [u.cost("saved", prices) for u in usage]
    priced = bool(prices) and all(c is not None for c in costs)
    head = ["tenant", "requests", *(t.value for t in (*HIT_TIERS, Tier.LLM)), "llm calls avoided", "lookup hits",
            "stored", "tokens saved"]  # fmt: skip
    rows = [head + (["cost saved"] if priced else [])]
    for u, cost in zip(usage, costs, strict=True):
        share = [f"{u.tier(t) / u.requests:.1%}" if u.requests else "-" for t in (*HIT_TIERS, Tier.LLM)]
        row = [u.tenant, str(u.requests), *share, str(u.avoided), str(u.counts["lookup_hits"]),
               str(u.counts["stores"]), str(sum(u.tokens("saved").values()))]  # fmt: skip
        rows.append(row + ([f"{cost:.4f}"] if priced and cost is not None else []))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
