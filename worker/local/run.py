"""`make run`: start the embedded stack, the workers and Flower, run a short demo, then wait for Ctrl-C.

The stand-in LLM is paced like a hosted model (first token after --llm-first-token-ms, then one every
--llm-token-ms), and the demo ends with a streamed miss printed token by token, its first-token time beside its total.

It is the one module that composes both sides (the worker stack and a producer client for the demo).
Everything it starts runs in its own process group and is stopped on Ctrl-C or SIGTERM, workers
first, then the servers. Data lives under `.var/local` (secrets in `.var/local/secrets.env`, mode 0600).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from producer.client import Client
from producer.settings import ProducerSettings
from schemas.messages import ChatDelta
from worker.local.servers import LocalStack

DEMO = [
    ("a cold question (the LLM answers it)", "What are the symptoms of glaucoma?"),
    ("the same question again", "What are the symptoms of glaucoma?"),
    ("a paraphrase", "What are the signs and symptoms of glaucoma?"),
    ("another tenant asks the same (never shared)", "What are the symptoms of glaucoma?"),
]


def demo(client: Client) -> None:
    # A fresh tenant per run, so the cold question is cold even when .var/local keeps earlier answers.
    base = f"demo-{int(time.time())}"
    print(f"\n{'what':<46} {'tier':<9} {'similarity':>10} {'latency':>10}  answer")
    for i, (what, question) in enumerate(DEMO):
        tenant = f"{base}-b" if "tenant" in what else base
        start = time.perf_counter()
        reply = client.ask(question, tenant=tenant, timeout=30)
        ms = (time.perf_counter() - start) * 1000
        sim = f"{reply.similarity:.3f}" if reply.similarity is not None else "-"
        text = reply.answer if reply.ok else f"ERROR {reply.error}"
        print(f"{what:<46} {reply.tier or '-':<9} {sim:>10} {ms:>8.1f}ms  {(text or '')[:60]}")
        if i == 0:
            time.sleep(0.5)  # the write-back of the first answer runs off the reply path; let it land


def demo_stream(client: Client) -> None:
    """One streamed miss, printed token by token as the workers relay the LLM's stream."""
    question = "Why is the sky blue?"  # cold: a fresh tenant per run
    print(f"\na streamed miss (stream=True; the stand-in LLM streams like a hosted model): {question}\n  ", end="")
    start = time.perf_counter()
    first_ms: float | None = None
    for event in client.ask_stream(question, tenant=f"demo-{int(time.time())}-stream", timeout=30):
        if isinstance(event, ChatDelta):
            first_ms = first_ms if first_ms is not None else (time.perf_counter() - start) * 1000
            print(event.delta.get("content") or "", end="", flush=True)
        elif not event.ok:
            print(f"ERROR {event.error}", end="")
    total_ms = (time.perf_counter() - start) * 1000
    first = "-" if first_ms is None else f"{first_ms:.0f} ms"
    print(f"\n  first token after {first}, whole answer after {total_ms:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(".var/local"))
    parser.add_argument("--workers", type=int, default=1, help="lookup worker nodes (as on separate machines)")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2, help="processes per node")
    parser.add_argument("--lookup-pool", choices=["solo", "prefork"], default="solo")
    parser.add_argument("--flower-port", type=int, default=5555)
    parser.add_argument("--gateway-port", type=int, default=8080)
    # Paced like a hosted model: the first token after a few hundred ms, then one every ~25 ms.
    parser.add_argument("--llm-first-token-ms", type=float, default=400.0, help="the stand-in's first-token delay")
    parser.add_argument("--llm-token-ms", type=float, default=25.0, help="the stand-in's pace after the first token")
    parser.add_argument("--no-wait", action="store_true", help="stop after the demo instead of waiting")
    args = parser.parse_args()

    stack = LocalStack(args.data, llm_first_token_ms=args.llm_first_token_ms, llm_token_ms=args.llm_token_ms)

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Explicit, because a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        print(f"starting Redis :{stack.redis_port}, Postgres :{stack.pg_port}, stand-in LLM :{stack.llm_port} ...")
        stack.start()
        stack.write_env_file()
        # Flower's live task view needs task events; off by default elsewhere for throughput.
        os.environ.setdefault("DEJAVU_TASK_EVENTS", "true")
        os.environ.update(stack.env())
        nodes = stack.start_workers(args.workers, args.concurrency, lookup_pool=args.lookup_pool)
        stack.start_flower(args.flower_port)
        # The demo tenant's API key: a secret of its own in secrets.env, stable across runs, never printed.
        gateway = stack.start_gateway(args.gateway_port, {stack.demo_api_key: "demo"})
        client = Client(ProducerSettings())
        names = client.wait_for_workers(len(nodes))
        print(f"workers up: {', '.join(names)}")
        demo(client)
        demo_stream(client)
        secrets_file = stack.root / "secrets.env"
        print(f"\nFlower: http://127.0.0.1:{args.flower_port}  (user dejavu, password DEJAVU_LOCAL_FLOWER_PASSWORD)")
        print(f"Gateway (OpenAI-compatible): {gateway}/v1  tenant demo, API key DEJAVU_LOCAL_DEMO_API_KEY; try:")
        print(f"  set -a; . {secrets_file}; set +a")
        print(
            f'  curl -s {gateway}/v1/chat/completions -H "Authorization: Bearer $DEJAVU_LOCAL_DEMO_API_KEY" '
            "-H 'Content-Type: application/json' "
            '-d \'{"model": "standin-1", "messages": [{"role": "user", "content": "What is glaucoma?"}]}\''
        )
        print(f"Logs: {stack.root}/*.log.  Point other shells at this stack (the URLs carry the passwords) with:")
        print(f"  set -a; . {stack.root / 'stack.env'}; set +a")
        if not args.no_wait:
            print("\nRunning. Press Ctrl-C to stop everything.")
            while all(p.poll() is None for p in stack.procs.values()):
                time.sleep(0.5)
            dead = [name for name, p in stack.procs.items() if p.poll() is not None]
            print(f"stopping: {', '.join(dead)} exited; see {stack.root}/<name>.log", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nstopping ...")
    finally:
        stack.stop()
        print("stopped.")


if __name__ == "__main__":
    main()
