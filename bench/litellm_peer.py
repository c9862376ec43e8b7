"""The service peer of `make bench-peers`: LiteLLM's proxy with its Redis semantic cache, the gateway a service
owner would otherwise deploy in front of the same LLM.

Set up as like this project's stack as it goes: the proxy's Redis semantic cache (redisvl underneath) on the
stack's Redis, its embeddings from the same MiniLM ONNX model (bench.embed_server, one process per lookup process
of this project, each question embedded alone with one intra-op thread), as many proxy worker processes as this
project runs lookup processes, the stand-in LLM behind it, and its cache at its documented setting
(`similarity_threshold: 0.8`; it has no built-in default and refuses to start without one).

LiteLLM runs from a virtualenv of its own, .var/litellm-venv, built from bench/litellm_requirements.txt (pinned):
`litellm[proxy]==1.110.2` cannot be installed from PyPI (it pins `litellm-proxy==1.110.2`, which PyPI does not
have), and the proxy's own dependencies (fastapi, uvicorn, boto3, tiktoken, ...) have no place in the project's
environment. The file pins `litellm==1.110.2` and the modules its proxy server imports. Nothing of the project
imports LiteLLM: the benchmark talks to it over HTTP, as a service would.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.peer_systems import Served
from bench.peers_data import Entry
from bench.reference import MISS
from worker.local.servers import LocalStack, free_port

NAME = "litellm-proxy"
VENV = Path(".var/litellm-venv")
REQUIREMENTS = Path(__file__).resolve().with_name("litellm_requirements.txt")
EMBED_MODEL = "minilm-embed"
# LiteLLM's documented example value; the RedisSemanticCache has no default and raises without one.
SIMILARITY_THRESHOLD = 0.8
MASTER_KEY = "sk-peers-bench"


def ensure_venv(venv: Path = VENV) -> Path:
    """The virtualenv's bin directory, built (or rebuilt when the requirements changed) with this Python's venv."""
    stamp = venv / ".requirements-sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return venv / "bin"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(wanted)
    return venv / "bin"


def config(llm_model: str, llm_url: str, embed_url: str, redis_url: str) -> dict[str, object]:
    """The proxy's config.yaml (JSON is YAML): the stand-in as the chat model, our embedder for the cache."""
    return {
        "model_list": [
            {"model_name": llm_model,
             "litellm_params": {"model": f"openai/{llm_model}", "api_base": llm_url, "api_key": "unused"}},
            {"model_name": EMBED_MODEL,
             "litellm_params": {"model": f"openai/{EMBED_MODEL}", "api_base": embed_url, "api_key": "unused"}},
        ],
        "litellm_settings": {
            "cache": True,
            "cache_params": {"type": "redis-semantic", "redis_url": redis_url,
                             "similarity_threshold": SIMILARITY_THRESHOLD,
                             "redis_semantic_cache_embedding_model": EMBED_MODEL},
        },
        "general_settings": {"master_key": MASTER_KEY},
    }  # fmt: skip


def _wait_for(
    port: int, proc: subprocess.Popen[bytes], what: str, log: Path, path: str = "", wait_s: float = 180
) -> None:
    """Until `port` accepts connections (and, with `path`, a GET of it answers 200)."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}")
        try:
            if not path:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not come up within {wait_s:.0f} s; see {log}")


def start(stack: LocalStack, processes: int, llm_model: str) -> tuple[str, list[str]]:
    """The embedding servers and the proxy as more of the stack's processes (stopped with it); returns the proxy's
    base URL and the names of its processes (CPU components: every one of them is LiteLLM's side)."""
    bin_dir = ensure_venv()
    embed_port, proxy_port = free_port(), free_port()
    names = []
    for n in range(1, processes + 1):
        name = f"litellm-embed{n}"
        stack.spawn(name, [sys.executable, "-m", "bench.embed_server", "--port", str(embed_port)], env=dict(os.environ))
        names.append(name)
    _wait_for(embed_port, stack.procs[names[0]], "the embedding server", stack.root / f"{names[0]}.log")
    cfg = stack.root / "litellm-config.yaml"
    cfg.write_text(json.dumps(config(llm_model, stack.llm_url, f"http://127.0.0.1:{embed_port}/v1", stack.redis_url)))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION"}
    stack.spawn(NAME, [str(bin_dir / "litellm"), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(proxy_port),
                       "--num_workers", str(processes)], env=env)  # fmt: skip
    _wait_for(proxy_port, stack.procs[NAME], "LiteLLM's proxy", stack.root / f"{NAME}.log", "/health/liveliness")
    return f"http://127.0.0.1:{proxy_port}", [*names, NAME]


class LiteLLMProxy:
    """LiteLLM's proxy through its OpenAI chat-completions route, one keep-alive connection per caller.

    Its cache holds what the proxy stored as the stand-in answered each entry's question, asked with
    `cache: {"no-cache": true}` (its own store path: the LLM is called even when a near neighbour is stored, and
    the answer stored), so that it holds every entry as the other systems do; a reply whose text is one of those
    answers is a hit on that entry, reported with the entry's own answer so that hits are judged as every system's
    are. Lookups say `cache: {"no-store": true}`: a miss is not stored, so every pass meets the same misses (this
    project's passes remove theirs: peers.Forgetter).
    """

    name = NAME

    def __init__(self, url: str, model: str) -> None:
        self.url, self.model = url, model
        self.entries: Sequence[Entry] = ()
        self.index: dict[str, int] = {}

    def store(self, entries: Sequence[Entry]) -> float:
        self.entries = entries
        ask = self._asker({"no-cache": True})
        start = time.perf_counter()
        for i, e in enumerate(entries):
            answer = ask(e.question)
            if answer is not None:
                self.index[answer] = i
        return len(entries) / (time.perf_counter() - start)

    def _asker(self, cache: dict[str, bool]) -> Callable[[str], str | None]:
        host, port = self.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}

        def ask(text: str) -> str | None:
            body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": text}], "cache": cache})
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            resp = conn.getresponse()
            data = json.loads(resp.read())
            return str(data["choices"][0]["message"]["content"]) if resp.status == 200 else None

        return ask

    def caller(self) -> Callable[[str], Served]:
        ask = self._asker({"no-store": True})

        def lookup(text: str) -> Served:
            answer = ask(text)
            entry = self.index.get(answer or "", MISS)
            if entry == MISS:
                return Served(MISS, answer, "llm" if answer is not None else "error")
            return Served(entry, self.entries[entry].answer, "cache")

        return lookup

    def close(self) -> None:
        pass
