"""The gateway's Prometheus metrics, in a registry of its own so several apps can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from schemas.messages import ChatReply, Tier

# Hits are sub-millisecond to a few ms; misses wait on the LLM for seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dejavu_gateway_requests", "HTTP requests received", ["endpoint"], registry=self.registry
        )
        self.hits = Counter(
            "dejavu_gateway_hits", "Requests answered from a cache tier", ["tier"], registry=self.registry
        )
        self.misses = Counter("dejavu_gateway_misses", "Requests answered by the LLM", registry=self.registry)
        self.errors = Counter(
            "dejavu_gateway_errors", "Error responses by error code", ["code"], registry=self.registry
        )
        self.health_checks = Counter(
            "dejavu_gateway_health_checks", "Times /healthz's checks ran (at most once a second, whatever the polling)",
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "dejavu_gateway_request_seconds",
            "Time from request received to response sent, by endpoint and outcome (tier or error)",
            ["endpoint", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        # What the cache saved, per tenant: LLM calls made and avoided, tokens spent and saved.
        self.llm_calls = Counter(
            "dejavu_llm_calls", "Requests the LLM answered, by tenant", ["tenant"], registry=self.registry
        )
        self.llm_calls_avoided = Counter(
            "dejavu_llm_calls_avoided", "Requests a cache tier (or a coalesced call) answered instead of the LLM",
            ["tenant", "tier"], registry=self.registry,
        )  # fmt: skip
        self.tokens_spent = Counter(
            "dejavu_tokens_spent", "LLM tokens spent, by tenant and kind (prompt, completion)", ["tenant", "kind"],
            registry=self.registry,
        )  # fmt: skip
        self.tokens_saved = Counter(
            "dejavu_tokens_saved", "LLM tokens a cached answer saved, by tenant, tier and kind (prompt, completion)",
            ["tenant", "tier", "kind"], registry=self.registry,
        )  # fmt: skip

    def answered(self, reply: ChatReply, tenant: str) -> None:
        if reply.tier is None:
            return
        if reply.tier == Tier.LLM:
            self.misses.inc()
            self.llm_calls.labels(tenant).inc()
            if reply.usage is not None:
                self.tokens_spent.labels(tenant, "prompt").inc(reply.usage.prompt_tokens)
                self.tokens_spent.labels(tenant, "completion").inc(reply.usage.completion_tokens)
            return
        self.hits.labels(reply.tier.value).inc()
        self.llm_calls_avoided.labels(tenant, reply.tier.value).inc()
        if reply.saved is not None:
            self.tokens_saved.labels(tenant, reply.tier.value, "prompt").inc(reply.saved.prompt_tokens)
            self.tokens_saved.labels(tenant, reply.tier.value, "completion").inc(reply.saved.completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
