"""What other services call: enqueue chat requests and read their replies."""

from producer.aclient import AsyncClient
from producer.base import Overloaded, ReplyTimeout
from producer.client import Client
from producer.errors import ReplyFailed, raise_for_error

__all__ = ["AsyncClient", "Client", "Overloaded", "ReplyFailed", "ReplyTimeout", "raise_for_error"]
