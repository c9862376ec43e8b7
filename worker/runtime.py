"""Per-process resources: one event loop, Redis and Postgres pools, an HTTP session, the embedder.

Opened once per worker process and reused by every task it runs. Where tasks run one at a time on the main
thread (solo and prefork pools: the lookup nodes) the loop runs on that thread, only while a task runs: handing
each task to a loop thread and waiting for it cost two thread wake-ups per task. A threads pool (LLM and
write-back nodes: many LLM calls in flight) gets a loop thread of its own that all its task threads share, with
one set of pools. The embedder is loaded only where lookups run; LLM and write-back nodes never pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from pgvector.asyncpg import register_vector
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.keys import PG_DOWN_KEY, PG_DOWN_TTL_S
from worker.autopipe import AutoPipeline
from worker.coalesce import Coalescer
from worker.embed import Embedder
from worker.errors import REDIS_DOWN
from worker.handoff import LLMQueue
from worker.llm import LLMClient
from worker.llm_slots import LLMSlots
from worker.reply import ReplyPublisher
from worker.settings import EmbedProfile, Settings
from worker.tiers.pgvector import PgTier
from worker.tiers.redis import RedisTier

log = logging.getLogger(__name__)
T = TypeVar("T")


def redis_client(url: str) -> aioredis.Redis:
    """A pooled client that reconnects by itself when Redis restarts (and pipelines a batch's commands,
    worker.autopipe)."""
    return AutoPipeline.from_url(
        url,
        protocol=2,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=6),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
    )


async def _init_pg_connection(conn: asyncpg.Connection) -> None:
    await register_vector(conn)


@dataclass
class Runtime:
    settings: Settings
    profile: EmbedProfile
    loop: asyncio.AbstractEventLoop
    redis: aioredis.Redis
    pg_pool: asyncpg.Pool
    http: aiohttp.ClientSession
    redis_tier: RedisTier
    pg_tier: PgTier
    llm: LLMClient
    replies: ReplyPublisher
    coalescer: Coalescer
    llm_queue: LLMQueue
    _embedder: Embedder | None = None
    _embedder_lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _pg_down_reported: float = float("-inf")

    _owner: int | None = None

    @classmethod
    def open(cls, settings: Settings, loop_thread: bool = True) -> Runtime:
        """`loop_thread`: run the loop on a thread of its own, for callers on several threads; else on the
        calling thread, during each `run`, and only that thread may call `run`."""
        loop = asyncio.new_event_loop()
        if not loop_thread:
            rt = loop.run_until_complete(cls._open(settings, loop))
            rt._owner = threading.get_ident()
            return rt
        thread = threading.Thread(target=loop.run_forever, name="dejavu-loop", daemon=True)
        thread.start()
        rt = asyncio.run_coroutine_threadsafe(cls._open(settings, loop), loop).result()
        rt._thread = thread
        return rt

    @classmethod
    async def _open(cls, settings: Settings, loop: asyncio.AbstractEventLoop) -> Runtime:
        profile = settings.profile()
        redis = redis_client(settings.redis_url)
        redis_tier = RedisTier(redis, profile.name, profile.dim, settings.redis_ttl_s, settings.redis_ef_runtime)
        await redis_tier.ensure_index()
        # No connection up front (min_size 0, schema on first use): a worker starts and serves the other tiers
        # while Postgres is down, and picks it up when it returns.
        pg_pool = await asyncpg.create_pool(
            settings.pg_dsn,
            min_size=0,
            max_size=settings.pg_pool_size,
            init=_init_pg_connection,
            # Iterative scans keep filtered HNSW queries from coming back empty in small scopes.
            server_settings={"hnsw.ef_search": str(settings.pg_ef_search), "hnsw.iterative_scan": "strict_order"},
        )
        http = aiohttp.ClientSession()
        llm = LLMClient(
            http,
            settings.llm_url,
            settings.llm_api_key,
            settings.llm_timeout_s,
            settings.llm_max_retries,
            settings.llm_backoff_s,
            # One attempt holds a slot; a dead holder's slot frees when its longest attempt would have ended.
            LLMSlots(redis, settings.llm_max_concurrency, settings.llm_timeout_s + 5),
        )
        return cls(
            settings=settings,
            profile=profile,
            loop=loop,
            redis=redis,
            pg_pool=pg_pool,
            http=http,
            redis_tier=redis_tier,
            pg_tier=PgTier(pg_pool, settings.pg_dsn, profile.name, profile.dim, redis_tier.forgotten),
            llm=llm,
            replies=ReplyPublisher(redis, settings.reply_ttl_s),
            coalescer=Coalescer(redis, settings.coalesce_lease_s),
            llm_queue=LLMQueue(redis),
        )

    @property
    def embedder(self) -> Embedder:
        return self.load_embedder()

    def load_embedder(self) -> Embedder:
        """The ONNX session, loaded and warmed on first use (at process start on lookup nodes)."""
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    embedder = Embedder(self.profile, self.settings.model_cache_dir, self.settings.embed_threads)
                    embedder.warm_up()
                    self._embedder = embedder
        return self._embedder

    async def report_pg_down(self, exc: BaseException) -> None:
        """Tell producers (the gateway's /healthz) that Postgres failed, for PG_DOWN_TTL_S after the last report."""
        now = time.monotonic()
        if now - self._pg_down_reported < PG_DOWN_TTL_S / 3:  # one write per process per 10 s is enough
            return
        self._pg_down_reported = now
        with contextlib.suppress(*REDIS_DOWN):  # Redis down too: /healthz says so by itself
            await self.redis.set(PG_DOWN_KEY, f"{time.time():.0f} {type(exc).__name__}: {exc}", ex=PG_DOWN_TTL_S)

    async def report_pg_up(self) -> None:
        """Postgres answered: withdraw this process's report of it being down, if it made one (a flag check
        otherwise, nothing sent)."""
        if self._pg_down_reported == float("-inf"):
            return
        self._pg_down_reported = float("-inf")
        with contextlib.suppress(*REDIS_DOWN):
            await self.redis.delete(PG_DOWN_KEY)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this process's loop and wait for it."""
        if self._thread is not None:
            return asyncio.run_coroutine_threadsafe(coro, self.loop).result()
        if threading.get_ident() != self._owner:
            coro.close()
            raise RuntimeError("this runtime's loop runs on the thread that opened it: open it with loop_thread=True")
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        async def _close() -> None:
            await self.http.close()
            await self.pg_pool.close()
            await self.redis.aclose()

        self.run(_close())
        # The loop is closed once stopped, or its selector's sockets outlive the runtime.
        if self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
        self.loop.close()


_current: Runtime | None = None
_lock = threading.Lock()


def current(settings: Settings) -> Runtime:
    """This process's runtime, opened on first use."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                # Solo and prefork pools run tasks on the main thread; a threads pool on threads of its own.
                _current = Runtime.open(settings, loop_thread=threading.current_thread() is not threading.main_thread())
                log.info("runtime ready: profile %s, dim %d", _current.profile.name, _current.profile.dim)
    return _current


def shutdown() -> None:
    global _current
    if _current is not None:
        _current.close()
        _current = None
