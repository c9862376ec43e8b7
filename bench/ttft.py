"""Time to the first token of a streamed miss: the stand-in LLM asked directly, and a miss through the whole
stack (gateway -> lookup queue -> lookup worker -> llm queue -> LLM worker -> reply list -> gateway), both with the
official OpenAI SDK and `stream: true`, interleaved so that both see the same machine. The stand-in streams as a
provider does: first token after 300 ms, then 40 tokens 25 ms apart.

    python -m bench.ttft [--n 120]      # merges ttft_* keys into bench/results/latest.json

Target (issue #15): miss_ttft_vs_llm = p50(miss) / p50(llm) <= 1.15.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path

import openai

from bench.stack import fresh_stack
from bench.stats import machine, pct
from producer.client import Client
from producer.settings import ProducerSettings
from worker.local.servers import free_port

RESULTS = Path(__file__).resolve().parent / "results"
KEY, TENANT = "bench-ttft-key", "bench-ttft"


def first_token_ms(client: openai.OpenAI, question: str) -> float:
    """From the call to the first chunk that carries text; the rest of the stream is read and dropped."""
    start = time.perf_counter()
    stream = client.chat.completions.create(
        model="standin-1", messages=[{"role": "user", "content": question}], stream=True
    )
    first: float | None = None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = (time.perf_counter() - start) * 1000
    assert first is not None, "the stream carried no text"
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=120, help="misses of each kind (>= 100 for the issue's p50)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args()
    with fresh_stack(Path(".var/bench-ttft"), worker_loglevel="WARNING", llm_first_token_ms=300, llm_token_ms=25,
                     llm_tokens=40) as stack:  # fmt: skip
        nodes = stack.start_workers(1, 2, lookup_pool="solo")
        gateway = stack.start_gateway(free_port(), {KEY: TENANT})
        probe = Client(ProducerSettings())
        probe.wait_for_workers(len(nodes))
        probe.close()
        direct = openai.OpenAI(base_url=stack.llm_url, api_key="unused", max_retries=0, timeout=30)
        cached = openai.OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0, timeout=30)
        first_token_ms(cached, f"warm-up {uuid.uuid4().hex}")  # the gateway's and workers' first request
        llm, miss = [], []
        for i in range(args.n):
            question = f"Question {i} {uuid.uuid4().hex[:12]}: why is the sky blue?"
            llm.append(first_token_ms(direct, question))
            miss.append(first_token_ms(cached, f"{question} (through the cache)"))
        direct.close()
        cached.close()
    llm_ms, miss_ms = pct(llm), pct(miss)
    results = {
        "ttft_llm_ms": llm_ms, "ttft_miss_ms": miss_ms, "miss_ttft_vs_llm": round(miss_ms["p50"] / llm_ms["p50"], 3),
        "ttft_standin": {"first_token_ms": 300, "token_ms": 25, "tokens": 40},
        "ttft_machine": machine(), "ttft_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    args.out.write_text(json.dumps(previous | results, indent=2) + "\n")
    print(f"first token, stand-in asked directly: p50 {llm_ms['p50']} ms, p99 {llm_ms['p99']} ms")
    print(f"first token, a miss through the cache: p50 {miss_ms['p50']} ms, p99 {miss_ms['p99']} ms")
    print(f"miss_ttft_vs_llm = {results['miss_ttft_vs_llm']} (target <= 1.15); written to {args.out}")


if __name__ == "__main__":
    main()
