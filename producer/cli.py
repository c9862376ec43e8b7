"""`dejavu`: ask the cache a question, or look at the running system. Settings come from DEJAVU_* variables."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu.exceptions import OperationalError
from pydantic import ValidationError
from redis.exceptions import RedisError

from producer import backfill, calibrate, evaluate
from producer.aclient import AsyncClient
from producer.backfill_read import Fields, FileFormatError
from producer.base import ForgetCall, Overloaded, ReplyTimeout
from producer.client import Client
from producer.pairs import PairsError, read_pairs
from producer.probes import health, pg_entries, queue_depths, redis_entries, unfinished_backfills
from schemas.keys import LOOKUP_QUEUE
from schemas.messages import ForgetReply
from worker.runtime import Runtime
from worker.settings import PROFILES_DIR, Settings, get_settings

EXIT_OK = 0
EXIT_ERROR_REPLY = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
# `dejavu status`: requests are answered, but something underneath is down.
EXIT_DEGRADED = 4
EXIT_INTERRUPTED = 130

EPILOG = """exit codes:
  0  ok (status: Redis and Postgres reachable, at least one worker answers, the lookup queue under its limit)
  1  the cache answered with an error reply (its code and message go to stderr);
     calibrate: no threshold reaches the target precision, or too few pairs
  2  usage error: bad arguments or an invalid request
  3  no reply in time, overloaded (queue too deep), or Redis / Postgres / the workers unreachable
     (status: down: Redis unreachable or no worker answers)
  4  status only: degraded, requests are answered but Postgres is down or the lookup queue is full
  130  backfill interrupted (Ctrl-C): `dejavu backfill --resume ID` finishes it"""

UNREACHABLE = (RedisError, OSError, OperationalError)


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Settings], int]


def _fail(message: str, code: int) -> int:
    print(f"dejavu: {message}", file=sys.stderr)
    return code


# --- ask ---


def _ask_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("question", help="the question (the last user message)")
    p.add_argument("--tenant", default="default", help="cache namespace (default: %(default)s)")
    p.add_argument("--model", help="LLM model, part of the cache scope (default: DEJAVU_LLM_MODEL)")
    p.add_argument("--system", help="system prompt, part of the cache scope")
    p.add_argument("--timeout", type=float, help="seconds to wait for the answer (default: DEJAVU_DEFAULT_TIMEOUT_S)")
    p.add_argument("--json", action="store_true", help="print the whole reply as JSON, with latency_ms")


def run_ask(args: argparse.Namespace, settings: Settings) -> int:
    client = Client(settings)
    try:
        start = time.perf_counter()
        reply = client.ask(
            args.question, tenant=args.tenant, model=args.model, system=args.system, timeout=args.timeout
        )
        latency_ms = (time.perf_counter() - start) * 1000
    except (ValidationError, ValueError) as exc:
        return _fail(f"invalid request: {exc}", EXIT_USAGE)
    except (ReplyTimeout, Overloaded) as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except UNREACHABLE as exc:
        return _fail(f"cannot reach the queue at DEJAVU_REDIS_URL: {exc}", EXIT_UNAVAILABLE)
    finally:
        client.close()
    if args.json:
        print(json.dumps({**reply.model_dump(mode="json", exclude_none=True), "latency_ms": round(latency_ms, 2)}))
    elif reply.ok:
        # The answer alone on stdout, so `$(dejavu ask ...)` captures just the answer.
        print(reply.answer)
        similarity = "-" if reply.similarity is None else f"{reply.similarity:.4f}"
        print(f"tier={reply.tier} similarity={similarity} latency={latency_ms:.1f}ms entry={reply.entry_id}",
              file=sys.stderr)  # fmt: skip
    if reply.error is not None:
        if not args.json:
            print(f"error {reply.error.code}: {reply.error.message}", file=sys.stderr)
        return EXIT_ERROR_REPLY
    return EXIT_OK


# --- status ---


def _status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the status as JSON")


async def collect_status(settings: Settings) -> dict[str, Any]:
    """Queue depths, workers, entries per tier and unfinished backfills; a part that cannot be read holds
    {"error": ...}."""
    profile = settings.profile().name
    status: dict[str, Any] = {"profile": profile}
    async with AsyncClient(settings) as client:

        async def part(name: str, read: Any) -> None:
            try:
                status[name] = await read
            except Exception as exc:  # report every part, whatever broke
                status[name] = {"error": f"{type(exc).__name__}: {exc}"}

        await part("queues", queue_depths(client.redis))
        await part("workers", client.workers(timeout=1.0))
        await part("redis_entries", redis_entries(client.redis, profile))
        await part("pgvector_entries", pg_entries(settings.pg_dsn, profile))
        await part("backfills", unfinished_backfills(settings.pg_dsn, profile))
    queues, workers = status["queues"], status["workers"]
    verdict = health(
        redis_ok="error" not in queues,
        postgres_ok=not _failed(status["pgvector_entries"]),
        workers=len(workers) if isinstance(workers, list) else 0,
        lookup_depth=queues.get(LOOKUP_QUEUE),
        max_depth=settings.max_queue_depth,
    )
    status.update(status=verdict.status, reasons=list(verdict.reasons))
    return status


def _failed(part: Any) -> bool:
    return isinstance(part, dict) and "error" in part


def _show(value: Any) -> str:
    if _failed(value):
        return f"unreachable ({value['error']})"
    return "no index/table yet" if value is None else str(value)


def _backfills(jobs: Any) -> str:
    if _failed(jobs):
        return f"backfill  {_show(jobs)}"
    if not jobs:
        return "backfill  no job unfinished"
    lines = [f"backfill  {len(jobs)} job(s) unfinished: loading, or stopped"]
    for job in jobs:
        dropped = "; the pgvector HNSW index is dropped until it finishes" if job["hnsw_dropped"] else ""
        lines.append(f"          - {job['id']}: {job['chunks_done']}/{job['chunks']} chunks done{dropped}; "
                     f"if stopped: dejavu backfill --resume {job['id']}")  # fmt: skip
    return "\n".join(lines)


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    status = asyncio.run(collect_status(settings))
    if args.json:
        print(json.dumps(status))
    else:
        queues, workers = status["queues"], status["workers"]
        if isinstance(queues, dict) and "error" not in queues:
            print("queues    " + "  ".join(f"{name}={depth}" for name, depth in queues.items()))
        else:
            print(f"queues    {_show(queues)}")
        if isinstance(workers, list):
            print(f"workers   {len(workers)} answer a ping" + (f": {', '.join(workers)}" if workers else ""))
        else:
            print(f"workers   {_show(workers)}")
        print(f"entries   redis={_show(status['redis_entries'])}  pgvector={_show(status['pgvector_entries'])}"
              f"  (profile {status['profile']})")  # fmt: skip
        print(_backfills(status["backfills"]))
        print(f"status    {status['status']}" + "".join(f"\n          - {reason}" for reason in status["reasons"]))
    return {"ok": EXIT_OK, "degraded": EXIT_DEGRADED}.get(status["status"], EXIT_UNAVAILABLE)


# --- backfill ---


def _warm(value: str) -> int:
    if value == "all":
        return backfill.WARM_ALL
    if not value.isdigit():
        raise argparse.ArgumentTypeError("expected 'all' or a number of rows")
    return int(value)


def _backfill_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="JSONL or CSV file of questions and answers, or - for stdin")
    p.add_argument("--resume", metavar="ID", help="finish an interrupted backfill: re-enqueue its chunks not done")
    p.add_argument("--question-field", default="question", help="field/column of the question (default: %(default)s)")
    p.add_argument("--answer-field", default="answer", help="field/column of the answer (default: %(default)s)")
    p.add_argument("--id-field", help="field/column naming each row, shown in the rejects file")
    p.add_argument("--format", choices=["jsonl", "csv"], help="default: by extension (stdin: by the first byte)")
    p.add_argument("--tenant", default="default", help="cache namespace (default: %(default)s)")
    p.add_argument("--model", help="LLM model of the scope (default: DEJAVU_LLM_MODEL)")
    p.add_argument("--system", help="system prompt of the scope: later asks must send the same one to hit")
    p.add_argument(
        "--on-duplicate",
        choices=["keep-first", "keep-last"],
        default="keep-first",
        help="a question asked twice in the file, or already stored: keep the first answer (stored "
        "rows stay) or the last (the file's answer replaces a stored one) (default: %(default)s)",
    )
    p.add_argument(
        "--warm-redis",
        type=_warm,
        default=0,
        metavar="all|N",
        help="also store every row, or the last N rows of the file, in the Redis tiers",
    )
    p.add_argument("--rejects", type=Path, help="where rejected rows go (default: ./<file>.rejects.jsonl)")
    p.add_argument("--no-wait", action="store_true", help="enqueue and exit; `--resume ID` waits later")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, only the summary")


def run_backfill(args: argparse.Namespace, settings: Settings) -> int:
    if (args.file is None) == (args.resume is None):
        return _fail("backfill takes a FILE or --resume ID", EXIT_USAGE)
    progress = not args.no_progress
    job_id = args.resume
    try:
        if job_id is not None:
            summary = backfill.resume(job_id, settings, progress)
        else:
            options = backfill.Options(
                source=args.file, fields=Fields(args.question_field, args.answer_field, args.id_field),
                fmt=args.format, tenant=args.tenant, model=args.model, system=args.system,
                on_duplicate=args.on_duplicate, warm_last=args.warm_redis, rejects_path=args.rejects,
            )  # fmt: skip
            started = backfill.start(options, settings)
            job_id = started.job_id
            print(
                f"backfill {job_id}: {started.plan.read} rows read, {len(started.plan.rows)} to load in "
                f"{started.chunks} chunks; if interrupted: dejavu backfill --resume {job_id}",
                file=sys.stderr,
            )
            if args.no_wait:
                return EXIT_OK
            summary = backfill.wait(job_id, settings, progress, started.started_at, started.rejects_path, fresh=True)
    except KeyboardInterrupt:
        if job_id is None:
            return _fail("interrupted before the job was registered: nothing was stored", EXIT_INTERRUPTED)
        return _fail(
            f"interrupted: queued chunks still load; `dejavu backfill --resume {job_id}` finishes the job",
            EXIT_INTERRUPTED,
        )
    except (FileNotFoundError, IsADirectoryError, PermissionError, FileFormatError, ValidationError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except backfill.UnknownJob as exc:
        return _fail(str(exc), EXIT_USAGE)
    except UNREACHABLE as exc:
        return _fail(f"cannot reach Redis or Postgres: {exc}", EXIT_UNAVAILABLE)
    print(summary.text())
    return EXIT_OK


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


def run_forget(args: argparse.Namespace, settings: Settings) -> int:
    if (args.model or args.system) and args.question is None:
        return _fail("--model and --system go with --question", EXIT_USAGE)
    return _remove(args, settings, lambda client: client.forget_call(
        args.entry_id, question=args.question, all_entries=args.all_entries, tenant=args.tenant, model=args.model,
        system=args.system, timeout=args.timeout,
    ))  # fmt: skip


def _feedback_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("entry_id", help="the entry whose answer is wrong (a reply's entry_id)")
    p.add_argument("--reason", help="why, kept with the blocklist entry")
    p.add_argument("--tenant", help="only if the entry is this tenant's")
    _removal_arguments(p)


def run_feedback(args: argparse.Namespace, settings: Settings) -> int:
    return _remove(args, settings, lambda client: client.feedback_call(
        args.entry_id, reason=args.reason, tenant=args.tenant, timeout=args.timeout
    ))  # fmt: skip


def _remove(args: argparse.Namespace, settings: Settings, build: Callable[[Client], ForgetCall]) -> int:
    client = Client(settings)
    try:
        call = build(client)
        reply = client.run_forget(call)
    except (ValidationError, ValueError) as exc:
        return _fail(f"invalid request: {exc}", EXIT_USAGE)
    except ReplyTimeout as exc:
        return _fail(f"{exc}; the request stays queued and runs once a writeback worker and Postgres are up",
                     EXIT_UNAVAILABLE)  # fmt: skip
    except UNREACHABLE as exc:
        return _fail(f"cannot reach the queue at DEJAVU_REDIS_URL: {exc}", EXIT_UNAVAILABLE)
    finally:
        client.close()
    if args.json:
        print(reply.model_dump_json(exclude_none=True))
    if reply.error is not None:
        return _fail(f"error {reply.error.code}: {reply.error.message}", EXIT_ERROR_REPLY)
    request = call[0]
    target = f"entry {request.entry_id}" if request.entry_id else f"tenant {request.tenant}"
    if request.bad and not reply.found and not reply.blocked:
        return _fail(f"no {target} is stored: nothing was removed or blocked", EXIT_ERROR_REPLY)
    if not args.json:
        print(_removal_text(target, reply, request.bad))
    return EXIT_OK


def _removal_text(target: str, reply: ForgetReply, bad: bool) -> str:
    if not reply.found and not bad:
        return f"nothing stored under {target}"
    text = f"{target}: removed from redis {reply.removed.redis}, from pgvector {reply.removed.pgvector}"
    return text + (f"; {reply.blocked} question/answer pair(s) blocklisted" if bad else "")


# --- eval ---


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", type=Path, required=True, help="JSONL of text_a, text_b, label (1 = the same question)")
    p.add_argument("--mode", choices=["pairs", "replay"], default="pairs",
                   help="pairs: text_a alone in a tenant, text_b asked there; replay: every text_a in one cache, "
                        "every text_b asked (default: %(default)s)")  # fmt: skip
    p.add_argument("--limit", type=int, help="only the first N pairs")
    p.add_argument("--no-guards", action="store_true", help="evaluate with the guards off (DEJAVU_GUARDS=false)")
    p.add_argument("--no-verifier", action="store_true", help="evaluate with the verifier off (DEJAVU_VERIFIER=false)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    try:
        pairs, skipped = read_pairs(args.pairs, args.limit)
    except (OSError, PairsError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    settings = settings.model_copy(update={"guards": settings.guards and not args.no_guards,
                                           "verifier": settings.verifier and not args.no_verifier})  # fmt: skip
    try:
        rt = Runtime.open(settings)
    except UNREACHABLE as exc:
        return _fail(f"cannot reach Redis or Postgres: {exc}", EXIT_UNAVAILABLE)
    try:
        report = evaluate.run(pairs, args.mode, rt, progress=not (args.json or args.no_progress))
    except UNREACHABLE as exc:
        return _fail(f"cannot reach Redis or Postgres: {exc}", EXIT_UNAVAILABLE)
    finally:
        rt.close()
    out = report.to_json() | {"skipped_rows": skipped}
    if args.json:
        print(json.dumps(out))
        return EXIT_OK
    c = report.counts
    verifier = "off" if out["verifier_threshold"] is None else f"threshold {out['verifier_threshold']:.4f}"
    print(
        f"{args.pairs.name}, {args.mode} mode: {len(pairs)} pairs, {c.asks} asks, {report.entries} entries stored; "
        f"cosine threshold {out['threshold']}, guards {'on' if out['guards'] else 'off'}, verifier {verifier}"
    )
    print(f"precision {c.precision:.4f}  recall {c.recall:.4f}  F1 {c.f1:.4f}  hit rate {c.hit_rate:.4f}")
    print(
        f"right hits {c.right_hits}  wrong hits {c.wrong_hits}  missed {c.missed}  refused {c.refused}"
        f"  (tiers: {', '.join(f'{k} {v}' for k, v in sorted(report.tiers.items())) or 'none'})"
    )
    for kind, kc in sorted(report.by_kind.items()):
        print(f"  {kind}: {kc.asks} asks, {1 - kc.hit_rate:.1%} refused")
    if skipped:
        print(f"({skipped} rows with an empty text skipped)")
    return EXIT_OK


# --- calibrate ---


def _calibrate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", type=Path, action="append", required=True,
                   help="JSONL of text_a, text_b, label; repeat to calibrate on several files")  # fmt: skip
    p.add_argument("--target-precision", type=float, required=True, help="precision to reach, e.g. 0.9")
    p.add_argument("--no-verifier", action="store_true",
                   help="fit no verifier: choose the cosine threshold alone (guards still apply)")  # fmt: skip
    p.add_argument(
        "--min-similarity",
        type=float,
        default=0.8,
        help="with a verifier: the cosine threshold below which it is not asked (default: %(default)s)",
    )
    p.add_argument("--limit", type=int, help="only the first N pairs of each file")
    p.add_argument("--out", type=Path,
                   help="where to write the profile configuration (default: DEJAVU_PROFILE_FILE, else the shipped "
                        "worker/profiles/<profile>.json)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    if not 0 < args.target_precision <= 1:
        return _fail("--target-precision must be in (0, 1]", EXIT_USAGE)
    try:
        pairs = [p for f in args.pairs for p in read_pairs(f, args.limit)[0]]
    except (OSError, PairsError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        result = calibrate.calibrate(args.pairs, pairs, args.target_precision, settings,
                                     use_verifier=not args.no_verifier, min_similarity=args.min_similarity)  # fmt: skip
    except calibrate.CalibrationError as exc:
        return _fail(str(exc), EXIT_ERROR_REPLY)
    out = args.out or settings.profile_file or PROFILES_DIR / f"{settings.embed_profile}.json"
    calibrate.write(result.config, out)
    report = result.report() | {"written_to": str(out)}
    if args.json:
        print(json.dumps(report))
    else:
        what = "verifier threshold" if result.config.verifier else "cosine threshold"
        print(f"{what} {report['threshold']:.4f}: precision {report['precision']:.4f}, recall {report['recall']:.4f}, "
              f"hit rate {report['hit_rate']:.4f} on {'held-out ' if result.config.verifier else ''}pairs; "
              f"written to {out}\ncheck it on the real path: dejavu eval --pairs {args.pairs[0]}")  # fmt: skip
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "ask": Command(
        "ask a question and print the answer with its tier, similarity and latency", _ask_arguments, run_ask
    ),
    "status": Command(
        "show queue depths, workers that answer a ping, entries per tier and unfinished backfills",
        _status_arguments,
        run_status,
    ),
    "backfill": Command(
        "load a JSONL/CSV file of questions and answers into the cache, through the backfill queue",
        _backfill_arguments,
        run_backfill,
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
    "eval": Command(
        "precision, recall and hit rate on labelled question pairs, through the real lookup path",
        _eval_arguments,
        run_eval,
    ),
    "calibrate": Command(
        "fit the verifier and choose the lowest threshold that reaches a precision on labelled pairs",
        _calibrate_arguments,
        run_calibrate,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dejavu", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        command.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        return _fail(f"invalid DEJAVU_* settings: {exc}", EXIT_USAGE)
    return COMMANDS[args.command].run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
