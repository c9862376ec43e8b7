"""/healthz and /metrics: what a load balancer and the operator see.

The status is computed at most once a second (`Checks`) and shared by every /healthz in between, so a load
balancer polling hard costs one Redis ping and one worker ping a second, not a Celery broadcast per call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from producer.aclient import AsyncClient
from producer.gateway.auth import KEYS, bearer
from producer.gateway.errors import GatewayError
from producer.gateway.state import CLIENT, METRICS, SETTINGS
from schemas.health import Health, health
from schemas.keys import LOOKUP_QUEUE, PG_DOWN_KEY

HEALTH_TIMEOUT_S = 3.0
# How old a computed status may be when it answers /healthz.
REFRESH_S = 1.0


@dataclass
class Checks:
    """The last status and the checks behind it, recomputed when older than REFRESH_S (one refresh at a time)."""

    verdict: Health | None = None
    report: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def current(self, app: web.Application) -> tuple[Health, dict[str, Any]]:
        async with self.lock:
            if self.verdict is None or time.monotonic() - self.at >= REFRESH_S:
                app[METRICS].health_checks.inc()
                self.verdict, self.report = await _check(app[CLIENT], app[SETTINGS].max_queue_depth)
                self.at = time.monotonic()
            return self.verdict, self.report


CHECKS = web.AppKey("checks", Checks)


async def _check(client: AsyncClient, max_depth: int) -> tuple[Health, dict[str, Any]]:
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
        len(report["workers"].get("names", ())), depth, max_depth,
    )  # fmt: skip
    return verdict, report


async def healthz(request: web.Request) -> web.Response:
    """ok / degraded / down for anyone (a load balancer); the checks and reasons only for the operator
    (producer.gateway.auth.ApiKeys.operator): exception text and worker names are not for callers at large."""
    verdict, report = await request.app[CHECKS].current(request.app)
    stuck = request.app[CLIENT].inbox.stuck()
    status, reasons = verdict.status, list(verdict.reasons)
    if stuck is not None:
        reasons.append(stuck)
        status = "degraded" if status == "ok" else status
    body: dict[str, Any] = {"status": status}
    if request.app[KEYS].operator(bearer(request)):
        body.update(report, reasons=reasons)
    # Degraded still answers requests: a load balancer should keep sending them.
    return web.json_response(body, status=503 if status == "down" else 200)


async def _lookup_depth(client: AsyncClient) -> int | None:
    try:
        return int(await client.redis.llen(LOOKUP_QUEUE))
    except (OSError, RedisError):
        return None


async def metrics(request: web.Request) -> web.Response:
    if not request.app[KEYS].operator(bearer(request)):
        message = "/metrics needs 'Authorization: Bearer <DEJAVU_METRICS_KEY>' (the operator's key)"
        raise GatewayError(401, "invalid_api_key", message, headers={"WWW-Authenticate": "Bearer"})
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
