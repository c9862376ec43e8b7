"""`make eval`: how often the cache serves the answer to a different question, on the development data.

Starts Redis and Postgres under .var/eval (no workers and no LLM: the evaluation runs the lookup stages
in-process, producer/evaluate.py), then, for the Quora dev pairs, the RQE pairs and the hard-negative probes:
  - embeds each text once and computes in numpy what every threshold would decide, with and without the guards
    and the verifier (producer/sweep.py): the table's offline rows and the curves;
  - runs the real lookup path at the configured thresholds, in pairs and replay mode: the headline rows, checked
    ask by ask against the offline decision;
  - asks stored questions again from other tenants, models, system prompts and conversations (0 hits expected);
  - times the guards and the verifier per check.
Prints the table and writes bench/results/eval.json and bench/results/eval.png (precision against hit rate).
The verifier was fitted on the pairs outside the held-out split (producer/pairs.py); "held-out" rows are the rest.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.stack import fresh_stack
from worker import guards, pipeline
from worker.runtime import Runtime
from worker.settings import Settings
from worker.tools import evaluate
from worker.tools.pairs import Pair, held_out, read_pairs
from worker.tools.sweep import Asks, Curve, counts, curve, embed_texts, pairs_asks, replay_asks, served
from worker.verifier import Verifier

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
PROBES = ROOT / "tests" / "data" / "hard_negatives.jsonl"
DATASETS = {"qqp": DATA / "qqp_pairs_dev.jsonl", "rqe": DATA / "rqe_pairs_train.jsonl"}
# The fixed threshold the targets were stated against, for the "before" rows.
BASELINE_COSINE = 0.90
CROSS_SCOPE_QUESTIONS = 200
LATENCY_CHECKS = 2000


def offline_rows(asks: Asks, verifier: Verifier | None, gate: float) -> dict[str, dict[str, Any]]:
    """What each configuration would decide, from the offline scores."""
    configs = {
        f"cosine {BASELINE_COSINE}": (BASELINE_COSINE, False, None),
        f"cosine {BASELINE_COSINE} + guards": (BASELINE_COSINE, True, None),
        "configured without guards": (gate, False, verifier),
        "configured (guards + verifier)": (gate, True, verifier),
    }
    return {name: dict(counts(asks, served(asks, t, g, v)).summary()) for name, (t, g, v) in configs.items()}


def curves(asks: Asks, verifier: Verifier | None, gate: float) -> dict[str, Curve]:
    out = {"cosine": curve(asks, "cosine", False), "cosine + guards": curve(asks, "cosine", True)}
    if verifier is not None:
        out["verifier + guards"] = curve(asks, "verifier", True, verifier, gate)
    return out


def agreement(report: evaluate.Report, asks: Asks, verifier: Verifier | None, gate: float) -> dict[str, Any]:
    """The real path's hits against the offline rule's, ask by ask (they differ only where HNSW is approximate)."""
    predicted = served(asks, gate, True, verifier)
    differ = np.flatnonzero(predicted != report.hits)
    return {"asks": len(predicted), "disagree": len(differ), "examples": [asks.questions[i] for i in differ[:5]]}


def check_latency(asks: Asks, verifier: Verifier | None) -> dict[str, float]:
    """Microseconds per `pipeline.refusal` call (parse both questions, guards, verifier) on real pairs."""
    times = []
    for q, c, s in zip(asks.questions[:LATENCY_CHECKS], asks.candidates, asks.similarity, strict=False):
        start = time.perf_counter()
        pipeline.refusal(q, c, min(float(s), 0.999), True, verifier)
        times.append((time.perf_counter() - start) * 1e6)
    guard_times = []
    for q, c in zip(asks.questions[:LATENCY_CHECKS], asks.candidates, strict=False):
        start = time.perf_counter()
        guards.check(q, c)
        guard_times.append((time.perf_counter() - start) * 1e6)
    return {
        "check_us_p50": _pct(times, 50), "check_us_p99": _pct(times, 99), "guards_only_us_p50": _pct(guard_times, 50),
        "checks": len(times),
    }  # fmt: skip


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


def evaluate_dataset(
    name: str, pairs: list[Pair], rt: Runtime, modes: tuple[evaluate.Mode, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Offline rows, real-path rows and curves for one file."""
    verifier, gate = rt.profile.verifier, rt.profile.threshold_redis
    start = time.perf_counter()
    vectors = embed_texts(rt.embedder, [t for p in pairs for t in (p.text_a, p.text_b)])
    out: dict[str, Any] = {"pairs": len(pairs), "embed_s": round(time.perf_counter() - start, 1)}
    plots: dict[str, Any] = {}
    held = held_out(pairs)
    for mode in modes:
        asks = pairs_asks(pairs, vectors) if mode == "pairs" else replay_asks(pairs, vectors)
        report = evaluate.run(pairs, mode, rt, progress=True, vectors=vectors)
        entry: dict[str, Any] = {"real_path": report.to_json(), "offline": offline_rows(asks, verifier, gate),
                                 "agreement": agreement(report, asks, verifier, gate)}  # fmt: skip
        if mode == "pairs":
            entry["held_out"] = {"real_path": dict(counts(asks.subset(held), report.hits[held]).summary()),
                                 "offline": offline_rows(asks.subset(held), verifier, gate)}  # fmt: skip
            if name == "qqp":
                out["latency"] = check_latency(asks, verifier)
        out[mode] = entry
        plots[mode] = (curves(asks, verifier, gate), report)
    return out, plots


