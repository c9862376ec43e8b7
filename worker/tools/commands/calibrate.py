"""`dejavu calibrate`: fit the verifier and choose the lowest threshold whose precision's lower confidence bound
reaches a target on held-out pairs; writes the profile file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from schemas.cli import EXIT_ERROR_REPLY, EXIT_OK, EXIT_USAGE, fail
from worker.tools.commands.common import missing_extra
from worker.tools.commands.common import settings as load_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    from worker.tools import calibrate
    from worker.tools.pairs import PairsError, read_pairs

    settings = load_settings()
    if (missing := missing_extra()) is not None:
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
