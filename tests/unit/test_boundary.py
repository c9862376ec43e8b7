"""The producer side stands alone: a service that only enqueues requests needs schemas/ and Redis, nothing else."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"numpy", "onnxruntime", "asyncpg", "pgvector", "tokenizers", "worker"}


def imported_after(code: str) -> list[str]:
    """Top-level packages of HEAVY that `code` imports, in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(HEAVY)!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    return list(ast.literal_eval(out.stdout.strip().splitlines()[-1]))


def test_importing_the_producer_loads_no_worker_dependency() -> None:
    assert imported_after("import producer, producer.gateway, producer.cli") == []


def test_dejavu_ask_help_imports_no_embedder_or_database_driver() -> None:
    code = "from producer.cli import main\ntry:\n    main(['ask', '--help'])\nexcept SystemExit:\n    pass"
    # The worker side's subcommands are listed (worker.tools.cli, light); their implementations are not imported.
    assert set(imported_after(code)) <= {"worker"}


def test_no_module_of_one_side_imports_the_other() -> None:
    """By the source: producer/ never names worker, worker/ never names producer (but the `make run` composer)."""
    composer = ROOT / "worker" / "local" / "run.py"
    for side, other in (("producer", "worker"), ("worker", "producer"), ("schemas", "worker"), ("schemas", "producer")):
        for path in (ROOT / side).rglob("*.py"):
            if path == composer:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                assert not any(n == other or n.startswith(f"{other}.") for n in names), f"{path} imports {other}"
