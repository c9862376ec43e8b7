"""`make eval`: how often the cache serves the answer to a different question, on the development data.

Starts Redis and Postgres under .var/eval (no workers and no LLM: the evaluation runs the lookup stages
in-process, worker/tools/evaluate.py), then, for the Quora dev pairs, the RQE pairs and the hard-negative probes:
  - embeds each text once and computes in numpy what every threshold would decide, with and without the guards
    and the verifier (worker/tools/sweep.py): the table's offline rows and the curves;
  - runs the real lookup path at the configured thresholds, in pairs and replay mode: the headline rows, checked
    ask by ask against the offline decision;
  - the held-out rows, as `dejavu calibrate` measured them: the shipped verifier was refitted on every dev pair,
    so its held-out figures are cross-validated ones, every pair scored by a verifier fitted on the other folds
    of paraphrase groups (the same folds and fits), served at the profile's thresholds;
  - asks stored questions again from other tenants, models, system prompts and conversations (0 hits expected);
  - times the guards and the verifier per check.
Every precision comes with its one-sided 95% lower bound, paraphrase groups as clusters (worker/tools/bound.py).
Prints the table and writes bench/results/eval.json and bench/results/eval.png (precision against hit rate).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.stack import fresh_stack
from worker import guards
from worker.refusal import SERVED, refusal
from worker.runtime import Runtime
from worker.settings import PROFILES_DIR, Settings, load_profile_config
from worker.tools import evaluate
from worker.tools.calibrate import DEFAULT_FOLDS, cross_fitted
from worker.tools.pairs import Pair, folds, read_pairs
from worker.tools.sweep import (
    Asks,
    Curve,
    bound,
    counts,
    curve,
    decisions,
    embed_texts,
    pairs_asks,
    replay_asks,
    served,
    verifier_scores,
)
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
    return {name: _row(asks, served(asks, t, g, v)) for name, (t, g, v) in configs.items()}


def _row(asks: Asks, hit: np.ndarray) -> dict[str, Any]:
    return counts(asks, hit).summary() | bound(asks, hit).summary()


def curves(asks: Asks, verifier: Verifier | None, gate: float) -> dict[str, Curve]:
    out = {"cosine": curve(asks, "cosine", False), "cosine + guards": curve(asks, "cosine", True)}
    if verifier is not None:
        fitted = curve(asks, "verifier", True, verifier_scores(asks, verifier), gate)
        out["verifier + guards (fitted on these pairs)"] = fitted
    return out


def agreement(report: evaluate.Report, asks: Asks, verifier: Verifier | None, gate: float) -> dict[str, Any]:
    """The real path's hits against the offline rule's, ask by ask (they differ only where HNSW is approximate)."""
    predicted = served(asks, gate, True, verifier)
    differ = np.flatnonzero(predicted != report.hits)
    return {"asks": len(predicted), "disagree": len(differ), "examples": [asks.questions[i] for i in differ[:5]]}


def check_latency(asks: Asks, verifier: Verifier | None) -> dict[str, float]:
    """Microseconds per `refusal` call (parse both questions, guards, verifier) on real pairs."""
    times = []
    for q, c, s in zip(asks.questions[:LATENCY_CHECKS], asks.candidates, asks.similarity, strict=False):
        start = time.perf_counter()
        refusal(q, c, min(float(s), 0.999), True, verifier)
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
    name: str, pairs: list[Pair], rt: Runtime, modes: tuple[evaluate.Mode, ...], vectors: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Offline rows, real-path rows and curves for one file."""
    verifier, gate = rt.profile.verifier, rt.profile.threshold_redis
    out: dict[str, Any] = {"pairs": len(pairs)}
    plots: dict[str, Any] = {}
    for mode in modes:
        asks = pairs_asks(pairs, vectors) if mode == "pairs" else replay_asks(pairs, vectors)
        report = evaluate.run(pairs, mode, rt, progress=True, vectors=vectors)
        entry: dict[str, Any] = {"real_path": report.to_json(), "offline": offline_rows(asks, verifier, gate),
                                 "agreement": agreement(report, asks, verifier, gate)}  # fmt: skip
        if mode == "pairs" and name == "qqp":
            out["latency"] = check_latency(asks, verifier)
        out[mode] = entry
        plots[mode] = (curves(asks, verifier, gate), report)
    return out, plots


