"""The worker side's `dejavu` subcommands: status, backfill, eval, calibrate, one module each in
worker.tools.commands.

They read Postgres and run the embedder, so they need the worker install and its settings (DEJAVU_PG_DSN, the
profile); producers' own commands live in producer.cli. Heavy modules are imported only by the command that runs.
"""

from __future__ import annotations

from schemas.cli import Command
from worker.tools.commands import backfill, calibrate, status
from worker.tools.commands import eval as evaluate

# tests/integration/test_wrong_hits.py reads these here; they go when it imports worker.tools.commands.status.
from worker.tools.commands.status import _tenants, collect_status, wrong_hits

__all__ = ["COMMANDS", "_tenants", "collect_status", "wrong_hits"]

COMMANDS: dict[str, Command] = {
    "status": Command(
        "show queue depths, workers that answer a ping, entries per tier and unfinished backfills",
        status.add_arguments,
        status.run,
    ),
    "backfill": Command(
        "load a JSONL/CSV file of questions and answers into the cache, through the backfill queue",
        backfill.add_arguments,
        backfill.run,
    ),
    "eval": Command(
        "precision, recall and hit rate on labelled question pairs, through the real lookup path",
        evaluate.add_arguments,
        evaluate.run,
    ),
    "calibrate": Command(
        "fit the verifier and choose the lowest threshold whose precision's lower confidence bound reaches a "
        "target on held-out labelled pairs",
        calibrate.add_arguments,
        calibrate.run,
    ),
}
