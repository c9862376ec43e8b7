"""Noisy neighbour: one tenant floods the gateway far past its limits while another asks at a steady rate.

    python -m bench.noisy [--quiet-n 200 --rate 10 --noisy-threads 16]

The noisy tenant sends misses and `Cache-Control: no-cache` requests from many threads, as fast as the gateway
answers (its limits, as docs/wire.md recommends setting them: a share of the LLM calls in flight and per minute).
The quiet tenant asks on a fixed schedule (open loop: a request is sent at its time whether or not the previous one
came back), half new questions (misses), half repeats (hits), once alone and once during the flood, in the same
run. Writes `noisy_neighbour_p99_ratio` (the quiet tenant's p99 under the flood / alone), its latencies and errors,
and what the noisy tenant got, to bench/results/noisy.json with the CPU it ran on.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.stack import fresh_stack
from bench.stats import machine, pct
from producer.client import Client
from producer.settings import ProducerSettings
from worker.local.servers import free_port

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "standin-1"


def ask(url: str, key: str, question: str, no_cache: bool = False) -> tuple[float, int]:
    """One chat completion on a connection of its own: (milliseconds, HTTP status)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if no_cache:
        headers["Cache-Control"] = "no-cache"
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": question}]})
    start = time.perf_counter()
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return (time.perf_counter() - start) * 1000, resp.status
    except OSError:
        return (time.perf_counter() - start) * 1000, 0
    finally:
        conn.close()


def quiet_phase(url: str, key: str, n: int, rate: float, seed: int) -> dict[str, Any]:
    """`n` requests at `rate` per second, open loop: half new questions, half repeats of earlier ones."""
    rnd, asked = random.Random(seed), []
    results: list[Future[tuple[float, int]]] = []
    start = time.monotonic()
    with ThreadPoolExecutor(max(4, int(rate * 4))) as pool:
        for i in range(n):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            if asked and rnd.random() < 0.5:
                question = rnd.choice(asked)
            else:
                question = f"What are the early signs of condition {uuid.uuid4().hex[:12]}?"
                asked.append(question)
            results.append(pool.submit(ask, url, key, question))
        done = [f.result() for f in results]
    latencies = [ms for ms, status in done if status == 200]
    return {"latency_ms": pct(latencies), "errors": sum(status != 200 for _, status in done), "n": n}


def flood(url: str, key: str, threads: int, stop: threading.Event) -> dict[str, int]:
    """Misses and no-cache requests from `threads` threads until `stop`; the statuses they got."""
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def loop(i: int) -> None:
        k = 0
        while not stop.is_set():
            _, status = ask(url, key, f"Flood {i}-{k} {uuid.uuid4().hex}: what is gout?", no_cache=k % 2 == 1)
            with lock:
                counts[status] = counts.get(status, 0) + 1
            k += 1

    workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    stop.wait()
    for w in workers:
        w.join(150)
    return {str(status): count for status, count in sorted(counts.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet-n", type=int, default=200, help="quiet tenant requests per phase")
    parser.add_argument("--rate", type=float, default=10.0, help="quiet tenant requests per second")
    parser.add_argument("--noisy-threads", type=int, default=16, help="the flood's concurrent connections")
    parser.add_argument("--noisy-in-flight", type=int, default=4, help="the noisy key's max_in_flight")
    parser.add_argument("--noisy-calls-per-minute", type=int, default=120, help="its llm_calls_per_minute")
    parser.add_argument("--llm-delay-ms", type=float, default=200.0, help="the stand-in LLM's answer time")
    parser.add_argument("--concurrency", type=int, default=2, help="lookup processes")
    parser.add_argument("--out", type=Path, default=RESULTS / "noisy.json")
    args = parser.parse_args()

    noisy_key, quiet_key = f"sk-noisy-{uuid.uuid4().hex}", f"sk-quiet-{uuid.uuid4().hex}"
    limits = {"max_in_flight": args.noisy_in_flight, "llm_calls_per_minute": args.noisy_calls_per_minute}
    keys: dict[str, Any] = {noisy_key: {"tenant": "noisy", "limits": limits}, quiet_key: "quiet"}
    with fresh_stack(Path(".var/bench-noisy"), llm_delay_ms=args.llm_delay_ms) as stack:
        nodes = stack.start_workers(1, args.concurrency)
        url = stack.start_gateway(free_port(), keys)
        client = Client(ProducerSettings())
        client.wait_for_workers(len(nodes))
        client.close()
        ask(url, quiet_key, "What is gout?")  # the embedder's first call, outside both phases
        alone = quiet_phase(url, quiet_key, args.quiet_n, args.rate, seed=1)
        stop = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            flooding = pool.submit(flood, url, noisy_key, args.noisy_threads, stop)
            loaded = quiet_phase(url, quiet_key, args.quiet_n, args.rate, seed=2)
            stop.set()
            noisy = flooding.result()
    p99_alone, p99_loaded = alone["latency_ms"].get("p99"), loaded["latency_ms"].get("p99")
    setup = {"quiet_rate_per_s": args.rate, "noisy_threads": args.noisy_threads, "noisy_limits": limits,
             "llm_delay_ms": args.llm_delay_ms, "lookup_processes": args.concurrency}  # fmt: skip
    results = {
        "noisy_neighbour_p99_ratio": round(p99_loaded / p99_alone, 3) if p99_alone and p99_loaded else None,
        "quiet_errors": loaded["errors"],
        "quiet_alone": alone,
        "quiet_loaded": loaded,
        "noisy_statuses": noisy,
        "setup": setup,
        **machine(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("noisy_neighbour_p99_ratio", "quiet_errors", "noisy_statuses")}))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
