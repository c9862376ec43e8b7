"""HTTP gateway: the cache for services in any language, OpenAI-compatible or native JSON.

    python -m producer.gateway --host 127.0.0.1 --port 8080

Every /v1 route needs `Authorization: Bearer <key>`; the key names the tenant (DEJAVU_GATEWAY_API_KEYS),
so a caller can only ever read, or give feedback on, its own tenant's cache. Errors have OpenAI's shape,
`{"error": {"message", "type", "code"}}`; docs/wire.md lists the routes, statuses and headers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import uvloop
from aiohttp import web
from kombu.exceptions import OperationalError
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from redis.exceptions import RedisError

from producer.aclient import AsyncClient
from producer.base import Overloaded, ReplyTimeout
from producer.metrics import GatewayMetrics
from producer.openai_compat import Chunks, CompletionBody, completion
from producer.settings import ProducerSettings, get_settings
from schemas import messages
from schemas.cache import Scope, entry_id, question_hash
from schemas.health import health
from schemas.keys import LOOKUP_QUEUE, PG_DOWN_KEY
from schemas.messages import (
    ENTRY_ID_PATTERN,
    MAX_REASON_CHARS,
    CacheControl,
    ChatDelta,
    ChatMessage,
    ChatReply,
    ChatRequest,
    ErrorCode,
    ForgetReply,
    Tier,
)

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", ProducerSettings)
CLIENT = web.AppKey("client", AsyncClient)
METRICS = web.AppKey("metrics", GatewayMetrics)

TIER_HEADER = "x-dejavu-tier"
# On a hit: the tokens the LLM spent on the answer when it made it, which serving it from the cache saved.
SAVED_HEADER = "x-dejavu-saved-tokens"
# The OpenAI endpoint's body has no deadline field: callers set one with a header (seconds, or Unix time).
TIMEOUT_HEADER = "x-dejavu-timeout"
DEADLINE_HEADER = "x-dejavu-deadline"
TENANT_PATTERN = re.compile(messages.TENANT_PATTERN)
HEALTH_TIMEOUT_S = 3.0

# A worker's error reply, as an HTTP status.
STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.DEADLINE: 504,
    ErrorCode.LLM_ERROR: 502,
    ErrorCode.LLM_TIMEOUT: 504,
    ErrorCode.INTERNAL: 500,
}


class GatewayError(Exception):
    """Ends a request with an error response; `body` replaces the OpenAI-style body (native /v1/ask replies)."""

    def __init__(
        self, status: int, code: str, message: str, *, body: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.body, self.headers = status, code, message, body, headers

    def payload(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": error_type(self.status), "param": None, "code": self.code}}

    def response(self) -> web.Response:
        text = self.body or json.dumps(self.payload())
        return web.Response(status=self.status, text=text, content_type="application/json", headers=self.headers)


def error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    return "invalid_request_error" if status < 500 else "api_error"


class AskBody(BaseModel):
    """The native request: a question or messages; the tenant comes from the API key, the id from the gateway."""

    model_config = ConfigDict(extra="forbid")

    question: str | None = None
    messages: list[ChatMessage] | None = None
    model: str | None = None
    system: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    deadline: float | None = None
    # OpenAI generation fields and extensions by name (forwarded, part of the scope), and cache control.
    params: dict[str, Any] | None = None
    cache: CacheControl | None = None

    @model_validator(mode="after")
    def _one_question(self) -> AskBody:
        if (self.question is None) == (self.messages is None):
            raise ValueError("send either question or messages")
        if self.timeout is not None and self.deadline is not None:
            raise ValueError("send either timeout or deadline")
        return self


class FeedbackBody(BaseModel):
    """Feedback on a cached answer; the tenant comes from the API key, so a caller only reaches its own entries."""

    model_config = ConfigDict(extra="forbid")

    # A reply's entry_id (header x-dejavu-entry).
    entry_id: str = Field(pattern=ENTRY_ID_PATTERN)
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)
    # The answer that was served: blocked even if its write-back has not landed yet.
    answer: str | None = None


# --- request handling steps, each ending the request with a GatewayError when it cannot go on ---


class ApiKeys:
    """API keys kept only as SHA-256 digests, and looked up in constant time: every stored digest is compared,
    with hmac.compare_digest, whatever the presented key."""

    def __init__(self, tenants: dict[str, str], metrics_key: str | None) -> None:
        self._tenants = [(_digest(key), tenant) for key, tenant in tenants.items()]
        self._metrics = None if metrics_key is None else _digest(metrics_key)

    def tenant(self, key: str) -> str | None:
        presented, found = _digest(key), None
        for digest, tenant in self._tenants:
            if hmac.compare_digest(presented, digest):
                found = tenant
        return found

    def operator(self, key: str | None) -> bool:
        """Whether `key` opens /metrics and the detailed /healthz: any key when DEJAVU_METRICS_KEY is unset."""
        if self._metrics is None:
            return True
        return key is not None and hmac.compare_digest(_digest(key), self._metrics)


KEYS = web.AppKey("keys", ApiKeys)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bearer(request: web.Request) -> str | None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def tenant_of(request: web.Request) -> str:
    key = bearer(request)
    if key is None:
        raise GatewayError(401, "missing_api_key", "send an API key as 'Authorization: Bearer <key>'",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    tenant = request.app[KEYS].tenant(key)
    if tenant is None:
        raise GatewayError(401, "invalid_api_key", "the API key is not known to this gateway",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return tenant


async def read_json(request: web.Request) -> Any:
    limit = request.app[SETTINGS].gateway_max_body_bytes
    too_large = GatewayError(413, "body_too_large", f"the request body is over the limit of {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise GatewayError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    except RecursionError:  # json's decoder recurses once per nesting level: [[[[...]]]] deep enough ends here
        raise GatewayError(400, "invalid_json", "the request body is nested too deeply") from None


M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise GatewayError(400, "invalid_request", describe(exc)) from None


def describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


def check_deadline(timeout: float | None, deadline: float | None) -> None:
    if deadline is not None and deadline <= time.time():
        raise GatewayError(504, ErrorCode.DEADLINE.value, "the request's deadline has already passed")
    if timeout is not None and timeout <= 0:
        raise GatewayError(504, ErrorCode.DEADLINE.value, "the request's timeout is not positive")


def header_deadline(request: web.Request) -> tuple[float | None, float | None]:
    values: list[float | None] = []
    for name in (TIMEOUT_HEADER, DEADLINE_HEADER):
        raw = request.headers.get(name)
        try:
            values.append(None if raw is None else float(raw))
        except ValueError:
            raise GatewayError(400, "invalid_request", f"header {name} must be a number, not {raw!r}") from None
    return values[0], values[1]


def build(client: AsyncClient, tenant: str, **fields: Any) -> ChatRequest:
    check_deadline(fields.get("timeout"), fields.get("deadline"))
    try:
        return client.request(tenant=tenant, **fields)
    except ValidationError as exc:
        raise GatewayError(400, "invalid_request", describe(exc)) from None
    except ValueError as exc:
        raise GatewayError(400, "invalid_request", str(exc)) from None


async def answer(request: web.Request, chat: ChatRequest) -> ChatReply:
    reply = await queued(request.app[CLIENT].ask_request(chat))
    if reply.ok:
        request.app[METRICS].answered(reply, chat.tenant)
    return reply


async def queued(call: Awaitable[M]) -> M:
    """Wait for a call through the queues; a timeout, backpressure or an unreachable Redis becomes an HTTP error."""
    try:
        return await call
    except ReplyTimeout as exc:
        raise GatewayError(504, "timeout", str(exc)) from None
    except Overloaded as exc:
        headers = {"Retry-After": str(exc.retry_after_s)}
        raise GatewayError(503, "overloaded", str(exc), headers=headers) from None
    except (RedisError, OSError, OperationalError) as exc:
        raise GatewayError(503, "unavailable", f"the request queue is unreachable: {exc}") from None


def failed(reply: ChatReply | ForgetReply, body: str | None = None) -> GatewayError:
    assert reply.error is not None
    code = reply.error.code
    return GatewayError(STATUS_BY_CODE.get(code, 500), code.value, reply.error.message, body=body)


def cache_headers(reply: ChatReply) -> dict[str, str]:
    headers = {"x-dejavu-request-id": reply.request_id}
    if reply.tier is not None:
        headers[TIER_HEADER] = reply.tier.value
    if reply.similarity is not None:
        headers["x-dejavu-similarity"] = f"{reply.similarity:.6f}"
    if reply.entry_id is not None:
        headers["x-dejavu-entry"] = reply.entry_id
    if reply.saved is not None:
        headers[SAVED_HEADER] = str(reply.saved.total_tokens)
    return headers


# --- routes ---


async def chat_completions(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request)
    body = parse(CompletionBody, await read_json(request))
    timeout, deadline = header_deadline(request)
    client = request.app[CLIENT]
    chat = build(
        client, tenant, messages=guarded(body.chat_messages), model=body.model, timeout=timeout, deadline=deadline,
        params=body.params(), stream=body.stream, cache=cache_control(request),
    )  # fmt: skip
    if not body.stream:
        reply = await answer(request, chat)
        if not reply.ok:
            raise failed(reply)
        return web.json_response(completion(chat, reply), headers=cache_headers(reply))
    return await stream_completion(request, chat, Chunks(chat, body.include_usage))


async def stream_completion(request: web.Request, chat: ChatRequest, chunks: Chunks) -> web.StreamResponse:
    """A hit, or an error before anything was sent, is answered whole; a miss is relayed delta by delta while the
    LLM writes it. A stream that breaks after it began ends with an error event, which OpenAI's SDKs raise."""
    events = request.app[CLIENT].stream_request(chat)
    first = await queued(anext(events))
    if isinstance(first, ChatReply):
        if not first.ok:
            raise failed(first)
        request.app[METRICS].answered(first, chat.tenant)
        stream = await open_stream(request, cache_headers(first))
        for chunk in chunks.whole(first):
            await send_event(stream, chunk)
        return await close_stream(stream)
    # The entry the answer will be stored as is known before the answer: it names the scope and the question.
    scope = Scope.of(chat, request.app[SETTINGS].scope_includes_history)
    headers = {"x-dejavu-request-id": chat.request_id, TIER_HEADER: Tier.LLM.value,
               "x-dejavu-entry": entry_id(scope, question_hash(chat.question))}  # fmt: skip
    stream = await open_stream(request, headers)
    await send_event(stream, chunks.start())
    await send_event(stream, chunks.delta(first))
    try:
        async for event in events:
            if isinstance(event, ChatDelta):
                await send_event(stream, chunks.delta(event))
            elif event.ok:
                request.app[METRICS].answered(event, chat.tenant)
                for chunk in chunks.end(event):
                    await send_event(stream, chunk)
            else:
                await send_event(stream, failed(event).payload())
    except GatewayError as exc:
        await send_event(stream, exc.payload())
    except (ReplyTimeout, RedisError, OSError, OperationalError) as exc:
        await send_event(stream, GatewayError(504, "timeout", f"the stream broke off: {exc}").payload())
    return await close_stream(stream)


