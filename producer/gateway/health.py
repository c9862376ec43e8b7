"""/healthz and /metrics: what a load balancer and the operator see."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from producer.aclient import AsyncClient
from producer.gateway.auth import KEYS, bearer
from producer.gateway.errors import GatewayError
from producer.gateway.state import CLIENT, METRICS, SETTINGS
from schemas.health import health, queue_depths
from schemas.keys import LOOKUP_QUEUE, PG_DOWN_KEY

HEALTH_TIMEOUT_S = 3.0


async def healthz(request: web.Request) -> web.Response:
    """ok / degraded / down for anyone (a load balancer); the checks and reasons only for the operator's key
    (DEJAVU_METRICS_KEY, when set): exception text and worker names are not for callers at large."""
    client, settings = request.app[CLIENT], request.app[SETTINGS]

    async def workers() -> list[str]:
        names = await client.workers(timeout=1.0, limit=1)
        if not names:
            raise RuntimeError("no worker answers a ping")
        return names

    async def postgres() -> None:
        # The workers report Postgres failures (schemas.keys.PG_DOWN_KEY): the gateway holds no Postgres credentials.
        reported = await client.redis.get(PG_DOWN_KEY)
        if reported is not None:
            raise RuntimeError(f"a worker could not reach Postgres: {reported!r}")

    checks: dict[str, Awaitable[Any]] = {"redis": client.redis.ping(), "postgres": postgres(), "workers": workers()}
    results = await asyncio.gather(
        *(asyncio.wait_for(check, HEALTH_TIMEOUT_S) for check in checks.values()), return_exceptions=True
    )
    report: dict[str, Any] = {}
    for name, result in zip(checks, results, strict=True):
        if isinstance(result, BaseException):
            report[name] = {"ok": False, "error": f"{type(result).__name__}: {result}"}
        else:
            report[name] = {"ok": True, **({"names": result} if name == "workers" else {})}
    depth = await _lookup_depth(client)
    verdict = health(
        report["redis"]["ok"], report["postgres"]["ok"] or not report["redis"]["ok"],
        len(report["workers"].get("names", ())), depth, settings.max_queue_depth,
    )  # fmt: skip
    body: dict[str, Any] = {"status": verdict.status}
    if request.app[KEYS].operator(bearer(request)) and settings.metrics_key is not None:
        body.update(report, reasons=list(verdict.reasons))
    # Degraded still answers requests: a load balancer should keep sending them.
    return web.json_response(body, status=503 if verdict.status == "down" else 200)


async def _lookup_depth(client: AsyncClient) -> int | None:
    try:
        return (await queue_depths(client.redis))[LOOKUP_QUEUE]
    except (OSError, RedisError):
        return None


async def metrics(request: web.Request) -> web.Response:
    if not request.app[KEYS].operator(bearer(request)):
        raise GatewayError(401, "invalid_api_key", "/metrics needs 'Authorization: Bearer <DEJAVU_METRICS_KEY>'",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