def evaluate_probes(rt: Runtime) -> dict[str, Any]:
    pairs, _ = read_pairs(PROBES)
    vectors = embed_texts(rt.embedder, [t for p in pairs for t in (p.text_a, p.text_b)])
    asks = pairs_asks(pairs, vectors)
    verifier, gate = rt.profile.verifier, rt.profile.threshold_redis
    report = evaluate.run(pairs, "pairs", rt, vectors=vectors)
    kinds = sorted({p.kind or "" for p in pairs})
    by_kind: dict[str, Any] = {}
    for kind in kinds:
        mask = np.array([p.kind == kind for p in pairs])
        sub = asks.subset(mask)
        rows = {name: round(1 - row["hit_rate"], 4) for name, row in offline_rows(sub, verifier, gate).items()}
        by_kind[kind] = {"asks": int(mask.sum()), "rejected_real_path": round(1 - float(report.hits[mask].mean()), 4),
                         "rejected_offline": rows}  # fmt: skip
    return {"by_kind": by_kind, "agreement": agreement(report, asks, verifier, gate)}


def table(results: dict[str, Any]) -> str:
    lines = [f"{'data':<6}{'mode':<8}{'rows':<42}{'P':>8}{'R':>8}{'F1':>8}{'hit rate':>10}"]
    for name in DATASETS:
        for mode in ("pairs", "replay"):
            entry = results[name].get(mode)
            if not entry:
                continue
            rows = [(f"offline: {k}", v) for k, v in entry["offline"].items()] + [
                ("real path (configured)", entry["real_path"])
            ]
            if "held_out" in entry:
                rows.append(("held-out, real path", entry["held_out"]["real_path"]))
            a = entry["agreement"]
            rows_note = f"  (real path vs offline: {a['disagree']} of {a['asks']} asks differ)"
            for label, row in rows:
                lines.append(f"{name:<6}{mode:<8}{label:<42}{row['precision']:>8.4f}{row['recall']:>8.4f}"
                             f"{row['f1']:>8.4f}{row['hit_rate']:>10.4f}")  # fmt: skip
            lines.append(rows_note)
    lines.append("\nhard negatives rejected (real path; offline cosine 0.90 / +guards / configured without guards)")
    for kind, row in results["probes"]["by_kind"].items():
        off = list(row["rejected_offline"].values())
        lines.append(f"  {kind:<14} {row['rejected_real_path']:>7.1%}   ({off[0]:.1%} / {off[1]:.1%} / {off[2]:.1%})")
    lines.append(f"\ncross-scope hits: {results['cross_scope_hits']}")
    lines.append(f"check latency: {results['qqp'].get('latency')}")
    return "\n".join(lines)


def plot(plots: dict[str, Any], out: Path) -> None:
    import matplotlib  # the `eval` extra; only `make eval` draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, mode) for name in plots for mode in plots[name]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, (name, mode) in zip(axes[0], panels, strict=True):
        lines, report = plots[name][mode]
        for label, c in lines.items():
            ax.plot(c.hit_rate, c.precision, label=label, linewidth=1.4)
        base = lines["cosine"]
        i = base.at(BASELINE_COSINE)
        ax.scatter([base.hit_rate[i]], [base.precision[i]], marker="o", color="grey", zorder=3,
                   label=f"cosine {BASELINE_COSINE}")  # fmt: skip
        real = report.counts
        ax.scatter([real.hit_rate], [real.precision], marker="*", s=140, color="black", zorder=4,
                   label="configured, real path")  # fmt: skip
        ax.set_title(f"{name} dev, {mode} mode")
        ax.set_xlabel("hit rate (share of asks served from the cache)")
        ax.set_ylabel("precision (served answers that were right)")
        ax.set_ylim(0.5, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle("Precision against hit rate over thresholds: cosine, with guards, with the verifier")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N pairs of each file (a quick look; not written)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with fresh_stack(ROOT / ".var" / "eval"):
        rt = Runtime.open(Settings())
        try:
            results: dict[str, Any] = {
                "settings": evaluate.describe(rt.settings),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            plots: dict[str, Any] = {}
            for name, path in DATASETS.items():
                pairs, skipped = read_pairs(path, args.limit)
                results[name], plots[name] = evaluate_dataset(name, pairs, rt, ("pairs", "replay"))
                results[name]["skipped_rows"] = skipped
            results["probes"] = evaluate_probes(rt)
            questions = list(dict.fromkeys(p.text_a for p in read_pairs(DATASETS["qqp"], CROSS_SCOPE_QUESTIONS)[0]))
            results["cross_scope_hits"] = evaluate.cross_scope_hits(questions, rt)
        finally:
            rt.close()
    print(table(results))
    if args.limit is None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
        plot(plots, args.out / "eval.png")
        print(f"wrote {args.out / 'eval.json'} and {args.out / 'eval.png'}")


if __name__ == "__main__":
    main()