def held_out(datasets: dict[str, list[Pair]], vectors: dict[str, Any], rt: Runtime) -> tuple[dict[str, Any], Any]:
    """The profile's held-out figures, recomputed as `dejavu calibrate` computed them (the same files in the same
    order, folds and fits): each pair's verifier score comes from a verifier fitted on the other folds."""
    verifier, gate = rt.profile.verifier, rt.profile.threshold_redis
    if verifier is None:
        return {}, {}
    config = load_profile_config(rt.settings.profile_file or PROFILES_DIR / f"{rt.profile.name}.json")
    k = int(((config.calibration or {}).get("held_out") or {}).get("folds") or DEFAULT_FOLDS)
    pairs = [p for ps in datasets.values() for p in ps]
    source = np.array([name for name, ps in datasets.items() for _ in ps])
    asks = pairs_asks(pairs, vectors)
    start = time.perf_counter()
    oof = cross_fitted(asks, folds(pairs, k), gate, rt.settings.guards)
    hit = decisions(asks, gate, rt.settings.guards, lambda rows: oof[rows], verifier.threshold) == SERVED
    out: dict[str, Any] = {"folds": k, "fit_s": round(time.perf_counter() - start, 1), "all": _row(asks, hit)}
    plots = {}
    for name in datasets:
        rows_of = np.flatnonzero(source == name)
        part = asks.subset(source == name)
        out[name] = _row(part, hit[rows_of])
        c = curve(part, "verifier", rt.settings.guards, lambda rows, r=rows_of: oof[r[rows]], gate)
        plots[name] = (c, out[name])
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
    head = f"{'data':<6}{'mode':<8}{'rows':<42}{'P':>8}{'P low':>8}{'R':>8}{'F1':>8}{'hit rate':>10}{'hits':>7}"
    lines = [head, "(P low: the precision's one-sided 95% lower bound, paraphrase groups as clusters)"]

    def line(name: str, mode: str, label: str, row: dict[str, Any]) -> str:
        return (f"{name:<6}{mode:<8}{label:<42}{row['precision']:>8.4f}{row['precision_lower_bound']:>8.4f}"
                f"{row['recall']:>8.4f}{row['f1']:>8.4f}{row['hit_rate']:>10.4f}{row['hits']:>7}")  # fmt: skip

    for name in DATASETS:
        for mode in ("pairs", "replay"):
            entry = results[name].get(mode)
            if not entry:
                continue
            rows = [(f"offline: {k}", v) for k, v in entry["offline"].items()] + [
                ("real path (configured)", entry["real_path"])
            ]
            lines += [line(name, mode, label, row) for label, row in rows]
            a = entry["agreement"]
            lines.append(f"  (real path vs offline: {a['disagree']} of {a['asks']} asks differ)")
    held = results.get("held_out")
    if held:
        lines.append(f"\nheld out ({held['folds']}-fold cross-validation over paraphrase groups, as calibrated): "
                     "the configured rule, each pair scored by a verifier fitted without its fold")  # fmt: skip
        lines += [line(name, "pairs", "held-out folds (configured)", held[name]) for name in [*DATASETS, "all"]]
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

    held = plots.pop("held_out", {})
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
        if mode == "pairs" and name in held:
            c, point = held[name]
            ax.plot(c.hit_rate, c.precision, color="tab:red", linewidth=1.4, label="verifier + guards, held-out folds")
            ax.plot(c.hit_rate, c.lower, color="tab:red", linewidth=1.0, linestyle="--",
                    label=f"its {c.confidence:.0%} lower bound")  # fmt: skip
            ax.vlines(point["hit_rate"], point["precision_lower_bound"], point["precision"], color="tab:red")
            ax.scatter([point["hit_rate"]], [point["precision"]], marker="D", color="tab:red", zorder=5,
                       label=f"operating point, held out: P {point['precision']:.3f} (bound "
                             f"{point['precision_lower_bound']:.3f}), R {point['recall']:.3f}")  # fmt: skip
            ax.scatter([point["hit_rate"]], [point["precision_lower_bound"]], marker="_", s=200, color="tab:red")
        ax.set_title(f"{name} dev, {mode} mode")
        ax.set_xlabel("hit rate (share of asks served from the cache)")
        ax.set_ylabel("precision (served answers that were right)")
        ax.set_ylim(0.5, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle("Precision against hit rate over thresholds: cosine, with guards, with the verifier (held out: "
                 "cross-validated, with its lower bound)")  # fmt: skip
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
            datasets, skipped = {}, {}
            for name, path in DATASETS.items():
                datasets[name], skipped[name] = read_pairs(path, args.limit)
            start = time.perf_counter()
            texts = [t for pairs in datasets.values() for p in pairs for t in (p.text_a, p.text_b)]
            vectors = embed_texts(rt.embedder, texts)
            results["embed_s"] = round(time.perf_counter() - start, 1)
            for name, pairs in datasets.items():
                results[name], plots[name] = evaluate_dataset(name, pairs, rt, ("pairs", "replay"), vectors)
                results[name]["skipped_rows"] = skipped[name]
            results["held_out"], plots["held_out"] = held_out(datasets, vectors, rt)
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
