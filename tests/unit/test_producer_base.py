"""Request building and timeout messages, shared by the sync and async clients."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError

from producer.base import ReplyTimeout, RequestBuilder, build_request, timeout_message
from producer.cli import build_parser, main
from producer.settings import ProducerSettings as Settings
from schemas.cache import Scope, entry_id, question_hash
from schemas.cli import EXIT_USAGE
from schemas.keys import reply_key
from schemas.messages import ChatReply, Tier


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
    assert "forget" in help_text and "feedback" in help_text


class Builder(RequestBuilder):
    def __init__(self) -> None:
        self.settings = Settings(default_timeout_s=7)


def test_forget_by_question_names_the_entry_ask_would_store() -> None:
    builder = Builder()
    request, wait_s = builder.forget_call(question="  What is GOUT? ", tenant="acme", system="Be brief.", timeout=3)
    asked = builder.request("What is gout?", tenant="acme", system="Be brief.")
    assert request.entry_id == entry_id(Scope.of(asked), question_hash("What is gout?"))
    assert request.tenant == "acme" and not request.bad and wait_s == 3
    assert request.reply_to == reply_key(request.request_id)
    whole, wait_s = builder.forget_call(all_entries=True, tenant="acme")
    assert whole.entry_id is None and whole.tenant == "acme" and wait_s == 7


@pytest.mark.parametrize(
    ("entry", "options", "says"),
    [
        (None, {}, "one of"),
        ("0" * 32, {"question": "q?"}, "one of"),
        (None, {"all_entries": True}, "needs the tenant"),
        ("xyz", {}, "String should match pattern"),
    ],
    ids=["nothing", "two-targets", "all-without-tenant", "bad-id"],
)
def test_forget_call_refuses_ambiguous_targets(entry: str | None, options: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Builder().forget_call(entry, **options)


def test_feedback_on_a_reply_carries_its_answer() -> None:
    reply = ChatReply(request_id="r", answer="Rest.", tier=Tier.LLM, entry_id="ab" * 16)
    request, _ = Builder().feedback_call(reply, reason="wrong")
    assert (request.entry_id, request.answer, request.reason, request.bad) == ("ab" * 16, "Rest.", "wrong", True)
    with pytest.raises(ValueError, match="names no cache entry"):
        Builder().feedback_call(ChatReply(request_id="r"))
