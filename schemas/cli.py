"""What every `dejavu` subcommand shares, on either side: its shape and the exit codes.

The `dejavu` command (producer.cli) finds its subcommands through the `dejavu.commands` entry points: the
producer's own (ask, forget, feedback) and the worker side's tools (worker.tools.cli: status, backfill, eval,
calibrate). A subcommand module defines its arguments at import and imports what it needs only when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

EXIT_OK = 0
EXIT_ERROR_REPLY = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
# `dejavu status`: requests are answered, but something underneath is down.
EXIT_DEGRADED = 4
# `dejavu lookup`: nothing cached answers the question (ask your model, then `dejavu store`).
EXIT_MISS = 5
EXIT_INTERRUPTED = 130

EPILOG = """exit codes:
  0  ok (status: Redis and Postgres reachable, at least one worker answers, the lookup queue under its limit)
  1  the cache answered with an error reply (its code and message go to stderr);
     calibrate: no threshold reaches the target precision, or too few pairs
  2  usage error: bad arguments or an invalid request
  3  no reply in time, overloaded (queue too deep), or Redis / Postgres / the workers unreachable
     (status: down: Redis unreachable or no worker answers)
  4  status only: degraded, requests are answered but Postgres is down or the lookup queue is full
  5  lookup only: a miss, nothing cached answers the question
  130  backfill interrupted (Ctrl-C): `dejavu backfill --resume ID` finishes it"""


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    # Reads its own side's settings; pydantic's ValidationError from them is reported by the dispatcher.
    run: Callable[[argparse.Namespace], int]


def fail(message: str, code: int) -> int:
    print(f"dejavu: {message}", file=sys.stderr)
    return code
