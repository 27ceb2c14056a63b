"""What one training epoch costs for every registered model (lars_systemml/models.py).

Not a test. Trains each model at its default options for --epochs epochs in one SystemDS
process (local backend, LARS, --parallel-batches micro-batches) and reports per model: the
training loop's seconds per epoch (the epochs after the first; the first carries JIT
compilation and reading the data), the first epoch, the per-epoch test evaluation, the
whole run's wall time, the number of parameters, and the test accuracy reached (a sanity
check that the run learned, not a result). The table goes to stdout and to --output with a
description of the machine. Run it on a quiet machine.

  python benchmarks/model_epoch.py                       # full MNIST, batch 1024, 2 epochs
  python benchmarks/model_epoch.py --train-size 5000 --models mlp resnet
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from epoch_time import emit_report, machine_description  # noqa: E402

from lars_systemml import models  # noqa: E402
from lars_systemml.config import TrainConfig  # noqa: E402
from lars_systemml.train import RunOptions, train  # noqa: E402

# A LARS run of every model: the tuned recipe (results/tuned: global lr 10, biases under the
# trust ratio, poly-0.25 decay) with a short warmup.
RUN = dict(optimizer="lars", lr=10.0, schedule="warmup_poly", warmup_epochs=0.5, poly_power=0.25,
           include_biases=True)


def measure(model: str, args, workdir: Path) -> dict:
    config = TrainConfig(model=model, batch_size=args.batch_size, epochs=args.epochs, dataset=args.dataset,
                         train_size=args.train_size, parallel_batches=args.parallel_batches, **RUN)
    started = time.time()
    m = train(config, workdir / model, RunOptions(data_dir=args.data_dir, progress=False, heap=args.heap,
                                                  checkpoint_every=0))
    info = json.loads((workdir / model / "model" / "model.json").read_text())
    loops = [h["loop_seconds"] for h in m["history"]]
    evals = [h["eval_seconds"] for h in m["history"]]
    return {"model": model, "npar": info["npar"], "first": loops[0],
            "epoch": statistics.median(loops[1:]) if len(loops) > 1 else loops[0],
            "eval": statistics.median(evals), "wall": time.time() - started,
            "test_accuracy": m["test_accuracy"], "images": m["train_size"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(models.MODELS), choices=list(models.MODELS))
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the first is reported apart")
    p.add_argument("--parallel-batches", type=int, default=4)
    p.add_argument("--train-size", type=int, default=None, help="training subset (default: all)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--heap", default="8g")
    p.add_argument("--workdir", default="/tmp/lars-systemml-model-epoch")
    p.add_argument("--output", default=str(REPO / "results" / "bench" / "model_epoch.md"))
    args = p.parse_args(argv)

    start = time.strftime("%Y-%m-%d %H:%M:%S")
    load0 = os.getloadavg()[0]
    rows = []
    for model in args.models:
        r = measure(model, args, Path(args.workdir))
        print(f"{model}: {r['epoch']:.1f} s/epoch, first {r['first']:.1f} s, eval {r['eval']:.2f} s", file=sys.stderr)
        rows.append(r)
    lines = ["# Seconds per training epoch of every registered model", "",
             f"Run {start} .. {time.strftime('%H:%M:%S')}: `python benchmarks/model_epoch.py "
             + " ".join(argv if argv is not None else sys.argv[1:]) + "`", "",
             *machine_description(),
             f"- load average at start {load0:.1f}, at end {os.getloadavg()[0]:.1f}",
             f"- {rows[0]['images']} training images of {args.dataset}, batch {args.batch_size}, "
             f"{args.parallel_batches} micro-batches, LARS, {args.epochs} epochs per model, default options", "",
             "s/epoch: the training loop (shuffle, forward, backward, update) of the epochs after the first; "
             "first epoch: the same for epoch 1 (JIT compilation, data read); test eval: the per-epoch "
             "evaluation of the test set.", "",
             "| model | parameters | s/epoch | first epoch s | test eval s | run wall s | test acc after the run |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['npar']:,} | {r['epoch']:.1f} | {r['first']:.1f} | {r['eval']:.2f} "
                     f"| {r['wall']:.0f} | {r['test_accuracy']:.4f} |")
    emit_report("\n".join(lines) + "\n", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
