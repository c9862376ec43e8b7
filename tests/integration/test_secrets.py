"""No secret of the running stack on any command line: any local user reads those with `ps`."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import Gateway
from worker.local.servers import SECRETS, LocalStack


def command_lines() -> dict[int, bytes]:
    found = {}
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            found[int(path.parent.name)] = path.read_bytes()
        except OSError:  # the process ended meanwhile
            continue
    return found


def test_no_secret_of_the_stack_is_on_a_command_line(stack: LocalStack, gateway: Gateway) -> None:
    secrets = {name: stack.secrets[name] for name in SECRETS} | {"metrics key": gateway.metrics_key}
    secrets |= {f"API key of {tenant}": key for key, tenant in gateway.keys.items()}
    lines = command_lines()
    # The stack is up: Redis, Postgres, the workers, Flower and the gateway are among these processes.
    assert sum(b"redis-server" in line for line in lines.values()) >= 1
    assert sum(b"postgres" in line for line in lines.values()) >= 1
    assert sum(b"producer.gateway" in line for line in lines.values()) >= 1
    leaks = [(name, pid) for name, value in secrets.items() for pid, line in lines.items() if value.encode() in line]
    assert leaks == []


def test_each_server_has_its_own_secret(stack: LocalStack) -> None:
    values = [stack.secrets[name] for name in SECRETS]
    assert len(set(values)) == len(SECRETS) and all(len(v) >= 32 for v in values)
    assert (stack.root / "secrets.env").stat().st_mode & 0o777 == 0o600
    assert (stack.root / "redis.conf").stat().st_mode & 0o777 == 0o600
