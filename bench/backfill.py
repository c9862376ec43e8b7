"""Backfill benchmark: the full MedQuAD file (16,407 rows) through `dejavu backfill` into a fresh stack.

Starts its own stack under .var/bench-backfill (the `make run` worker layout: solo lookup nodes consuming
`lookup,backfill`, one LLM/write-back node), and measures:
  - rows/s end to end: file rows over the wall time from reading the file to the HNSW index built;
  - the embedding share of the chunk tasks' time (the rest: Postgres COPY/merge, Redis, task overhead);
  - live lookups during the load: exact hits asked one after another while the backfill runs on the same
    nodes, beside the same asks on idle nodes (a backfill must not starve live traffic).
Merges the backfill_* keys into bench/results/latest.json (only for the full file unless --write).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.stack import fresh_stack
from bench.stats import pct
from producer.client import Client
from producer.settings import ProducerSettings
from schemas.messages import Tier
from worker.settings import Settings
from worker.tools import backfill
from worker.tools.backfill_read import Fields

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "medquad_qa.jsonl"
RESULTS = Path(__file__).resolve().parent / "results"
TENANT = "bench-backfill"
PROBE_TENANT = "bench-probe"
PROBE = "What is the backfill benchmark's probe question?"


def probe_once(client: Client) -> float:
    start = time.perf_counter()
    reply = client.ask(PROBE, tenant=PROBE_TENANT)
    assert reply.ok, reply
    return (time.perf_counter() - start) * 1000


def seed_probe(client: Client, timeout: float = 60) -> None:
    """Ask the probe once (LLM) and wait until it is an exact hit."""
    client.ask(PROBE, tenant=PROBE_TENANT)
    end = time.monotonic() + timeout
    while client.ask(PROBE, tenant=PROBE_TENANT).tier != Tier.EXACT:
        if time.monotonic() > end:
            raise RuntimeError("the probe question never became an exact hit")
        time.sleep(0.1)


def bench_backfill(
    source: Path, root: Path = Path(".var/bench-backfill"), concurrency: int = 2, probe_interval_s: float = 0.05
) -> dict[str, Any]:
    """Backfill `source` into a fresh stack; returns the figures (see the module docstring)."""
    with fresh_stack(root) as stack:
        settings = Settings()
        nodes = stack.start_workers(1, concurrency, lookup_pool="solo")
        client = Client(ProducerSettings())
        try:
            client.wait_for_workers(len(nodes))
            seed_probe(client)
            idle = [probe_once(client) for _ in range(50)]
            during: list[float] = []
            stop = threading.Event()

            def probe() -> None:
                while not stop.is_set():
                    during.append(probe_once(client))
                    stop.wait(probe_interval_s)

            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            try:
                options = backfill.Options(source=str(source), fields=Fields("question", "answer", "qid"),
                                           tenant=TENANT, rejects_path=root / "rejects.jsonl")  # fmt: skip
                summary = backfill.run(options, settings, progress=True)
            finally:
                stop.set()
                prober.join()
        finally:
            client.close()
    worker_s = summary.seconds * concurrency
    return {
        "backfill_rows_per_s": round(summary.read / summary.seconds, 1),
        "backfill_loaded_rows_per_s": round(summary.inserted / summary.seconds, 1),
        "backfill_embed_share": round(summary.embed_share, 3),
        "backfill_embed_share_of_wall": round(summary.embed_ms / 1000 / worker_s, 3),
        "backfill_summary": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(summary).items()},
        "backfill_hnsw_build_s": round(summary.hnsw_build_s, 2),
        "backfill_lookup_idle_ms": pct(idle),
        "backfill_lookup_during_ms": pct(during),
        "backfill_chunk_rows": settings.backfill_chunk_rows,
        "backfill_lookup_processes": concurrency,
        "backfill_cores": os.cpu_count(),
        "backfill_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def merge_results(figures: dict[str, Any], out: Path) -> None:
    """Add these keys to the results file, keeping every other key (other benchmarks write there too)."""
    results = json.loads(out.read_text()) if out.exists() else {}
    results.update(figures)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="only the first N rows of MedQuAD (a quick check; not written)")
    parser.add_argument("--concurrency", type=int, default=2, help="lookup processes (solo nodes)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--write", action="store_true", help="write the results even for a --rows slice")
    args = parser.parse_args()
    source = DATA
    root = Path(".var/bench-backfill")
    if args.rows is not None:
        # A slice lives outside the repository, like the data it comes from.
        source = Path(tempfile.mkdtemp(prefix="dejavu-bench-")) / "medquad_slice.jsonl"
        with DATA.open() as f, source.open("w") as out:
            out.writelines(line for _, line in zip(range(args.rows), f, strict=False))
    figures = bench_backfill(source, root, args.concurrency)
    s = figures["backfill_summary"]
    print(
        f"\n{s['read']} rows ({s['inserted']} loaded, {s['duplicates_in_file']} duplicates, {s['rejected']} "
        f"rejected) in {s['seconds']:.1f} s: {figures['backfill_rows_per_s']} rows/s end to end; embedding "
        f"{figures['backfill_embed_share']:.0%} of chunk-task time; HNSW build {figures['backfill_hnsw_build_s']} s"
    )
    idle, during = figures["backfill_lookup_idle_ms"], figures["backfill_lookup_during_ms"]
    print(
        f"live exact hits: idle p50 {idle['p50']} ms p99 {idle['p99']} ms; during the backfill p50 "
        f"{during.get('p50')} ms p99 {during.get('p99')} ms max {during.get('max')} ms (n={during['n']})"
    )
    if args.rows is None or args.write:
        merge_results(figures, args.out)
        print(f"merged into {args.out}")


if __name__ == "__main__":
    main()
