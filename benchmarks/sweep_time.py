"""How long a sweep takes: the wall time of finished runs, split into its parts, and the
cost model behind ``lars-systemml sweep --dry-run`` fitted to them.

Not a test. It reads ``runs/*/metrics.json`` under the given sweep output folders (runs
made by the current training loop, i.e. whose history has ``loop_seconds``) and prints,
per run: wall seconds, the training loop, the per-epoch test evaluation, and everything
else (data preparation, JVM start, compilation, final train-set evaluation, writing
results). Then it fits ``wall = per_run + epochs * (per_epoch * images / 60000 +
per_step * steps_per_epoch)`` by least squares and shows predicted against measured, so
the constants in lars_systemml/sweep.py can be checked and updated. Writes the table to
results/bench/sweep_time.md as well.

  python benchmarks/sweep_time.py results/paper results/paper_lars_lr results/quick
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lars_systemml import sweep  # noqa: E402


def load_runs(folders: list[Path]) -> list[dict]:
    """One dict per finished run of the current training loop, with its time split."""
    runs = []
    for folder in folders:
        for path in sorted(folder.glob("runs/*/metrics.json")):
            m = json.loads(path.read_text())
            history = m.get("history") or []
            if not history or any("loop_seconds" not in h for h in history):
                continue  # an older training loop, without the split
            loop = sum(h["loop_seconds"] for h in history)
            evals = sum(h["eval_seconds"] for h in history)
            n = m["train_size"]
            runs.append({
                "sweep": folder.name, "run": path.parent.name, "images": n,
                "batch": m["batch_size"], "epochs": m["epochs_run"],
                "steps_per_epoch": -(-n // min(m["batch_size"], n)),
                "wall": m["wall_seconds"], "loop": loop, "eval": evals,
                "other": m["wall_seconds"] - loop - evals,
            })
    return runs


def fit(runs: list[dict]) -> tuple[float, float, float]:
    """Least-squares (per_run, per_epoch, per_step) of the --dry-run cost model."""
    a = np.array([[1.0, r["epochs"] * r["images"] / 60000, r["epochs"] * r["steps_per_epoch"]]
                  for r in runs])
    b = np.array([r["wall"] for r in runs])
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    return tuple(float(max(c, 0.0)) for c in coef)


def predict(r: dict, per_run: float, per_epoch: float, per_step: float) -> float:
    return per_run + r["epochs"] * (per_epoch * r["images"] / 60000 + per_step * r["steps_per_epoch"])


def report(runs: list[dict]) -> list[str]:
    per_run, per_epoch, per_step = fit(runs)
    old = (sweep.SECONDS_PER_RUN, sweep.SECONDS_PER_EPOCH, sweep.SECONDS_PER_STEP)
    lines = [
        "| sweep | run | images | epochs | steps/epoch | wall s | training loop | test eval | other "
        "| fitted model s | --dry-run model s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["sweep"], r["images"], r["batch"], r["run"])):
        lines.append(
            f"| {r['sweep']} | {r['run']} | {r['images']} | {r['epochs']} | {r['steps_per_epoch']} "
            f"| {r['wall']:.0f} | {r['loop']:.0f} ({r['loop'] / r['wall']:.0%}) "
            f"| {r['eval']:.0f} ({r['eval'] / r['wall']:.0%}) | {r['other']:.0f} ({r['other'] / r['wall']:.0%}) "
            f"| {predict(r, per_run, per_epoch, per_step):.0f} | {predict(r, *old):.0f} |")
    lines += [
        "",
        f"Fitted over {len(runs)} runs: {per_run:.1f} s per run + {per_epoch:.2f} s per epoch of "
        f"60,000 images + {per_step * 1000:.1f} ms per step "
        f"(lars_systemml/sweep.py now uses {old[0]:.1f} s, {old[1]:.2f} s, {old[2] * 1000:.1f} ms).",
        "other = data preparation, JVM start, compilation, the final train-set evaluation and "
        "writing the results.",
    ]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="sweep output folders (with runs/*/metrics.json)")
    p.add_argument("--output", type=Path, default=REPO / "results" / "bench" / "sweep_time.md")
    args = p.parse_args(argv)
    runs = load_runs(args.folders)
    if len(runs) < 3:
        print(f"error: {len(runs)} runs of the current training loop found in {', '.join(map(str, args.folders))}; "
              "need at least 3 (run a sweep first)", file=sys.stderr)
        return 2
    lines = report(runs)
    print("\n".join(lines))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("# Wall time of sweep runs and the --dry-run cost model\n\n"
                           f"`python benchmarks/sweep_time.py {' '.join(map(str, args.folders))}`\n\n"
                           + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
