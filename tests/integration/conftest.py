"""The HTTP gateway as its own process, in front of the session's stack, with two API keys for two tenants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from worker.local.servers import LocalStack, free_port


@dataclass(frozen=True)
class Gateway:
    url: str
    # API key -> tenant, as the gateway was configured.
    keys: dict[str, str]
    # DEJAVU_METRICS_KEY: opens /metrics and the detailed /healthz.
    metrics_key: str

    @property
    def key_a(self) -> str:
        return next(k for k in self.keys if k.startswith("key-a"))

    @property
    def key_b(self) -> str:
        return next(k for k in self.keys if k.startswith("key-b"))


@pytest.fixture(scope="session")
def gateway(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    port = free_port()
    suffix = uuid.uuid4().hex[:8]
    keys = {f"key-a-{suffix}": f"gw-a-{suffix}", f"key-b-{suffix}": f"gw-b-{suffix}"}
    metrics_key = f"ops-{uuid.uuid4().hex}"
    env = {**os.environ, **stack.env(), "DEJAVU_GATEWAY_API_KEYS": json.dumps(keys), "DEJAVU_METRICS_KEY": metrics_key}
    log_path = Path(tmp_path_factory.mktemp("gateway")) / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "producer.gateway", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log_path)
        yield Gateway(url, keys, metrics_key)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}: {log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:  # 503 until a worker answers a ping
            exc.close()
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the gateway was not healthy within {timeout}s: {log_path.read_text()}")


def post(
    gateway: Gateway, path: str, body: bytes | dict[str, Any], key: str | None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{gateway.url}{path}", data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def get(gateway: Gateway, path: str, anonymous: bool = False) -> tuple[int, bytes]:
    """GET as the operator (with the metrics key), or `anonymous` as any caller."""
    request = urllib.request.Request(f"{gateway.url}{path}")
    if not anonymous:
        request.add_header("Authorization", f"Bearer {gateway.metrics_key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def dejavu(stack: LocalStack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        env={**os.environ, **stack.env(), **(env or {})}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
