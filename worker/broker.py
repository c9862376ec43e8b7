"""Kombu's Redis transport, hardened against two ways stock kombu stops a whole worker node:

- a message on a queue that is not a Kombu envelope is dropped with a log line (stock kombu raises from
  the poll loop: "Unrecoverable error: JSONDecodeError", so one stray LPUSH would stop the pool);
- a Redis restart: when the consumer closes its lost connection, kombu clears the transport's client
  first and then closes the channel, whose last restore of unacked messages (or a late ack from a
  threads-pool task) builds a new connection pool from that client: "Unrecoverable error:
  AttributeError('NoneType' object has no attribute 'hostname')". The channel keeps the connection
  parameters it was opened with instead.

It also reuses one Redis client per connection pool where stock kombu builds one per delivery and per ack, and
marks each request it takes (a lookup, or a miss's LLM task) as held by this node, in the same MULTI as its
unacked copy (producer.resend reads the mark: a request taken off a queue that no node holds was lost and is
sent again).
"""

from __future__ import annotations

import logging
from queue import Empty
from time import time
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from schemas.keys import LOOKUP_ONLY_TASK, LOOKUP_TASK, REQUEST_HEADER, STORE_TASK, TAKEN_PREFIX

log = logging.getLogger(__name__)


# The tasks a producer enqueues on the lookup queue, each under its request's id.
REQUEST_TASKS = (LOOKUP_TASK, LOOKUP_ONLY_TASK, STORE_TASK)


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: Any) -> None:
        # kombu's own append (the unacked copy and its index), plus the taken mark of a lookup request; one MULTI.
        delivery = message.delivery_info
        headers = message.headers or {}
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time()})
            copy = [message._raw, delivery["exchange"], delivery["routing_key"]]
            pipe.hset(self.unacked_key, delivery_tag, dumps(copy))
            # A request's own task (ask, lookup-only, store) has the request id for its id; an LLM task names its
            # request in a header (worker.handoff).
            request_id = headers["id"] if headers.get("task") in REQUEST_TASKS else headers.get(REQUEST_HEADER)
            if self.channel.taken_ttl and request_id:
                stage = "lookup" if request_id == headers.get("id") else "llm"
                pipe.set(TAKEN_PREFIX + request_id, f"{stage} {self.channel.node_name}", ex=self.channel.taken_ttl)
            pipe.execute()
            virtual.QoS.append(self, message, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    # Transport options of our own (worker.app): how long a taken mark lasts, and the node that writes it.
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "taken_ttl", "node_name")  # type: ignore[assignment]
    taken_ttl = 0
    node_name = "?"

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
