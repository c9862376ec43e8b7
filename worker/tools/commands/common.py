"""What the worker side's subcommands share: their settings, loaded when a command runs, and the errors that mean a
server is unreachable."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from worker.settings import Settings

UNREACHABLE = (RedisError, OSError, OperationalError)


def settings() -> Settings:
    # Here, not at import: the settings load the verifier (numpy), and `dejavu ask --help` lists these commands.
    from worker.settings import get_settings

    return get_settings()


def missing_extra() -> str | None:
    """eval and calibrate bound precision with scipy and fit with scikit-learn: the `calibrate` extra."""
    missing = [name for name in ("scipy", "sklearn") if importlib.util.find_spec(name) is None]
    return f'{" and ".join(missing)} missing: pip install "dejavu-cache[calibrate]"' if missing else None
