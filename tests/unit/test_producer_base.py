"""Request building and timeout messages, shared by the sync and async clients."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from producer.base import ReplyTimeout, build_request, timeout_message
from producer.cli import EXIT_USAGE, build_parser, main
from schemas.keys import reply_key
from worker.settings import Settings


def test_build_request_fills_scope_and_reply_list() -> None:
    settings = Settings(llm_model="default-model")
    request = build_request(settings, "What is gout?", tenant="acme", system="Be brief.", timeout=5)
    assert request.model == "default-model" and request.tenant == "acme"
    assert [m.role for m in request.messages] == ["system", "user"]
    assert request.reply_to == reply_key(request.request_id)
    assert 4 < request.deadline - time.time() <= 5


def test_build_request_rejects_bad_input_before_any_io() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="either question or messages"):
        build_request(settings)
    with pytest.raises(ValidationError, match="empty"):
        build_request(settings, "  ")
    with pytest.raises(ValidationError, match="deadline"):
        build_request(settings, "Late?", deadline=time.time() - 1)


@pytest.mark.parametrize(
    ("depth", "workers", "says"),
    [(3, [], "no worker answers a ping"), (0, ["w1@h"], "busy or slow"), (None, None, "could not be sent")],
)
def test_timeout_message_tells_slow_from_no_worker(depth: int | None, workers: list[str] | None, says: str) -> None:
    assert says in timeout_message("r1", 1.0, depth, workers)
    err = ReplyTimeout("r1", 1.0, depth, workers)
    assert isinstance(err, TimeoutError) and says in str(err)


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == EXIT_USAGE
    help_text = build_parser().format_help()
    assert "exit codes" in help_text and "ask" in help_text and "status" in help_text
