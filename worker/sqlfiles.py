"""SQL lives in `sql/` as files, loaded by name and bound to one embedding profile's table."""

from __future__ import annotations

import functools
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
# A checkout (and an editable install) reads the top-level sql/; a wheel carries the same files as worker/sql/,
# copied there by setup.py's build step.
SQL_DIR = _PACKAGE / "sql" if (_PACKAGE / "sql").is_dir() else _PACKAGE.parent / "sql"


@functools.cache
def _read(relative: str) -> str:
    return (SQL_DIR / relative).read_text(encoding="utf-8")


def table_name(profile: str) -> str:
    # Profile names are validated as [a-z0-9_]{1,32} (EmbedProfile), so this is a safe identifier.
    return f"dejavu_entries_{profile}"


def query(name: str, profile: str) -> str:
    return _read(f"queries/{name}.sql").replace("{entries}", table_name(profile))


def schema(profile: str, dim: int) -> list[str]:
    """Every schema file in order, ready to execute; each is idempotent."""
    return [
        _read(f"schema/{path.name}")
        .replace("{entries}", table_name(profile))
        .replace("{profile}", profile)
        .replace("{dim}", str(dim))
        for path in sorted((SQL_DIR / "schema").glob("*.sql"))
    ]
