"""`dejavu`: ask the cache a question, remove entries, or (with the worker install) look at and tune the running
system. Settings come from DEJAVU_* variables.

This module is the one `dejavu` command: it lists the subcommands of every installed side through the
`dejavu.commands` entry points (schemas.cli) and runs the one asked for; its own are ask, lookup, store, forget,
feedback and report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import redis
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from redis.exceptions import RedisError

from producer import report
from producer.base import ForgetCall, Overloaded, ReplyTimeout, Response
from producer.client import Client
from producer.errors import exit_code
from producer.settings import get_settings
from schemas.cli import EPILOG, EXIT_ERROR_REPLY, EXIT_MISS, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, Command, fail
from schemas.messages import ChatReply, ForgetReply
from schemas.requests import RequestOptions

UNREACHABLE = (RedisError, OSError, OperationalError)
ENTRY_POINTS = "dejavu.commands"
# What the `worker` extra adds to the slim producer install (pyproject.toml).
WORKER_ONLY = frozenset({"numpy", "onnxruntime", "onnx", "tokenizers", "asyncpg", "pgvector", "tqdm", "threadpoolctl"})


# --- ask ---


def _request_arguments(p: argparse.ArgumentParser) -> None:
    """What names a request and its scope: ask, lookup and store take the same, so they meet on the same entry."""
    p.add_argument("question", help="the question (the last user message)")
    p.add_argument("--tenant", default="default", help="cache namespace (default: %(default)s)")
    p.add_argument("--model", help="LLM model, part of the cache scope (default: DEJAVU_LLM_MODEL)")
    p.add_argument("--system", help="system prompt, part of the cache scope")
    p.add_argument("--timeout", type=float, help="seconds to wait for the reply (default: DEJAVU_DEFAULT_TIMEOUT_S)")
    p.add_argument("--param", action="append", type=_param, default=[], metavar="NAME=VALUE",
                   help="an OpenAI request field, forwarded to the LLM and part of the cache scope; VALUE is JSON "
                        "if it parses (temperature=0.7, stop='[\"\\n\"]', tools=@tools.json reads a file), else text; "
                        "repeat for more")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the whole reply as JSON, with latency_ms")


def _ask_arguments(p: argparse.ArgumentParser) -> None:
    _request_arguments(p)
    p.add_argument("--no-cache", action="store_true", help="skip the lookup: ask the LLM (and store its answer)")
    p.add_argument("--no-store", action="store_true", help="serve from the cache, but store nothing new")
    p.add_argument("--max-age", type=int, metavar="S", help="serve only entries stored at most S seconds ago")
    p.add_argument("--stream", action="store_true", help="print a miss's answer as the LLM writes it")


def _param(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    if raw.startswith("@"):
        raw = Path(raw[1:]).read_text(encoding="utf-8")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def _options(args: argparse.Namespace) -> RequestOptions:
    return {"tenant": args.tenant, "model": args.model, "system": args.system, "timeout": args.timeout,
            "params": dict(args.param)}  # fmt: skip


def run_ask(args: argparse.Namespace) -> int:
    options = _options(args)
    options["cache"] = {"no_cache": args.no_cache, "no_store": args.no_store, "max_age_s": args.max_age}
    if args.stream:
        return _verb(args, lambda client: _streamed(client, args.question, options))
    return _verb(args, lambda client: client.ask(args.question, **options))


def run_lookup(args: argparse.Namespace) -> int:
    options = _options(args)
    options["cache"] = {"max_age_s": args.max_age}
    return _verb(args, lambda client: client.lookup(args.question, **options))


def run_store(args: argparse.Namespace) -> int:
    if (args.answer is None) == (args.response is None):
        return fail("pass either --answer TEXT or --response FILE (the provider's chat.completion; - for stdin)",
                    EXIT_USAGE)  # fmt: skip
    try:
        response: Response = args.answer if args.answer is not None else _read_response(args.response)
    except (OSError, ValueError) as exc:
        return fail(f"--response: {exc}", EXIT_USAGE)
    return _verb(args, lambda client: client.store(args.question, response=response, **_options(args)))


def _read_response(path: str) -> dict[str, Any]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("expected the provider's chat.completion, a JSON object")
    return data


def _verb(args: argparse.Namespace, call: Callable[[Client], ChatReply]) -> int:
    """Run one request through a client and print its reply: the answer alone on stdout (so `$(dejavu ask ...)`
    captures just it), how it was served on stderr."""
    client = Client(get_settings())
    try:
        start = time.perf_counter()
        reply = call(client)
        latency_ms = (time.perf_counter() - start) * 1000
    except (ValidationError, ValueError) as exc:
        return fail(f"invalid request: {exc}", EXIT_USAGE)
    except (ReplyTimeout, Overloaded) as exc:
        return fail(str(exc), EXIT_UNAVAILABLE)
    except UNREACHABLE as exc:
        return fail(f"cannot reach the queue at DEJAVU_REDIS_URL: {exc}", EXIT_UNAVAILABLE)
    finally:
        client.close()
    if args.json:
        print(json.dumps({**reply.model_dump(mode="json", exclude_none=True), "latency_ms": round(latency_ms, 2)}))
    elif reply.ok and reply.hit is False:
        print(f"miss latency={latency_ms:.1f}ms", file=sys.stderr)
    elif reply.ok and reply.answer is None:  # a store's acknowledgement
        print(reply.entry_id)
    elif reply.ok:
        # A streamed miss's text was printed as it came.
        if not getattr(args, "stream", False) or reply.tier != "llm":
            print(reply.answer or "")
        for tool in reply.tool_calls or ():
            print(f"tool call {tool.id}: {tool.function.name}({tool.function.arguments})")
        similarity = "-" if reply.similarity is None else f"{reply.similarity:.4f}"
        print(f"tier={reply.tier} similarity={similarity} latency={latency_ms:.1f}ms entry={reply.entry_id}",
              file=sys.stderr)  # fmt: skip
    if reply.error is not None:
        if not args.json:
            print(f"error {reply.error.code}: {reply.error.message}", file=sys.stderr)
        return exit_code(reply.error)
    return EXIT_MISS if reply.hit is False else EXIT_OK


def _lookup_arguments(p: argparse.ArgumentParser) -> None:
    _request_arguments(p)
    p.add_argument("--max-age", type=int, metavar="S", help="serve only entries stored at most S seconds ago")


def _store_arguments(p: argparse.ArgumentParser) -> None:
    _request_arguments(p)
    p.add_argument("--answer", help="the answer's text, as your model gave it")
    p.add_argument("--response", metavar="FILE", help="your model's whole chat.completion JSON (tool calls, "
                   "finish_reason, usage kept); - reads stdin")  # fmt: skip


def _streamed(client: Client, question: str, options: RequestOptions) -> ChatReply:
    """Print a miss's text deltas as they come; return the final reply."""
    for event in client.ask_stream(question, **options):
        if isinstance(event, ChatReply):
            if event.tier == "llm":
                print(flush=True)
            return event
        print(event.delta.get("content") or "", end="", flush=True)
    raise AssertionError("unreachable: a stream ends with its reply")


