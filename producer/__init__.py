"""What other services call: enqueue chat requests and read their replies."""

from producer.aclient import AsyncClient
from producer.base import Overloaded, ReplyTimeout
from producer.client import Client

__all__ = ["AsyncClient", "Client", "Overloaded", "ReplyTimeout"]
