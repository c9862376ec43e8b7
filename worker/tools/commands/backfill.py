"""`dejavu backfill`: load a file of answered questions through the backfill queue, or finish a job (`--resume`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from schemas.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, fail
from worker.tools.backfill_read import WARM_ALL
from worker.tools.commands.common import UNREACHABLE
from worker.tools.commands.common import settings as load_settings


def _warm(value: str) -> int:
    if value == "all":
        return WARM_ALL
    if not value.isdigit():
        raise argparse.ArgumentTypeError("expected 'all' or a number of rows")
    return int(value)


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    from worker.tools import backfill
    from worker.tools.backfill_read import Fields, FileFormatError

    settings = load_settings()
    if (args.file is None) == (args.resume is None):
        return fail("backfill takes a FILE or --resume ID", EXIT_USAGE)
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
            return fail("interrupted before the job was registered: nothing was stored", EXIT_INTERRUPTED)
        return fail(
            f"interrupted: queued chunks still load; `dejavu backfill --resume {job_id}` finishes the job",
            EXIT_INTERRUPTED,
        )
    except (FileNotFoundError, IsADirectoryError, PermissionError, FileFormatError, ValidationError) as exc:
        return fail(str(exc), EXIT_USAGE)
    except backfill.UnknownJob as exc:
        return fail(str(exc), EXIT_USAGE)
    except UNREACHABLE as exc:
        return fail(f"cannot reach Redis or Postgres: {exc}", EXIT_UNAVAILABLE)
    print(summary.text())
    return EXIT_OK
