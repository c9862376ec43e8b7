"""What other services call: enqueue chat requests and read their replies."""

from producer.client import Client, ReplyTimeout

__all__ = ["Client", "ReplyTimeout"]
