"""The worker side's `dejavu` subcommands: status, backfill, eval, calibrate.

They read Postgres and run the embedder, so they need the worker install and its settings (DEJAVU_PG_DSN, the
profile); producers' own commands live in producer.cli. Heavy modules are imported only by the command that runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kombu.exceptions import OperationalError
from pydantic import ValidationError
from redis.exceptions import RedisError

from schemas.cli import (
    EXIT_DEGRADED,
    EXIT_ERROR_REPLY,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Command,
    fail,
)
from schemas.health import health
from schemas.keys import LOOKUP_QUEUE
from worker.tools.backfill_read import WARM_ALL

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from worker.settings import Settings

UNREACHABLE = (RedisError, OSError, OperationalError)


# --- status ---


def _status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def _settings() -> Settings:
    # Here, not at import: the settings load the verifier (numpy), and `dejavu ask --help` lists these commands.
    from worker.settings import get_settings

    return get_settings()


async def wrong_hits(r: aioredis.Redis) -> dict[str, dict[str, Any]]:
    """Per tenant, over the days its usage hashes keep (schemas.keys.usage_key): the hits the workers served from
    the cache (counted with each reply), the feedback that removed one of its entries (worker.forget) and their
    ratio, the wrong-hit rate that users reported."""
    from schemas.keys import USAGE_PREFIX
    from schemas.messages import Tier
    from worker.forget import FEEDBACK_FIELD

    fields = [*(f"tier:{t.value}" for t in (Tier.EXACT, Tier.REDIS, Tier.PGVECTOR)), FEEDBACK_FIELD]
    keys = [key async for key in r.scan_iter(match=f"{USAGE_PREFIX}*", count=1000)]
    async with r.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, fields)
        values = await pipe.execute()
    tenants: dict[str, dict[str, Any]] = {}
    for key, counts in zip(keys, values, strict=True):
        tenant = key.decode().removeprefix(USAGE_PREFIX).rpartition(":")[0]
        t = tenants.setdefault(tenant, {"hits_served": 0, "wrong_hit_feedback": 0})
        t["hits_served"] += sum(int(v or 0) for v in counts[:-1])
        t["wrong_hit_feedback"] += int(counts[-1] or 0)
    for t in tenants.values():
        t["wrong_hit_rate"] = round(t["wrong_hit_feedback"] / t["hits_served"], 4) if t["hits_served"] else None
    return dict(sorted(tenants.items()))


async def collect_status(settings: Settings) -> dict[str, Any]:
    """Queue depths, workers, entries per tier, unfinished backfills and hits and wrong-hit feedback per tenant;
    a part that cannot be read holds {"error": ...}."""
    from worker.app import app
    from worker.runtime import redis_client
    from worker.tools.probes import pg_entries, ping, queue_depths, redis_entries, unfinished_backfills

    profile = settings.profile().name
    status: dict[str, Any] = {"profile": profile}
    r = redis_client(settings.redis_url)

    async def part(name: str, read: Any) -> None:
        try:
            status[name] = await read
        except Exception as exc:  # report every part, whatever broke
            status[name] = {"error": f"{type(exc).__name__}: {exc}"}

    try:
        await part("queues", queue_depths(r))
        await part("workers", asyncio.to_thread(ping, app, 1.0))
        await part("redis_entries", redis_entries(r, profile))
        await part("pgvector_entries", pg_entries(settings.pg_dsn, profile))
        await part("backfills", unfinished_backfills(settings.pg_dsn, profile))
        await part("tenants", wrong_hits(r))
    finally:
        await r.aclose()
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


def _tenants(tenants: Any) -> str:
    if _failed(tenants):
        return f"tenants   {_show(tenants)}"
    if not tenants:
        return "tenants   no hit served yet"
    lines = ["tenants   hits served, wrong-hit feedback (rate), over the days kept:"]
    for name, t in tenants.items():
        rate = "-" if t["wrong_hit_rate"] is None else f"{t['wrong_hit_rate']:.2%}"
        lines.append(f"          - {name}: {t['hits_served']} hits, {t['wrong_hit_feedback']} wrong ({rate})")
    return "\n".join(lines)


def run_status(args: argparse.Namespace) -> int:
    settings = _settings()
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
        print(_tenants(status["tenants"]))
        print(f"status    {status['status']}" + "".join(f"\n          - {reason}" for reason in status["reasons"]))
    return {"ok": EXIT_OK, "degraded": EXIT_DEGRADED}.get(status["status"], EXIT_UNAVAILABLE)


# --- backfill ---


def _warm(value: str) -> int:
    if value == "all":
        return WARM_ALL
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


def run_backfill(args: argparse.Namespace) -> int:
    from worker.tools import backfill
    from worker.tools.backfill_read import Fields, FileFormatError

    settings = _settings()
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


# --- eval ---


def _missing_extra() -> str | None:
    """eval and calibrate bound precision with scipy and fit with scikit-learn: the `calibrate` extra."""
    import importlib.util

    missing = [name for name in ("scipy", "sklearn") if importlib.util.find_spec(name) is None]
    return f'{" and ".join(missing)} missing: pip install "dejavu-cache[calibrate]"' if missing else None


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", type=Path, required=True, help="JSONL of text_a, text_b, label (1 = the same question)")
    p.add_argument("--mode", choices=["pairs", "replay"], default="pairs",
                   help="pairs: text_a alone in a tenant, text_b asked there; replay: every text_a in one cache, "
                        "every text_b asked (default: %(default)s)")  # fmt: skip
    p.add_argument("--limit", type=int, help="only the first N pairs")
    p.add_argument("--no-guards", action="store_true", help="evaluate with the guards off (DEJAVU_GUARDS=false)")
    p.add_argument("--no-verifier", action="store_true", help="evaluate with the verifier off (DEJAVU_VERIFIER=false)")
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="confidence of the precision's one-sided lower bound (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_eval(args: argparse.Namespace) -> int:
    from worker.runtime import Runtime
    from worker.tools import evaluate
    from worker.tools.pairs import PairsError, read_pairs

    settings = _settings()
    if (missing := _missing_extra()) is not None:
        return fail(missing, EXIT_USAGE)
    try:
        pairs, skipped = read_pairs(args.pairs, args.limit)
    except (OSError, PairsError) as exc:
        return fail(str(exc), EXIT_USAGE)
    settings = settings.model_copy(update={"guards": settings.guards and not args.no_guards,
                                           "verifier": settings.verifier and not args.no_verifier})  # fmt: skip
    try:
        rt = Runtime.open(settings)
    except UNREACHABLE as exc:
        return fail(f"cannot reach Redis or Postgres: {exc}", EXIT_UNAVAILABLE)
    try:
        report = evaluate.run(pairs, args.mode, rt, progress=not (args.json or args.no_progress))
    except UNREACHABLE as exc:
        return fail(f"cannot reach Redis or Postgres: {exc}", EXIT_UNAVAILABLE)
    finally:
        rt.close()
    if not 0.5 <= args.confidence < 1:
        return fail("--confidence must be in [0.5, 1)", EXIT_USAGE)
    out = report.to_json(args.confidence) | {"skipped_rows": skipped}
    if args.json:
        print(json.dumps(out))
        return EXIT_OK
    c = report.counts
    verifier = "off" if out["verifier_threshold"] is None else f"threshold {out['verifier_threshold']:.4f}"
    print(
        f"{args.pairs.name}, {args.mode} mode: {len(pairs)} pairs, {c.asks} asks, {report.entries} entries stored; "
        f"cosine threshold {out['threshold']}, guards {'on' if out['guards'] else 'off'}, verifier {verifier}"
    )
    print(f"precision {c.precision:.4f} ({args.confidence:.0%} lower bound {out['precision_lower_bound']:.4f}, "
          f"{out['hits']} hits in {out['groups']} paraphrase groups)  recall {c.recall:.4f}  F1 {c.f1:.4f}  "
          f"hit rate {c.hit_rate:.4f}")  # fmt: skip
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
    p.add_argument(
        "--target-precision",
        type=float,
        required=True,
        help="precision whose lower confidence bound must be reached on held-out pairs, e.g. 0.9",
    )
    p.add_argument(
        "--confidence", type=float, default=0.95, help="confidence of that one-sided lower bound (default: %(default)s)"
    )
    p.add_argument(
        "--folds",
        type=int,
        default=5,
        help="cross-validation folds of paraphrase groups for the verifier (default: %(default)s)",
    )
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


def run_calibrate(args: argparse.Namespace) -> int:
    from worker.tools import calibrate
    from worker.tools.pairs import PairsError, read_pairs

    settings = _settings()
    if (missing := _missing_extra()) is not None:
        return fail(missing, EXIT_USAGE)
    if not 0 < args.target_precision <= 1:
        return fail("--target-precision must be in (0, 1]", EXIT_USAGE)
    if not 0.5 <= args.confidence < 1:
        return fail("--confidence must be in [0.5, 1)", EXIT_USAGE)
    if args.folds < 2:
        return fail("--folds must be at least 2", EXIT_USAGE)
    try:
        files = [(f, read_pairs(f, args.limit)[0]) for f in args.pairs]
    except (OSError, PairsError) as exc:
        return fail(str(exc), EXIT_USAGE)
    try:
        result = calibrate.calibrate(files, args.target_precision, settings, use_verifier=not args.no_verifier,
                                     min_similarity=args.min_similarity, confidence=args.confidence,
                                     n_folds=args.folds)  # fmt: skip
    except calibrate.CalibrationError as exc:
        return fail(str(exc), EXIT_ERROR_REPLY)
    from worker.settings import PROFILES_DIR

    out = args.out or settings.profile_file or PROFILES_DIR / f"{settings.embed_profile}.json"
    calibrate.write(result.config, out)
    report = result.report() | {"written_to": str(out)}
    if args.json:
        print(json.dumps(report))
    else:
        print(_calibration_text(report, args.min_similarity if result.config.verifier else None))
        print(f"written to {out}\ncheck it on pairs calibration did not see: dejavu eval --pairs HELD_BACK.jsonl")
    return EXIT_OK


def _calibration_text(report: dict[str, Any], min_similarity: float | None) -> str:
    if min_similarity is None:
        what, on = "cosine threshold", f"{report['pairs']} pairs (nothing fitted)"
    else:
        what = f"verifier threshold (cosine >= {min_similarity})"
        on = (f"held-out pairs ({report['folds']}-fold cross-validation over paraphrase groups, {report['pairs']} "
              f"pairs; the verifier refitted on all {report['fitted_pairs']} it decides)")  # fmt: skip
    lines = [
        f"{what} {report['threshold']:.4f}: {report['confidence']:.0%} lower bound of precision "
        f"{report['lower_bound']:.4f}, precision {report['precision']:.4f}, recall {report['recall']:.4f}, "
        f"hit rate {report['hit_rate']:.4f} on {report['hits']} hits, {on}"
    ]
    for name, f in report["by_file"].items():
        lines.append(
            f"  {name}: lower bound {f['precision_lower_bound']:.4f}, precision {f['precision']:.4f}, "
            f"recall {f['recall']:.4f}, {f['hits']} hits in {f['groups']} groups of {f['pairs']} pairs"
        )
    return "\n".join(lines)


COMMANDS: dict[str, Command] = {
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
    "eval": Command(
        "precision, recall and hit rate on labelled question pairs, through the real lookup path",
        _eval_arguments,
        run_eval,
    ),
    "calibrate": Command(
        "fit the verifier and choose the lowest threshold whose precision's lower confidence bound reaches a "
        "target on held-out labelled pairs",
        _calibrate_arguments,
        run_calibrate,
    ),
}
