"""Redis Lua scripts, kept as files and loaded by name."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def script(name: str) -> str:
    return (Path(__file__).parent / f"{name}.lua").read_text(encoding="utf-8")
