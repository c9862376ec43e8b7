"""A throwaway stack for a benchmark: fresh data under `root`, this process's DEJAVU_* variables pointed at it
while it runs, everything stopped and the variables restored afterwards."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from worker.local.servers import LocalStack, free_port


@contextmanager
def fresh_stack(root: Path, **options: Any) -> Iterator[LocalStack]:
    """`options` go to LocalStack (e.g. worker_loglevel); the servers trade crash safety for speed."""
    shutil.rmtree(root, ignore_errors=True)
    stack = LocalStack(
        root, redis_port=free_port(), pg_port=free_port(), llm_port=free_port(), durable=False, **options
    )
    stack.start()
    saved = dict(os.environ)
    try:
        os.environ.update(stack.env())
        yield stack
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
