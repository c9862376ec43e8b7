"""The README's and docs/wire.md's error tables say what producer.errors does: each code, its status."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from producer.errors import RELAYED_STATUSES, STATUS_BY_CODE
from schemas.messages import ErrorCode

ROOT = Path(__file__).resolve().parents[2]


def table_rows(path: Path) -> list[tuple[set[int], set[str]]]:
    """(statuses, codes) of every `| status | code | ... |` row under an Errors heading."""
    text = path.read_text(encoding="utf-8")
    section = re.split(r"^#+ Errors$", text, flags=re.M)[1]
    section = re.split(r"^#", section, maxsplit=1, flags=re.M)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"\d{3}(, \d{3})*", cells[0]):
            rows.append(({int(s) for s in cells[0].split(", ")}, set(re.findall(r"`([a-z_]+)`", cells[1]))))
    return rows


@pytest.mark.parametrize("doc", ["README.md", "docs/wire.md"])
def test_every_error_code_is_documented_with_its_status(doc: str) -> None:
    rows = table_rows(ROOT / doc)
    for code in ErrorCode:
        statuses = RELAYED_STATUSES if code == ErrorCode.LLM_REJECTED else {STATUS_BY_CODE[code]}
        documented = [s for s, codes in rows if code.value in codes]
        assert documented == [set(statuses)], f"{doc}: {code.value} should be documented as {sorted(statuses)}"
