"""The README's settings table is held to the settings classes: every variable, its side and its default."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic.fields import FieldInfo

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


def matches(cell: str, field: FieldInfo) -> bool:
    """Whether the table's default is the field's whole default, as the table writes each kind."""
    value = field.get_default(call_default_factory=True)
    if value is None:
        return cell == "—"
    if isinstance(value, bool):
        return cell == str(value).lower()
    if isinstance(value, int | float):
        try:
            return float(cell) == value
        except ValueError:
            return False
    if isinstance(value, str):
        return cell == (f"`{value}`" if value else "empty")
    if isinstance(value, Path):
        return re.fullmatch(r"`[^`]+`", cell) is not None and Path(cell.strip("`")).expanduser() == value
    if isinstance(value, dict):
        return re.fullmatch(r"`[^`]+`", cell) is not None and json.loads(cell.strip("`")) == value
    raise AssertionError(f"no rule for writing a default of type {type(value).__name__}: add one")


def test_every_setting_is_in_the_readme_with_its_side_and_default() -> None:
    rows = table()
    for side, cls in SIDES.items():
        own = set(cls.model_fields) - (set(CommonSettings.model_fields) if side != "both" else set())
        for name in own:
            assert name in rows, f"DEJAVU_{name.upper()} is missing from the README's settings table"
            assert rows[name][0] == side, f"DEJAVU_{name.upper()} is read by {side}, the README says {rows[name][0]}"
            field = cls.model_fields[name]
            assert matches(rows[name][1], field), f"DEJAVU_{name.upper()}: README {rows[name][1]}, code {field!r}"


def test_the_readme_names_no_setting_that_does_not_exist() -> None:
    known = set(ProducerSettings.model_fields) | set(Settings.model_fields)
    assert set(table()) - known == set()


def test_a_default_matches_only_whole() -> None:
    assert matches("30", FieldInfo(default=30)) and matches("0.5", FieldInfo(default=0.5))
    assert not matches("300", FieldInfo(default=30)) and not matches("3", FieldInfo(default=30))
    assert not matches("`standin-10`", FieldInfo(default="standin-1")) and matches("empty", FieldInfo(default=""))
    assert matches("`~/.cache/x`", FieldInfo(default=Path.home() / ".cache" / "x"))
    assert not matches("`~/.cache/y`", FieldInfo(default=Path.home() / ".cache" / "x"))
    assert matches("`{}`", FieldInfo(default_factory=dict)) and not matches("—", FieldInfo(default_factory=dict))