async def open_stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    stream = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await stream.prepare(request)
    return stream


async def send_event(stream: web.StreamResponse, data: dict[str, Any]) -> None:
    await stream.write(f"data: {json.dumps(data)}\n\n".encode())


async def close_stream(stream: web.StreamResponse) -> web.StreamResponse:
    await stream.write(b"data: [DONE]\n\n")
    await stream.write_eof()
    return stream


def cache_control(request: web.Request) -> CacheControl:
    """The Cache-Control request header's no-cache, no-store and max-age=N; other directives are ignored."""
    fields: dict[str, Any] = {}
    for directive in request.headers.get("Cache-Control", "").lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-cache", "no-store"):
            fields[name.replace("-", "_")] = True
        elif name == "max-age":
            if not value.strip().isdigit():
                raise GatewayError(
                    400, "invalid_request", f"Cache-Control max-age must be whole seconds, not {value!r}"
                )
            fields["max_age_s"] = int(value)
    return CacheControl(**fields)


def guarded(make: Callable[[], T]) -> T:
    """A body conversion that raises ValueError for what the cache cannot honour, as a 400."""
    try:
        return make()
    except ValueError as exc:
        raise GatewayError(400, "invalid_request", str(exc)) from None


async def ask(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    body = parse(AskBody, await read_json(request))
    fields = body.model_dump(exclude_none=True, exclude={"question", "messages"})
    chat = build(request.app[CLIENT], tenant, question=body.question, messages=body.messages, **fields)
    reply = await answer(request, chat)
    payload = reply.model_dump_json()
    if not reply.ok:
        raise failed(reply, body=payload)
    return web.Response(text=payload, content_type="application/json", headers=cache_headers(reply))


async def feedback(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    body = parse(FeedbackBody, await read_json(request))
    client = request.app[CLIENT]
    call = client.feedback_call(body.entry_id, reason=body.reason, answer=body.answer, tenant=tenant)
    reply = await queued(client.run_forget(call))
    payload = reply.model_dump_json()
    if not reply.ok:
        raise failed(reply, body=payload)
    # Another tenant's entry is "not found" too: the answer must not tell whether it exists.
    if not reply.found and not reply.blocked:
        raise GatewayError(404, "entry_not_found", f"no entry {body.entry_id} is stored for this API key's tenant")
    return web.Response(text=payload, content_type="application/json")


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
        return int(await client.redis.llen(LOOKUP_QUEUE))
    except (OSError, RedisError):
        return None


async def metrics(request: web.Request) -> web.Response:
    if not request.app[KEYS].operator(bearer(request)):
        raise GatewayError(401, "invalid_api_key", "/metrics needs 'Authorization: Bearer <DEJAVU_METRICS_KEY>'",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# --- the app ---

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns every failure into an OpenAI-style JSON error and records the request in the metrics."""
    m = request.app[METRICS]
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
    except web.HTTPException as exc:  # aiohttp's own: 404, 405, 413 while reading
        code = exc.reason.lower().replace(" ", "_")
        response = GatewayError(exc.status, code, exc.text or exc.reason).response()
        outcome = "error"
        m.errors.labels(code).inc()
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        response, outcome = GatewayError(500, "internal", "internal gateway error").response(), "error"
        m.errors.labels("internal").inc()
    m.latency.labels(endpoint, outcome).observe(time.perf_counter() - start)
    return response


async def _client(app: web.Application) -> AsyncIterator[None]:
    # One Redis pool and one Celery producer for the whole process.
    app[CLIENT] = AsyncClient(app[SETTINGS])
    yield
    await app[CLIENT].aclose()


def make_app(settings: ProducerSettings | None = None) -> web.Application:
    settings = settings or get_settings()
    bad = [tenant for tenant in settings.gateway_api_keys.values() if not TENANT_PATTERN.match(tenant)]
    if bad:
        raise ValueError(f"DEJAVU_GATEWAY_API_KEYS maps keys to invalid tenant names {bad}: use [A-Za-z0-9_.-]{{1,64}}")
    if not settings.gateway_api_keys:
        log.warning("DEJAVU_GATEWAY_API_KEYS is empty: every /v1 request will be refused with 401")
    app = web.Application(client_max_size=settings.gateway_max_body_bytes, middlewares=[observe])
    app[SETTINGS] = settings
    metrics_key = settings.metrics_key.get_secret_value() if settings.metrics_key is not None else None
    app[KEYS] = ApiKeys(settings.gateway_api_keys, metrics_key)
    app[METRICS] = GatewayMetrics()
    app.cleanup_ctx.append(_client)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/ask", ask)
    app.router.add_post("/v1/feedback", feedback)
    from producer import cache_api  # builds on this module's request steps, so imported once it is loaded

    cache_api.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m producer.gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(
        make_app(),
        # uvloop's event loop: the gateway is one Python process on one core, and its loop is most of the CPU
        # a request costs there.
        loop=uvloop.new_event_loop(),
        host=args.host,
        port=args.port,
        access_log=logging.getLogger("aiohttp.access") if args.access_log else None,
        print=lambda msg: log.info("%s", msg.strip()),
    )


if __name__ == "__main__":
    from producer.gateway import main as run  # one module instance, the one producer.cache_api imports

    run()
