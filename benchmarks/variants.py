"""A/B of how the DML loop runs: the same training under variants of JVM flags, train.dml
arguments and SystemDS settings, interleaved and repeated, in one table.

Not a test. Every variant trains the same config (LARS, lr 1.0, Table 1 otherwise); the
table gives per variant the training loop's seconds per epoch (median/min/max over epochs
2.. of every repetition), the first epoch apart (JIT compilation and heap growth land
there), the per-epoch test evaluation, the whole run's wall time, the CPU seconds the
SystemDS process used (user + system, whole run), and the final test loss, which must agree
across variants to many digits: a variant may change the speed, not the math. Run it on a
quiet machine; the table records the load average. Wall times on a shared machine carry the
other jobs' load; CPU seconds carry much less of it, so a variant that does less work (e.g.
skips an optimizer pass per step) shows there even when the wall times are too noisy to tell.

A variant is a name followed by settings:
  jvm=FLAG              an extra flag of the SystemDS JVM (repeatable)
  dml.NAME=VALUE        a -nvargs argument of dml/train.dml, e.g. dml.parfor_opt=NONE
  sds.NAME=VALUE        a SystemDS -config setting, e.g. sds.sysds.native.blas=none

  python benchmarks/variants.py --batch-size 16000 --train-size 32000 --epochs 3 --reps 3 \\
      --variant g1 --variant parallel-gc jvm=-XX:+UseParallelGC \\
      --output results/bench/variants_gc.md
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from epoch_time import emit_report  # noqa: E402
from lars_systemml.config import TrainConfig  # noqa: E402
from lars_systemml.train import RunOptions, train  # noqa: E402


@dataclass
class Variant:
    name: str
    jvm_flags: list[str] = field(default_factory=list)
    dml: dict = field(default_factory=dict)
    systemds: dict = field(default_factory=dict)
    loop: list[float] = field(default_factory=list)   # s per epoch, epochs 2..
    first: list[float] = field(default_factory=list)  # s of epoch 1
    evals: list[float] = field(default_factory=list)  # s per test evaluation
    wall: list[float] = field(default_factory=list)   # s per run
    cpu: list[float] = field(default_factory=list)    # CPU s (user + system) of the SystemDS process per run
    test_loss: list[float] = field(default_factory=list)

    def describe(self) -> str:
        parts = [*self.jvm_flags, *(f"{k}={v}" for k, v in self.dml.items()),
                 *(f"{k}={v}" for k, v in self.systemds.items())]
        return " ".join(parts) or "(project defaults)"


def parse_variant(words: list[str]) -> Variant:
    """``NAME [jvm=FLAG] [dml.K=V] [sds.K=V] ...`` -> Variant; exits with a one-line error otherwise."""
    variant = Variant(words[0])
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            sys.exit(f"error: variant {variant.name}: '{word}' is not KEY=VALUE (jvm=, dml.NAME=, sds.NAME=)")
        if key == "jvm":
            variant.jvm_flags.append(value)
        elif key.startswith("dml."):
            variant.dml[key[4:]] = value
        elif key.startswith("sds."):
            variant.systemds[key[4:]] = value
        else:
            sys.exit(f"error: variant {variant.name}: unknown key '{key}' (use jvm=, dml.NAME=, sds.NAME=)")
    return variant


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished (waited-for) children: the JVMs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_variant(args, variant: Variant, workdir: Path) -> None:
    config = TrainConfig(optimizer="lars", lr=1.0, batch_size=args.batch_size, epochs=args.epochs,
                         parallel_batches=args.parallel_batches, train_size=args.train_size,
                         test_size=args.test_size, seed=args.seed)
    options = RunOptions(data_dir=args.data_dir, heap=args.heap, progress=False,
                         systemds_config=variant.systemds, dml_overrides=variant.dml,
                         jvm_flags=variant.jvm_flags)
    t0, cpu0 = time.time(), children_cpu_seconds()
    m = train(config, workdir / variant.name, options)
    variant.wall.append(time.time() - t0)
    variant.cpu.append(children_cpu_seconds() - cpu0)
    loops = [h["loop_seconds"] for h in m["history"]]
    variant.first.append(loops[0])
    variant.loop.extend(loops[1:] or loops)
    variant.evals.extend(h["eval_seconds"] for h in m["history"])
    variant.test_loss.append(m["test_loss"])


def table(variants: list[Variant]) -> list[str]:
    lines = ["| variant | settings | loop s/epoch median | min | max | first epoch s | eval s | wall s | "
             "CPU s | test loss |", "|---|---|---|---|---|---|---|---|---|---|"]
    base = statistics.median(variants[0].loop)
    base_cpu = statistics.median(variants[0].cpu)
    for v in variants:
        med = statistics.median(v.loop)
        cpu = statistics.median(v.cpu)
        change = "" if v is variants[0] else f" ({med / base - 1:+.0%})"
        cpu_change = "" if v is variants[0] else f" ({cpu / base_cpu - 1:+.0%})"
        losses = sorted(set(f"{x:.12g}" for x in v.test_loss))
        lines.append(f"| {v.name} | {v.describe()} | {med:.2f}{change} | {min(v.loop):.2f} | {max(v.loop):.2f} | "
                     f"{statistics.median(v.first):.2f} | {statistics.median(v.evals):.2f} | "
                     f"{statistics.median(v.wall):.1f} | {cpu:.1f}{cpu_change} | {', '.join(losses)} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME [KEY=VALUE]",
                   help="a variant (repeat for each; the first is the baseline)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--train-size", type=int, default=20480, help="training images (default 20480)")
    p.add_argument("--test-size", type=int, default=None, help="test images (default: all 10,000)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is reported apart")
    p.add_argument("--reps", type=int, default=2, help="repetitions (interleaved, alternating order)")
    p.add_argument("--parallel-batches", type=int, default=4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--heap", default="8g")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", default=None, help="also write the table (markdown) here")
    args = p.parse_args(argv)
    variants = [parse_variant(words) for words in args.variant]
    if len({v.name for v in variants}) != len(variants):
        p.error("variant names must differ")

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = os.getloadavg()[0]
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"variants-{os.getpid()}"
    for rep in range(args.reps):
        for v in (variants if rep % 2 == 0 else variants[::-1]):
            run_variant(args, v, workdir)
            print(f"rep {rep + 1}/{args.reps} {v.name}: first {v.first[-1]:.2f} s, then "
                  f"{[round(s, 2) for s in v.loop[-(args.epochs - 1 or 1):]]}", file=sys.stderr, flush=True)

    command = " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"# A/B of how the DML loop runs", "",
             f"Run {started} .. {time.strftime('%H:%M:%S')}: `python benchmarks/variants.py {command}`", "",
             f"- LARS, batch {args.batch_size}, {args.train_size} training images, {args.epochs} epochs per run, "
             f"{args.reps} repetitions interleaved, {args.parallel_batches} parallel batches, heap {args.heap}",
             f"- {os.cpu_count()} cores; load average at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f}",
             "- loop s/epoch over epochs 2.. of every run (change vs the first variant); first epoch apart; "
             "eval: one test-set evaluation; CPU s: user + system seconds of the SystemDS process, whole run "
             "(median; change vs the first variant); test loss: the final one of each repetition (must agree)", ""]
    lines += table(variants)
    emit_report("\n".join(lines) + "\n", args.output)
    if args.output:
        print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
