"""Kombu's Redis transport, hardened against two ways stock kombu stops a whole worker node:

- a message on a queue that is not a Kombu envelope is dropped with a log line (stock kombu raises from
  the poll loop: "Unrecoverable error: JSONDecodeError", so one stray LPUSH would stop the pool);
- a Redis restart: when the consumer closes its lost connection, kombu clears the transport's client
  first and then closes the channel, whose last restore of unacked messages (or a late ack from a
  threads-pool task) builds a new connection pool from that client: "Unrecoverable error:
  AttributeError('NoneType' object has no attribute 'hostname')". The channel keeps the connection
  parameters it was opened with instead.

It also reuses one Redis client per connection pool where stock kombu builds one per delivery and per ack.
"""

from __future__ import annotations

import logging
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class Channel(kombu_redis.Channel):
    def _create_client(self, asynchronous: bool = False) -> Any:
        # Stock kombu builds a new redis.Redis for every delivery and every ack (its QoS bookkeeping): ~90 us of
        # Python each in redis-py 8 (its response-callback table), two or three per task. One client per pool does
        # the same work (a connection from the pool per command) and is safe to share between threads.
        if asynchronous:
            return super()._create_client(asynchronous)
        pool = self.pool
        client = self.__dict__.get("_sync_client")
        if client is None or client.connection_pool is not pool:
            client = self.__dict__["_sync_client"] = super()._create_client()
        return client

    def _connparams(self, asynchronous: bool = False) -> Any:
        known: dict[bool, dict[str, Any]] = self.__dict__.setdefault("_known_connparams", {})
        if self.connection.client is None and asynchronous in known:
            return dict(known[asynchronous])
        params = super()._connparams(asynchronous)
        known[asynchronous] = dict(params)
        return params

    def _brpop_read(self, **options: Any) -> Any:
        try:
            return super()._brpop_read(**options)
        except (ValueError, TypeError) as exc:
            log.error("dropped a broker message that is not a Kombu envelope: %s", exc)
            raise Empty() from exc

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        try:
            return super()._get(queue)
        except (ValueError, TypeError) as exc:
            log.error("dropped a broker message on %s that is not a Kombu envelope: %s", queue, exc)
            raise Empty() from exc


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make `redis://` (and `rediss://`) broker URLs use this transport in this process."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
