"""Kombu's Redis transport, hardened: a message on a queue that is not a Kombu envelope is dropped
with a log line. Stock kombu raises from the poll loop instead, and the whole worker node exits
("Unrecoverable error: JSONDecodeError"): one stray LPUSH would stop the pool.
"""

from __future__ import annotations

import logging
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class Channel(kombu_redis.Channel):
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