# --- forget, feedback ---


def _removal_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, help="seconds to wait for the workers (default: DEJAVU_DEFAULT_TIMEOUT_S)")
    p.add_argument("--json", action="store_true", help="print the whole reply as JSON")


def _forget_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("entry_id", nargs="?", help="the entry to remove (a reply's entry_id; `dejavu ask` shows it)")
    p.add_argument("--question", help="remove the entry this question is stored under in the scope below")
    p.add_argument("--all", dest="all_entries", action="store_true", help="remove every entry of --tenant")
    p.add_argument("--tenant", help="with an entry id: only if it is this tenant's; with --question: the scope's "
                   "tenant (default: default); with --all: the tenant to empty")  # fmt: skip
    p.add_argument("--model", help="with --question: LLM model of the scope (default: DEJAVU_LLM_MODEL)")
    p.add_argument("--system", help="with --question: system prompt of the scope")
    _removal_arguments(p)


def run_forget(args: argparse.Namespace) -> int:
    if (args.model or args.system) and args.question is None:
        return fail("--model and --system go with --question", EXIT_USAGE)
    return _remove(args, lambda client: client.forget_call(
        args.entry_id, question=args.question, all_entries=args.all_entries, tenant=args.tenant, model=args.model,
        system=args.system, timeout=args.timeout,
    ))  # fmt: skip


def _feedback_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("entry_id", help="the entry whose answer is wrong (a reply's entry_id)")
    p.add_argument("--reason", help="why, kept with the blocklist entry")
    p.add_argument("--tenant", help="only if the entry is this tenant's")
    _removal_arguments(p)


def run_feedback(args: argparse.Namespace) -> int:
    return _remove(args, lambda client: client.feedback_call(
        args.entry_id, reason=args.reason, tenant=args.tenant, timeout=args.timeout
    ))  # fmt: skip


