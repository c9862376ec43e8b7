"""Reading backfill files: checked rows, rejects with line numbers and reasons, duplicates, chunks, the scope."""

from __future__ import annotations

import io
import json
import time

import pytest

from schemas.cache import Scope
from schemas.keys import reply_key
from schemas.messages import ChatRequest
from worker.backfill import rebuild_hnsw
from worker.settings import Settings
from worker.tools.backfill import Options, scope_of
from worker.tools.backfill_read import Fields, FileFormatError, Reject, Row, chunks, detect_format, plan, read_rows

FIELDS = Fields("question", "answer", "qid")


def jsonl(*lines: bytes | dict[str, object]) -> io.BytesIO:
    return io.BytesIO(b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines))


def read(data: io.BytesIO, fmt: str = "jsonl", fields: Fields = FIELDS, limit: int = 100) -> list[Row | Reject]:
    return list(read_rows(data, fmt, fields, limit))  # type: ignore[arg-type]


def test_jsonl_good_and_bad_rows_keep_their_line_numbers() -> None:
    items = read(jsonl(
        {"qid": "a", "question": " What is gout? ", "answer": "A kind of arthritis."},
        b"{not json",
        {"qid": "c", "question": "What is X?"},
        b"",
        {"qid": 5, "question": "   ", "answer": "x"},
        {"qid": "f", "question": "What is Y?", "answer": 42},
        {"qid": "g", "question": "Q" * 101, "answer": "x"},
        b'{"qid": "h", "question": "caf\xe9?", "answer": "x"}',
        b"[1, 2]",
        {"qid": "j", "question": "What is Z?", "answer": "nul \x00 byte"},
        {"qid": "k", "question": "What is W?", "answer": " "},
        {"qid": "l", "question": "What is \ud800?", "answer": "lone surrogate"},
        {"qid": "m", "question": "What is V?", "answer": "fine"},
    ))  # fmt: skip
    assert items[0] == Row(1, "What is gout?", "A kind of arthritis.", "a")
    assert items[-1] == Row(13, "What is V?", "fine", "m")
    rejects = {r.line: r.reason for r in items if isinstance(r, Reject)}
    assert list(rejects) == [2, 3, 5, 6, 7, 8, 9, 10, 11, 12]  # line 4 is blank: not a row
    assert rejects[2].startswith("invalid JSON")
    assert rejects[3] == "missing field 'answer'"
    assert rejects[5] == "empty question"
    assert rejects[6] == "field 'answer' is not a string (it is int)"
    assert rejects[7] == "question too long: 101 bytes, over the limit of 100"
    assert rejects[8].startswith("bad encoding")
    assert rejects[9] == "not a JSON object (a list)"
    assert "NUL" in rejects[10] and rejects[11] == "empty answer" and rejects[12].startswith("bad encoding")
    assert next(r for r in items if isinstance(r, Reject) and r.line == 5).source_id == "5"


def test_csv_rows_span_lines_and_bad_bytes_are_rejected_per_row() -> None:
    data = io.BytesIO(
        b"\xef\xbb\xbfqid,question,answer\r\n"
        b'1,"What is gout?","Line one\nline two"\r\n'
        b"2,Bad \xff byte?,x\r\n"
        b"3,Too few\r\n"
        b"4,What is X?,Fine\r\n"
    )
    items = read(data, "csv")
    assert items[0] == Row(2, "What is gout?", "Line one\nline two", "1")
    assert isinstance(items[1], Reject) and items[1].line == 4 and items[1].reason.startswith("bad encoding")
    assert isinstance(items[2], Reject) and items[2].line == 5 and "fewer columns" in items[2].reason
    assert items[3] == Row(6, "What is X?", "Fine", "4")


def test_csv_without_the_named_columns_is_a_file_error() -> None:
    with pytest.raises(FileFormatError, match="'question'"):
        read(io.BytesIO(b"q,a\nx,y\n"), "csv")


def test_format_by_extension_or_first_byte() -> None:
    assert detect_format("faq.CSV", b"{") == "csv"
    assert detect_format("faq.jsonl", b"q,a") == "jsonl"
    assert detect_format("-", b'  {"question": 1}') == "jsonl"
    assert detect_format("-", b"question,answer") == "csv"


ROWS = [Row(1, "What is gout?", "first"), Row(2, "Other?", "o"), Row(3, "what is  GOUT?", "last"), Reject(4, "x")]


def test_duplicates_keep_first_or_last_by_normalized_question() -> None:
    first = plan(ROWS, "keep-first")
    assert [r.answer for r in first.rows] == ["first", "o"]
    assert (first.read, first.duplicates, len(first.rejects)) == (4, 1, 1)
    last = plan(ROWS, "keep-last")
    # The kept row moves to the last occurrence's place, so "the last N rows" stay the most recent ones.
    assert [r.answer for r in last.rows] == ["o", "last"] and last.duplicates == 1


def test_chunks_mark_the_last_n_rows_warm() -> None:
    rows = [Row(i, f"q{i}?", "a") for i in range(5)]
    got = list(chunks(rows, 2, warm_last=3))
    assert [[r.line for r, _ in c] for c in got] == [[0, 1], [2, 3], [4]]
    assert [w for c in got for _, w in c] == [False, False, True, True, True]
    assert not any(w for c in chunks(rows, 2, warm_last=0) for _, w in c)


def test_backfill_scope_is_the_scope_of_a_live_single_turn_request() -> None:
    settings = Settings()
    for system in (None, "You are a nurse."):
        options = Options(source="-", tenant="acme", model="m1", system=system)
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": "What is gout?"}
        ]
        live = ChatRequest.model_validate({"messages": messages, "tenant": "acme", "model": "m1",
                                           "reply_to": reply_key("x"), "deadline": time.time() + 10})  # fmt: skip
        assert scope_of(options, settings) == Scope.of(live)
    assert scope_of(Options(source="-"), settings).model == settings.llm_model


def test_hnsw_is_rebuilt_only_for_large_loads_into_small_tables() -> None:
    settings = Settings()
    assert rebuild_hnsw(0, 16_407, settings)
    assert rebuild_hnsw(3_000, 16_407, settings)
    assert not rebuild_hnsw(0, 2_000, settings)  # small load: insert
    assert not rebuild_hnsw(100_000, 16_407, settings)  # large table: insert
