"""Reading a backfill file: JSONL or CSV rows to checked Q&A rows or rejects, then duplicates and chunks.

Pure functions, no servers: a bad row becomes a `Reject` with its line number and reason and never stops
the rows after it. Only a file-level problem (a CSV header without the named columns) raises.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from schemas.cache import question_hash

Format = Literal["jsonl", "csv"]
Policy = Literal["keep-first", "keep-last"]
# `--warm-redis all`: store every row in the Redis tier too (more rows than any file has).
WARM_ALL = 2**62
# Long answers are normal in FAQ exports; the csv module's default cap is 128 KiB per field.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class FileFormatError(ValueError):
    """The file cannot be read as a whole (not one bad row): the message says what to fix."""


@dataclass(frozen=True)
class Fields:
    question: str = "question"
    answer: str = "answer"
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    question: str
    answer: str
    source_id: str | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    line: int
    reason: str
    source_id: str | None = None

    def to_json(self) -> str:
        return json.dumps({"line": self.line, "id": self.source_id, "reason": self.reason}, ensure_ascii=False)


def detect_format(name: str, head: bytes) -> Format:
    """By extension; for stdin or an unknown extension, a first non-blank `{` means JSONL."""
    lower = name.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "jsonl" if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else "csv"


def read_rows(data: BinaryIO, fmt: Format, fields: Fields, max_question_bytes: int) -> Iterator[Row | Reject]:
    """Every record of the file, in order, as a checked row or a reject."""
    if fmt == "jsonl":
        yield from _jsonl(data, fields, max_question_bytes)
    else:
        yield from _csv(data, fields, max_question_bytes)


def _jsonl(data: BinaryIO, fields: Fields, max_bytes: int) -> Iterator[Row | Reject]:
    for number, raw in enumerate(data, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Reject(number, f"bad encoding: not UTF-8 ({exc.reason} at byte {exc.start})")
            continue
        text = text.removeprefix("\ufeff") if number == 1 else text
        if not text.strip():
            continue  # blank lines (a trailing newline, say) are not rows
        try:
            record = json.loads(text)
        except ValueError as exc:
            yield Reject(number, f"invalid JSON: {exc}")
            continue
        if not isinstance(record, dict):
            yield Reject(number, f"not a JSON object (a {type(record).__name__})")
            continue
        yield check(number, record, fields, max_bytes)


def _csv(data: BinaryIO, fields: Fields, max_bytes: int) -> Iterator[Row | Reject]:
    # surrogateescape keeps undecodable bytes as lone surrogates, which `check` rejects per row.
    text = io.TextIOWrapper(data, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        reader = csv.DictReader(text)
        header = reader.fieldnames or []
        missing = [f for f in (fields.question, fields.answer) if f not in header]
        if missing:
            raise FileFormatError(f"the CSV header has no column {', '.join(map(repr, missing))} (it has {header})")
        start = reader.line_num + 1
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                yield Reject(start, f"unreadable CSV record: {exc}")
            else:
                if None in record.values():
                    yield Reject(start, f"has fewer columns than the header ({len(header)})")
                else:
                    yield check(start, record, fields, max_bytes)
            start = reader.line_num + 1
    finally:
        text.detach()


def check(line: int, record: Mapping[str, object], fields: Fields, max_question_bytes: int) -> Row | Reject:
    """The rules a row must pass to be loaded; the first one it breaks is its reason."""
    source_id = _source_id(record, fields.id)
    values: dict[str, str] = {}
    for name in (fields.question, fields.answer):
        if name not in record:
            return Reject(line, f"missing field {name!r}", source_id)
        value = record[name]
        if not isinstance(value, str):
            return Reject(line, f"field {name!r} is not a string (it is {type(value).__name__})", source_id)
        if not _encodable(value):
            return Reject(line, f"bad encoding in field {name!r}: not valid UTF-8", source_id)
        if "\x00" in value:
            return Reject(line, f"field {name!r} contains a NUL character", source_id)
        if not value.strip():
            return Reject(line, f"empty {'question' if name == fields.question else 'answer'}", source_id)
        values[name] = value.strip()
    question = values[fields.question]
    size = len(question.encode("utf-8"))
    if size > max_question_bytes:
        return Reject(line, f"question too long: {size} bytes, over the limit of {max_question_bytes}", source_id)
    return Row(line, question, values[fields.answer], source_id)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _source_id(record: Mapping[str, object], name: str | None) -> str | None:
    if name is None:
        return None
    value = record.get(name)
    return None if value is None or isinstance(value, dict | list) else str(value)


@dataclass
class Plan:
    """The rows to load (in file order), and what was left out."""

    rows: list[Row] = field(default_factory=list)
    read: int = 0
    duplicates: int = 0
    rejects: list[Reject] = field(default_factory=list)


def plan(items: Iterable[Row | Reject], policy: Policy) -> Plan:
    """Resolve questions asked twice in the file (the same normalized question, as the exact tier sees it).

    keep-first keeps the first occurrence; keep-last keeps the last, at the last one's place in the file.
    """
    kept: list[Row | None] = []
    at: dict[str, int] = {}
    result = Plan()
    for item in items:
        result.read += 1
        if isinstance(item, Reject):
            result.rejects.append(item)
            continue
        qhash = question_hash(item.question)
        if qhash in at:
            result.duplicates += 1
            if policy == "keep-first":
                continue
            kept[at[qhash]] = None
        at[qhash] = len(kept)
        kept.append(item)
    result.rows = [row for row in kept if row is not None]
    return result


def chunks(rows: list[Row], size: int, warm_last: int) -> Iterator[list[tuple[Row, bool]]]:
    """Rows in chunks of `size`, each with whether it warms Redis: the last `warm_last` rows of the file."""
    warm_from = len(rows) - warm_last
    for start in range(0, len(rows), size):
        yield [(row, start + i >= warm_from) for i, row in enumerate(rows[start : start + size])]
