"""A/B of a model's DML code: one training step's gradients and one test-set evaluation, timed apart.

Not a test. For every variant (a git revision of dml/, or the working tree) and repetition,
interleaved, this runs three small SystemDS programs on the same prepared data and weights:
  setup    read the data, initialise theta (the baseline that the other two subtract)
  grad     --reps times: the gradients of --parallel-batches micro-batches of --rows rows in a
           parfor, as the training loop computes one step (without the optimizer)
  predict  --reps times: model::predict over the --eval-rows test images, --chunk rows at a time,
           then the metrics (the per-epoch test evaluation)
and reports per variant and program: seconds per call measured inside the DML (wall), CPU
seconds per call of the SystemDS process beyond `setup` (user + system; carries much less of
other jobs' load than wall time), SystemDS's native BLAS call counts (dense mult/conv/bwdF/bwdD,
from -stats), and a checksum of the results (sum of the gradients, test loss), which must agree
across variants to many digits: a variant may change the speed, not the math.

  python benchmarks/model_ops.py --variant base=HEAD~1 --variant new=. --reps 10
  python benchmarks/model_ops.py --variant base=main --variant new=. --rows 256 --model mlp
  python benchmarks/model_ops.py --variant c5000=. --variant c10000=.,chunk=10000
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from epoch_time import emit_report  # noqa: E402
from lars_systemml import data, models, runtime  # noqa: E402

PROGRAM = """\
source("models/lenet5.dml") as model
source("evaluation.dml") as evaluation
mode = $mode
reps = $reps
rows = $rows
P = $P
X = read($X)
Y = read($Y)
Xt = read($Xt)
Yt = read($Yt)
[theta, state] = model::init(7)
check = 0
t0 = time()
if (mode == "grad") {
  for (r in 1:reps) {
    G = matrix(0, rows=P, cols=ncol(theta))
    parfor (p in 1:P) {
      [loss_p, g_p, st_p] = model::gradients(X[rows * (p - 1) + 1 : rows * p,],
                                             Y[rows * (p - 1) + 1 : rows * p,], theta, state)
      G[p,] = g_p
    }
    check = check + sum(G)
  }
}
if (mode == "predict") {
  for (r in 1:reps) {
    [loss, accuracy] = evaluation::metrics(model::predict(Xt, theta, state, $chunk), Yt)
    check = check + loss
  }
}
secs = (time() - t0) / 1e9
print("@@result " + secs + " " + check)
"""


@dataclass
class Variant:
    name: str
    rev: str            # "." = the working tree, else a git revision
    chunk: int = 0      # predict's rows per forward pass (0: --chunk)
    dml: Path = None    # the dml/ folder the programs run in
    secs: dict = field(default_factory=dict)    # mode -> [DML-timed seconds per call]
    cpu: dict = field(default_factory=dict)     # mode -> [process CPU seconds per run]
    native: dict = field(default_factory=dict)  # mode -> native call counts (last run)
    check: dict = field(default_factory=dict)   # mode -> {checksum strings}


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def checkout(rev: str, into: Path) -> Path:
    """dml/ of the working tree ('.'), of another folder holding a dml/, or of a git revision, in ``into``."""
    target = into / "dml"
    if rev == ".":
        shutil.copytree(REPO / "dml", target)
    elif (Path(rev) / "dml").is_dir():
        shutil.copytree(Path(rev) / "dml", target)
    else:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "dml"], capture_output=True, check=True)
        into.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return target


def run(variant: Variant, mode: str, args, nvargs: dict, config: Path) -> None:
    script = variant.dml / "model_ops.dml"
    model_text = models.with_varsize_twin((variant.dml / models.get(args.model).file).read_text())
    (variant.dml / "model.dml").write_text(model_text)
    script.write_text(PROGRAM.replace(models.SOURCE_LINE, 'source("model.dml") as model'))
    reps = 0 if mode == "setup" else args.reps
    chunk = {"chunk": variant.chunk} if variant.chunk else {}
    cmd = runtime.local_command(script, {**nvargs, **chunk, "mode": mode, "reps": max(reps, 1)}, config,
                                heap=args.heap, stats=True)
    cpu0 = children_cpu_seconds()
    lines = runtime.run_dml(cmd, cwd=variant.dml)
    cpu = children_cpu_seconds() - cpu0
    result = next(line for line in lines if line.startswith("@@result")).split()
    variant.cpu.setdefault(mode, []).append(cpu)
    if mode != "setup":
        variant.secs.setdefault(mode, []).append(float(result[1]) / reps)
        variant.check.setdefault(mode, set()).add(f"{float(result[2]) / reps:.15g}")
        native = next((line for line in lines if line.startswith("Native openblas calls (dense")), "")
        variant.native[mode] = native.split(":")[-1].strip().rstrip(".")


def table(variants: list[Variant], reps: int, programs=("grad", "predict")) -> list[str]:
    lines = ["| variant | revision | program | s/call (DML) | CPU s/call | native mult/conv/bwdF/bwdD | checksum |",
             "|---|---|---|---|---|---|---|"]
    setup = {v.name: statistics.median(v.cpu["setup"]) for v in variants}
    base = {}
    for v in variants:
        for mode in programs:
            secs = statistics.median(v.secs[mode])
            cpu = (statistics.median(v.cpu[mode]) - setup[v.name]) / reps
            change = ""
            if mode in base:
                change = f" ({secs / base[mode][0] - 1:+.0%})", f" ({cpu / base[mode][1] - 1:+.0%})"
            else:
                base[mode] = (secs, cpu)
                change = "", ""
            rev = v.rev + (f", chunk {v.chunk}" if v.chunk else "")
            lines.append(f"| {v.name} | {rev} | {mode} | {secs:.3f}{change[0]} | {cpu:.2f}{change[1]} | "
                         f"{v.native.get(mode, '')} | {', '.join(sorted(v.check[mode]))} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", required=True, metavar="NAME=REV[,chunk=N]",
                   help="a variant: a git revision of dml/, '.' for the working tree or a folder holding a dml/, "
                        "optionally with its "
                        "own predict chunk size (repeat; the first is the baseline)")
    p.add_argument("--model", default="lenet5", choices=list(models.MODELS))
    p.add_argument("--rows", type=int, default=1024, help="rows per micro-batch (default 1024: batch 4096 / 4)")
    p.add_argument("--parallel-batches", type=int, default=4, help="micro-batches per step, in a parfor")
    p.add_argument("--eval-rows", type=int, default=10000, help="test images per evaluation")
    p.add_argument("--chunk", type=int, default=5000, help="rows per forward pass of predict (train.dml's default)")
    p.add_argument("--reps", type=int, default=10, help="calls per program run")
    p.add_argument("--programs", nargs="+", default=["grad", "predict"], choices=["grad", "predict"],
                   help="what to time (default both)")
    p.add_argument("--runs", type=int, default=2, help="runs of each program per variant (interleaved)")
    p.add_argument("--java-kernels", action="store_true",
                   help="run without native BLAS (sysds.native.blas=none): SystemDS's Java kernels")
    p.add_argument("--heap", default="4g")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", default=None, help="also write the table (markdown) here")
    args = p.parse_args(argv)
    variants = []
    for spec in args.variant:
        name, sep, rest = spec.partition("=")
        rev, _, chunk = rest.partition(",chunk=")
        if not sep or not name or not rev or (chunk and not chunk.isdigit()):
            p.error(f"--variant {spec}: expected NAME=REV[,chunk=N] (REV a git revision or '.')")
        variants.append(Variant(name, rev, int(chunk or 0)))

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = os.getloadavg()[0]
    prepared = data.prepare("mnist", args.data_dir, train_size=args.rows * args.parallel_batches,
                            test_size=args.eval_rows)
    spec = models.get(args.model)
    nvargs = {**prepared.paths, **spec.script_args("", prepared.shape), "rows": args.rows,
              "P": args.parallel_batches, "chunk": args.chunk}
    with tempfile.TemporaryDirectory(prefix="model-ops-") as tmp:
        tmp = Path(tmp)
        settings = runtime.tuned_settings(tmp)
        if args.java_kernels:
            settings["sysds.native.blas"] = "none"
        config = runtime.SystemDSConfig(settings).write(tmp / "config.xml")
        for i, v in enumerate(variants):
            v.dml = checkout(v.rev, tmp / f"v{i}")
        for r in range(args.runs):
            for v in (variants if r % 2 == 0 else variants[::-1]):
                for mode in ("setup", *args.programs):
                    run(v, mode, args, nvargs, config)
                print(f"run {r + 1}/{args.runs} {v.name}: " + ", ".join(
                    f"{mode} {v.secs[mode][-1]:.3f} s" for mode in args.programs), file=sys.stderr, flush=True)

    command = " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# A/B of a model's gradients and evaluation", "",
             f"Run {started} .. {time.strftime('%H:%M:%S')}: `python benchmarks/model_ops.py {command}`", "",
             f"- {args.model}; grad: {args.parallel_batches} micro-batches of {args.rows} rows in a parfor; "
             f"predict: {args.eval_rows} test images in chunks of {args.chunk}, plus the metrics; "
             f"{args.reps} calls per run, {args.runs} runs per variant, interleaved; heap {args.heap}; "
             f"{'Java kernels (no native BLAS)' if args.java_kernels else 'native BLAS if installed'}",
             f"- {os.cpu_count()} cores; load average at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f}",
             "- s/call: median over runs of the DML-timed seconds per call; CPU s/call: median CPU seconds "
             "of a run minus those of the setup-only run, per call (change vs the first variant); "
             "checksum: sum of the gradients / test loss per call (must agree across variants)", ""]
    lines += table(variants, args.reps, args.programs)
    emit_report("\n".join(lines) + "\n", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
