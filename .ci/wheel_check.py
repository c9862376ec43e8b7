"""Run by .ci/wheel-check with a fresh virtualenv's python, in a directory outside the checkout: the installed wheel
starts the embedded servers and one Celery worker, answers through a producer client, and stores the answer with
the SQL it carries (`dejavu status` counts it in pgvector). Argument: the checkout, which nothing may load from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import producer
import schemas
import worker
from producer.client import Client
from producer.settings import ProducerSettings
from worker.local.servers import LocalStack, free_port

TENANT = "wheel-check"


def pgvector_entries(dejavu: Path, timeout: float = 60) -> int:
    """The pgvector tier's rows as `dejavu status` reads them, once there is at least one."""
    end = time.monotonic() + timeout
    while True:
        out = subprocess.run([str(dejavu), "status", "--json"], capture_output=True, text=True, timeout=60)
        entries = json.loads(out.stdout)["pgvector_entries"] if out.stdout else None
        if isinstance(entries, int) and entries > 0:
            return entries
        if time.monotonic() > end:
            raise SystemExit(f"no entry reached pgvector: {out.stdout or out.stderr}")
        time.sleep(0.5)


def main() -> None:
    checkout = Path(sys.argv[1]).resolve()
    for package in (producer, schemas, worker):
        where = Path(package.__file__ or "").resolve()
        assert checkout not in where.parents, f"{package.__name__} loaded from the checkout: {where}"
    stack = LocalStack(Path.cwd() / "stack", redis_port=free_port(), pg_port=free_port(), llm_port=free_port(),
                       llm_delay_ms=100, durable=False)  # fmt: skip
    try:
        stack.start()
        os.environ.update(stack.env())
        stack.start_worker("wheel", "lookup,backfill,llm,writeback", "prefork", 2)
        client = Client(ProducerSettings())
        client.wait_for_workers(1)
        question = f"Does the wheel install ({uuid.uuid4().hex})?"
        miss = client.ask(question, tenant=TENANT, timeout=60)
        assert miss.ok and miss.tier == "llm" and question in (miss.answer or ""), miss
        entries = pgvector_entries(Path(sys.executable).parent / "dejavu")
        hit = client.ask(question, tenant=TENANT, timeout=30)
        assert hit.ok and hit.tier == "exact" and hit.answer == miss.answer, hit
        client.close()
        print(f"wheel check: worker from {Path(worker.__file__ or '').parent}; a miss answered by the LLM, "
              f"{entries} entry in pgvector, then an exact hit")  # fmt: skip
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
