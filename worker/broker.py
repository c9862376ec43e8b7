"""Kombu's Redis transport, hardened against two ways stock kombu stops a whole worker node:

- a message on a queue that is not a Kombu envelope is dropped with a log line (stock kombu raises from
  the poll loop: "Unrecoverable error: JSONDecodeError", so one stray LPUSH would stop the pool);
- a Redis restart: when the consumer closes its lost connection, kombu clears the transport's client
  first and then closes the channel, whose last restore of unacked messages (or a late ack from a
  threads-pool task) builds a new connection pool from that client: "Unrecoverable error:
  AttributeError('NoneType' object has no attribute 'hostname')". The channel keeps the connection
  parameters it was opened with instead.
"""

from __future__ import annotations

import logging
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class Channel(kombu_redis.Channel):
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
