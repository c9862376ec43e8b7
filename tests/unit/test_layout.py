"""One concept per module: no module of the project's own code runs past 400 lines (tests are not counted)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("producer", "worker", "schemas", "bench")
MAX_LINES = 400


def test_no_module_runs_past_400_lines() -> None:
    modules = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert len(modules) > 50  # the walk found the code
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in modules
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}, f"split these along their concepts (at most {MAX_LINES} lines each): {too_long}"
