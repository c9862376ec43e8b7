"""`dejavu eval`: precision (with its lower confidence bound), recall and hit rate on labelled question pairs,
through the lookup stages a worker runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from schemas.cli import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, fail
from worker.tools.commands.common import UNREACHABLE, missing_extra
from worker.tools.commands.common import settings as load_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    from worker.runtime import Runtime
    from worker.tools import evaluate
    from worker.tools.pairs import PairsError, read_pairs

    settings = load_settings()
    if (missing := missing_extra()) is not None:
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