def _remove(args: argparse.Namespace, build: Callable[[Client], ForgetCall]) -> int:
    client = Client(get_settings())
    try:
        call = build(client)
        reply = client.run_forget(call)
    except (ValidationError, ValueError) as exc:
        return fail(f"invalid request: {exc}", EXIT_USAGE)
    except ReplyTimeout as exc:
        return fail(f"{exc}; the request stays queued and runs once a writeback worker and Postgres are up",
                     EXIT_UNAVAILABLE)  # fmt: skip
    except UNREACHABLE as exc:
        return fail(f"cannot reach the queue at DEJAVU_REDIS_URL: {exc}", EXIT_UNAVAILABLE)
    finally:
        client.close()
    if args.json:
        print(reply.model_dump_json(exclude_none=True))
    if reply.error is not None:
        return fail(f"error {reply.error.code}: {reply.error.message}", EXIT_ERROR_REPLY)
    request = call[0]
    target = f"entry {request.entry_id}" if request.entry_id else f"tenant {request.tenant}"
    if request.bad and not reply.found and not reply.blocked:
        return fail(f"no {target} is stored: nothing was removed or blocked", EXIT_ERROR_REPLY)
    if not args.json:
        print(_removal_text(target, reply, request.bad))
    return EXIT_OK


def _removal_text(target: str, reply: ForgetReply, bad: bool) -> str:
    if not reply.found and not bad:
        return f"nothing stored under {target}"
    text = f"{target}: removed from redis {reply.removed.redis}, from pgvector {reply.removed.pgvector}"
    return text + (f"; {reply.blocked} question/answer pair(s) blocklisted" if bad else "")


# --- report ---


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", help="only this tenant (default: every tenant)")
    p.add_argument("--since", default="7d", help="the last N days, today included, in UTC (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")


def run_report(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        first = report.days_since(args.since, dt.datetime.now(dt.UTC).date())
        prices = report.read_prices(settings.prices_file)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    r = redis.Redis.from_url(settings.redis_url)
    try:
        usage = report.collect(r, args.tenant, first)
    except UNREACHABLE as exc:
        return fail(f"cannot reach Redis at DEJAVU_REDIS_URL: {exc}", EXIT_UNAVAILABLE)
    finally:
        r.close()
    if args.json:
        print(json.dumps({u.tenant: dict(u.counts) for u in usage}))
    elif not usage:
        print(f"no requests counted since {first.isoformat()}" + (f" for tenant {args.tenant}" if args.tenant else ""))
    else:
        print(f"since {first.isoformat()} (UTC)\n{report.table(usage, prices)}")
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "ask": Command(
        "ask a question and print the answer with its tier, similarity and latency", _ask_arguments, run_ask
    ),
    "lookup": Command(
        "look a question up without asking the LLM: print a hit's answer (exit 0), or exit 5 on a miss",
        _lookup_arguments,
        run_lookup,
    ),
    "store": Command(
        "store the answer your own model gave to a question (same scope options as ask); print its entry id",
        _store_arguments,
        run_store,
    ),
    "forget": Command(
        "remove entries from every tier: one entry id, the entry of --question in a scope, or --all of a --tenant",
        _forget_arguments,
        run_forget,
    ),
    "feedback": Command(
        "mark an entry's answer bad: remove it everywhere and never cache that question/answer pair again "
        "(exit 1 when no such entry is stored)",
        _feedback_arguments,
        run_feedback,
    ),
    "report": Command(
        "per tenant: requests, hit rate per tier, LLM calls avoided, tokens (and, with DEJAVU_PRICES_FILE, cost) saved",
        _report_arguments,
        run_report,
    ),
}


def commands() -> dict[str, Command]:
    """Every installed side's subcommands, in the order of the entry points (producer first)."""
    found: dict[str, Command] = {}
    for ep in sorted(entry_points(group=ENTRY_POINTS), key=lambda ep: ep.name != "producer"):
        found.update(ep.load())
    return found


def build_parser(available: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dejavu",
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in (available or commands()).items():
        p = sub.add_parser(name, help=command.help, description=command.help, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        command.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    available = commands()
    args = build_parser(available).parse_args(argv)
    try:
        return available[args.command].run(args)
    except ValidationError as exc:
        if exc.title.endswith("Settings"):
            return fail(f"invalid DEJAVU_* settings: {exc}", EXIT_USAGE)
        raise
    except ModuleNotFoundError as exc:
        if exc.name not in WORKER_ONLY:
            raise
        return fail(f"`dejavu {args.command}` needs the worker install ({exc}): pip install 'dejavu-cache[worker]'",
                    EXIT_USAGE)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
