"""The fixed cost of one training step of the DML loop (LeNet-5), by two documented measures.

Not a test. For every optimizer and batch size it trains --epochs epochs (interleaved over
--reps repetitions, in one SystemDS process per run, via benchmarks/epoch_time.py:run_dml)
and takes the training loop's seconds of the epochs after the first (the first carries JIT
and compilation). With N training images and steps(B) = ceil(N / B) steps per epoch:

- per step: epoch(B) / steps(B), in ms;
- overhead vs the reference batch (issue 22's measure): (epoch(B) - epoch(Bref)) / steps(B),
  Bref = the largest batch size given (default 32000; clipped to N, i.e. one step per epoch).
  Every epoch sees the same N images, so the difference is what the extra steps cost beyond
  the same arithmetic done in few large steps. It includes any loss of kernel efficiency at
  small sizes (e.g. a 64-row matrix multiply being slower per row than a 32000-row one);
- fixed cost per step (the better-defined measure): the intercept a of the least-squares line
  ms_per_step(B) = a + c * B over the batch sizes below Bref that have at least 2 steps per
  epoch; c is the marginal cost per image. This separates a cost paid once per step
  (instruction dispatch, recompilation, parfor set-up, the optimizer's pass over all
  parameters, the trace) from the cost that grows with the batch.

CPU s/run: the user + system seconds of the SystemDS process of each whole run (median over
the repetitions). On a shared machine the wall times carry the other jobs' load; CPU seconds
much less of it, so comparing two versions' CPU s/run at the same settings shows work saved
per run; divided by the run's steps it is the CPU saved per step.

Local runs with 4 micro-batches compute micro-batches under 64 rows in one piece (batch < 256)
and use the parfor from batch 256 on, so a fit across 256 mixes the two regimes: give
--batch-sizes within one regime (e.g. 32 64 128 or 256 512 1024) for a clean intercept.

--stats DIR additionally runs each (optimizer, batch) once with SystemDS -stats and writes
the statistics (recompilations, parfor optimizer/initialization time, buffer pool, the
--heavy-hitters heaviest instructions with counts) to DIR/<optimizer>-<batch>.txt, printing
the per-step counts of the instructions run at least once per step.

  python benchmarks/step_overhead.py --train-size 8192 --batch-sizes 32 64 128 32000 --reps 2
  python benchmarks/step_overhead.py --optimizers lars --batch-sizes 64 512 --stats /tmp/prof

A/B of two versions of the DML: copy this file into a checkout of the other commit and run
both copies back to back with the same arguments (each imports the package of its own tree).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from epoch_time import Result, emit_report, machine_description, run_dml  # noqa: E402

from lars_systemml import data, runtime  # noqa: E402
from lars_systemml.config import TrainConfig  # noqa: E402
from lars_systemml.train import RunOptions, train  # noqa: E402

LR = {"sgd": 0.01, "lars": 1.0, "nesterov": 0.01, "adamw": 0.001, "lamb": 0.01}


def steps_per_epoch(n: int, batch: int) -> int:
    return math.ceil(n / min(batch, n))


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least-squares (intercept, slope) of ys over xs; None with fewer than 2 distinct xs."""
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def table(results: dict, args) -> list[str]:
    n = args.images
    ref_b = max(args.batch_sizes)
    lines = ["| optimizer | batch | steps/epoch | s/epoch median (min-max) | ms/step | overhead vs "
             f"batch {min(ref_b, n)}, ms/step | CPU s/run |", "|---|---|---|---|---|---|---|"]
    fits = []
    for opt in args.optimizers:
        ref = results.get((opt, ref_b))
        ref_epoch = statistics.median(ref.epoch_seconds) if ref and ref.epoch_seconds else None
        xs, ys = [], []
        for b in args.batch_sizes:
            r = results.get((opt, b))
            if not r or not r.epoch_seconds:
                continue
            steps = steps_per_epoch(n, b)
            med = statistics.median(r.epoch_seconds)
            per_step = 1000 * med / steps
            over = f"{1000 * (med - ref_epoch) / steps:.1f}" if ref_epoch is not None and b != ref_b else ""
            lines.append(f"| {opt} | {b} | {steps} | {med:.2f} ({min(r.epoch_seconds):.2f}-"
                         f"{max(r.epoch_seconds):.2f}) | {per_step:.1f} | {over} | {statistics.median(args.cpu[(opt, b)]):.1f} |")
            if b != ref_b and steps >= 2:
                xs += [min(b, n)] * len(r.epoch_seconds)
                ys += [1000 * s / steps for s in r.epoch_seconds]
        line = fit_line(xs, ys)
        if line:
            fits.append(f"- {opt}: fixed cost per step a = {line[0]:.1f} ms, per image c = "
                        f"{1000 * line[1]:.1f} us (fit over batch {sorted(set(xs))}, every epoch a point)")
    return lines + ([""] + fits if fits else [])


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (the SystemDS JVMs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- -stats


class _StatsCount:
    """Makes runtime.local_command pass ``-stats <count>`` (RunOptions.stats gives the top 10)."""

    def __init__(self, count: int):
        self.count = count

    def __enter__(self):
        self.original = runtime.local_command

        def command(*a, **k):
            cmd = self.original(*a, **k)
            if "-stats" in cmd:
                cmd.insert(cmd.index("-stats") + 1, str(self.count))
            return cmd

        runtime.local_command = command
        return self

    def __exit__(self, *exc):
        runtime.local_command = self.original


def profile(args, optimizer: str, batch: int, folder: Path, workdir: Path) -> list[str]:
    """One -stats run; writes its statistics to folder and returns the summary lines."""
    config = TrainConfig(optimizer=optimizer, batch_size=batch, epochs=args.epochs, lr=args.lr[optimizer],
                         parallel_batches=args.parallel_batches, train_size=args.train_size,
                         test_size=args.test_size, seed=args.seed)
    options = RunOptions(data_dir=args.data_dir, heap=args.heap, progress=False, stats=True, checkpoint_every=0)
    out = workdir / f"stats-{optimizer}-{batch}"
    with _StatsCount(args.heavy_hitters):
        m = train(config, out, options)
    log = (out / "systemds.log").read_text()
    stats = log[log.find("SystemDS Statistics:"):]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{optimizer}-{batch}.txt").write_text(
        f"# {optimizer} batch {batch}, {args.images} images, {args.epochs} epochs, {m['steps']} steps; "
        f"loop seconds per epoch {[round(h['loop_seconds'], 2) for h in m['history']]}\n{stats}")
    steps = m["steps"]
    keep = ("recompile", "ParFor", "Cache", "Functions", "JIT", "GC", "compilation", "execution time")
    summary = [f"{optimizer} batch {batch}: {steps} steps"]
    summary += ["  " + ln.strip() for ln in stats.splitlines() if any(k in ln for k in keep)]
    per_step = []
    for ln in stats.splitlines():
        hit = re.match(r"\s*\d+\s+(\S+)\s+([\d.]+)\s+(\d+)\s*$", ln)
        if hit and int(hit.group(3)) >= steps:
            name, secs, count = hit.group(1), float(hit.group(2)), int(hit.group(3))
            per_step.append(f"{name} {count / steps:.1f}x {1000 * secs / steps:.2f}ms")
    summary.append("  per step (instructions run >= once per step; count, ms): " + ", ".join(per_step))
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512, 32000],
                   help="the largest is the reference of the 'overhead vs' column")
    p.add_argument("--optimizers", nargs="+", default=["sgd", "lars"], choices=sorted(LR))
    p.add_argument("--train-size", type=int, default=8192, help="training images (stratified subset)")
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is left out")
    p.add_argument("--reps", type=int, default=2, help="repetitions of every run (interleaved)")
    p.add_argument("--parallel-batches", type=int, default=4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--heap", default="4g")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--stats", default=None, metavar="DIR", help="also profile every run once with -stats")
    p.add_argument("--heavy-hitters", type=int, default=60, help="instructions listed by -stats")
    p.add_argument("--output", default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    args.lr = LR
    args.batch_sizes = sorted(set(args.batch_sizes))

    prepared = data.prepare("mnist", args.data_dir, args.train_size, args.test_size)
    args.images = prepared.train_size
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"step-overhead-{os.getpid()}"
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = os.getloadavg()[0]
    results: dict = {}
    args.cpu = {}  # (optimizer, batch) -> CPU seconds of each run
    runs = [(opt, b) for b in args.batch_sizes for opt in args.optimizers]
    for rep in range(args.reps):
        for opt, b in (runs if rep % 2 == 0 else runs[::-1]):
            r = results.setdefault((opt, b), Result("dml", opt, b))
            t0 = time.time()
            cpu0 = _children_cpu()
            run_dml(args, opt, b, r, workdir, java=False)
            args.cpu.setdefault((opt, b), []).append(_children_cpu() - cpu0)
            print(f"rep {rep + 1}/{args.reps} {opt} batch {b}: {time.time() - t0:.1f} s wall, epochs "
                  f"{[round(s, 2) for s in r.epoch_seconds[-(args.epochs - 1 or 1):]]}", file=sys.stderr, flush=True)
    profiles = []
    if args.stats:
        for opt, b in runs:
            profiles += profile(args, opt, b, Path(args.stats), workdir)

    lines = ["# Fixed cost per training step (LeNet-5, DML on SystemDS)", "",
             f"Run {started} .. {time.strftime('%H:%M:%S')}: `python benchmarks/step_overhead.py "
             f"{' '.join(sys.argv[1:] if argv is None else argv)}`", ""]
    lines += machine_description()
    lines += [f"- load average at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f} "
              "(a busy machine inflates every number)",
              f"- {args.images} training images, {args.epochs} epochs per run (the first left out), "
              f"{args.reps} repetitions interleaved, {args.parallel_batches} micro-batches, heap {args.heap}", "",
              "Measures: see the docstring of benchmarks/step_overhead.py.", ""]
    lines += table(results, args)
    if profiles:
        lines += ["", f"-stats (one run each, files in {args.stats}):", "", "```", *profiles, "```"]
    emit_report("\n".join(lines) + "\n", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
