"""The README's settings table is held to the settings classes: every variable, its side and its default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from producer.settings import ProducerSettings
from schemas.settings import CommonSettings
from worker.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
SIDES = {"both": CommonSettings, "producer": ProducerSettings, "worker": Settings}


def table() -> dict[str, tuple[str, str]]:
    """DEJAVU_* field name -> (side, default as written), from the rows of the table."""
    rows: dict[str, tuple[str, str]] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`DEJAVU_"):
            continue
        names = re.findall(r"`DEJAVU_([A-Z0-9_]+)`", cells[0])
        defaults = [d.strip() for d in cells[2].split(",")] if len(names) > 1 else [cells[2]]
        assert len(defaults) == len(names), line
        rows |= {name.lower(): (cells[1], default) for name, default in zip(names, defaults, strict=True)}
    return rows


def written(value: Any) -> str | None:
    """How the table writes a plain default; None where it is described in words (paths, empty strings)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}" if isinstance(value, float) and value != int(value) else str(int(value))
    if isinstance(value, str) and value:
        return f"`{value}`"
    return None


def test_every_setting_is_in_the_readme_with_its_side_and_default() -> None:
    rows = table()
    for side, cls in SIDES.items():
        own = set(cls.model_fields) - (set(CommonSettings.model_fields) if side != "both" else set())
        for name in own:
            assert name in rows, f"DEJAVU_{name.upper()} is missing from the README's settings table"
            assert rows[name][0] == side, f"DEJAVU_{name.upper()} is read by {side}, the README says {rows[name][0]}"
            expected = written(cls.model_fields[name].default)
            if expected is not None:
                assert rows[name][1].startswith(expected), (name, rows[name][1], expected)


def test_the_readme_names_no_setting_that_does_not_exist() -> None:
    known = set(ProducerSettings.model_fields) | set(Settings.model_fields)
    assert set(table()) - known == set()
