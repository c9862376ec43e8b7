"""The gateway's aiohttp app: the routes, the error middleware, the shared client, and `main`."""

from __future__ import annotations

import argparse
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import uvloop
from aiohttp import web

from producer import gateway
from producer.aclient import AsyncClient
from producer.gateway import cache
from producer.gateway.auth import KEYS, ApiKeys, loopback
from producer.gateway.errors import GatewayError
from producer.gateway.headers import REQUEST_ID_HEADER, TIER_HEADER
from producer.gateway.health import CHECKS, Checks, healthz, metrics
from producer.gateway.routes import ask, chat_completions, feedback
from producer.gateway.state import CLIENT, METRICS, REQUEST_ID, SETTINGS
from producer.metrics import GatewayMetrics
from producer.settings import ProducerSettings, get_settings, tenant_keys
from schemas import messages

log = logging.getLogger(__name__)

TENANT_PATTERN = re.compile(messages.TENANT_PATTERN)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns every failure into an OpenAI-style JSON error and records the request in the metrics. Every response
    carries the request id (x-request-id); the log has what went wrong under it, the caller a message alone."""
    m, rid = request.app[METRICS], uuid.uuid4().hex
    request[REQUEST_ID] = rid
    resource = request.match_info.route.resource
    endpoint = resource.canonical if resource is not None else "unmatched"
    m.requests.labels(endpoint).inc()
    start = time.perf_counter()
    try:
        response = await handler(request)
        outcome = response.headers.get(TIER_HEADER, "ok")
    except GatewayError as exc:
        response, outcome = exc.response(), "error"
        m.errors.labels(exc.code).inc()
        if exc.status >= 500 or exc.detail is not None:
            log.warning("request %s: %d %s: %s", rid, exc.status, exc.code, exc.detail or exc.message)
    except web.HTTPException as exc:  # aiohttp's own: 404, 405, 413 while reading
        code = exc.reason.lower().replace(" ", "_")
        response = GatewayError(exc.status, code, exc.text or exc.reason).response()
        outcome = "error"
        m.errors.labels(code).inc()
    except Exception:
        log.exception("request %s: unexpected error on %s %s", rid, request.method, request.path)
        response, outcome = GatewayError(500, "internal", "internal gateway error").response(), "error"
        m.errors.labels("internal").inc()
    m.latency.labels(endpoint, outcome).observe(time.perf_counter() - start)
    if not response.prepared:  # a stream sent its headers already, with the id
        response.headers[REQUEST_ID_HEADER] = rid
    return response


async def _client(app: web.Application) -> AsyncIterator[None]:
    # One Redis pool and one Celery producer for the whole process.
    app[CLIENT] = AsyncClient(app[SETTINGS])
    yield
    await app[CLIENT].aclose()


def make_app(settings: ProducerSettings | None = None, host: str = "127.0.0.1") -> web.Application:
    """The gateway for `settings`, to listen on `host` (which decides whether /metrics is open without a key)."""
    settings = settings or get_settings()
    bad = [t for t in settings.gateway_api_keys.values() if isinstance(t, str) and not TENANT_PATTERN.match(t)]
    if bad:
        raise ValueError(f"DEJAVU_GATEWAY_API_KEYS maps keys to invalid tenant names {bad}: use [A-Za-z0-9_.-]{{1,64}}")
    if not settings.gateway_api_keys:
        log.warning("DEJAVU_GATEWAY_API_KEYS is empty: every /v1 request will be refused with 401")
    app = web.Application(client_max_size=settings.gateway_max_body_bytes, middlewares=[observe])
    app[SETTINGS] = settings
    metrics_key = settings.metrics_key.get_secret_value() if settings.metrics_key is not None else None
    app[KEYS] = ApiKeys(tenant_keys(settings), metrics_key, settings.metrics_public or loopback(host))
    if metrics_key is None and not (settings.metrics_public or loopback(host)):
        log.warning("DEJAVU_METRICS_KEY is unset: /metrics and the detailed /healthz are refused on %s", host)
    app[METRICS] = GatewayMetrics()
    app[CHECKS] = Checks()
    app.cleanup_ctx.append(_client)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/ask", ask)
    app.router.add_post("/v1/feedback", feedback)
    app.router.add_post("/v1/cache/lookup", cache.lookup)
    app.router.add_post("/v1/cache/store", cache.store)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m producer.gateway", description=gateway.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(
        make_app(host=args.host),
        # uvloop's event loop: the gateway is one Python process on one core, and its loop is most of the CPU
        # a request costs there.
        loop=uvloop.new_event_loop(),
        host=args.host,
        port=args.port,
        access_log=logging.getLogger("aiohttp.access") if args.access_log else None,
        print=lambda msg: log.info("%s", msg.strip()),
    )
