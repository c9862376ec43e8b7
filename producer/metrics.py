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
        self.latency = Histogram(
            "dejavu_gateway_request_seconds",
            "Time from request received to response sent, by endpoint and outcome (tier or error)",
            ["endpoint", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def answered(self, reply: ChatReply) -> None:
        if reply.tier == Tier.LLM:
            self.misses.inc()
        elif reply.tier is not None:
            self.hits.labels(reply.tier.value).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
