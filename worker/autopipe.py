"""A Redis client that, inside `batched()`, sends the commands its coroutines issue in one loop turn as one pipeline.

A batch of lookups (worker.batch) runs each request through the same pipeline code as a lookup alone, as one
coroutine per request. Their exact lookups are issued in the same turn of the loop, so they go out as one
pipeline; so do their KNN queries (each issued after its own question was embedded, alone) and their reply
scripts. Each command keeps its own reply or error. Outside `batched()` the client is a plain redis.asyncio.Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis

Pending = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


class AutoPipeline(aioredis.Redis):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batched = 0
        self._pending: list[Pending] = []
        self._sending: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        self._batched += 1
        try:
            yield
        finally:
            self._batched -= 1

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if not self._batched:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((args, options, future))
        if len(self._pending) == 1:
            # After the callbacks already due: every coroutine woken in this turn adds its command first.
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(pending))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, pending: list[Pending]) -> None:
        if len(pending) == 1:
            (args, options, future) = pending[0]
            try:
                _settle(future, await super().execute_command(*args, **options))  # type: ignore[no-untyped-call]
            except Exception as exc:
                _settle(future, exc)
            return
        try:
            async with self.pipeline(transaction=False) as pipe:
                for args, options, _ in pending:
                    pipe.execute_command(*args, **options)
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed: every command of the pipeline fails with it
            for *_, future in pending:
                _settle(future, exc)
            return
        for (*_, future), result in zip(pending, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():  # its caller was cancelled
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
