"""The ``lars-systemml`` command line: train, evaluate, predict, export, sweep, plot, max-batch, tune, doctor."""
from __future__ import annotations

import argparse
import sys

from . import runtime, spark
from .config import OPTIMIZERS, PRECISIONS, TrainConfig
from .errors import UserError
from .fsutil import atomic_path, prepare_output_folder, write_json_atomically, write_text_atomically
from .fsutil import describe as describe_os_error
from .models import MODELS
from .schedules import LR_SCALING, SCHEDULES

DEFAULTS = TrainConfig()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    return value


def add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", metavar="DIR", help="for mnist and fashion-mnist: the folder with the four IDX files (.gz or raw); default: "
                   "$LARS_SYSTEMML_DATA_DIR (MNIST) or $LARS_SYSTEMML_FASHION_DIR (Fashion-MNIST; else "
                   "a fashion-mnist folder next to $LARS_SYSTEMML_DATA_DIR), else the user cache (downloaded once)")


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--heap", default="8g", help="JVM heap of the SystemDS driver (default %(default)s)")
    g.add_argument("--verbose", action="store_true", help="show SystemDS/JVM output (default: only in "
                   "the run's systemds.log)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on stderr)")
    g.add_argument("--stats", action="store_true", help="run SystemDS with -stats (heavy hitters in the log)")


def add_train_options(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    g = p.add_argument_group("run (defaults: the paper's Table 1)")
    g.add_argument("--model", choices=list(MODELS), default=d.model,
                   help="the network (default %(default)s); see docs/engine.md to add one")
    g.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a model option, repeatable: " + "; ".join(
                       f"{s.name}: " + ", ".join(f"{k}={v}" for k, v in s.options.items())
                       for s in MODELS.values() if s.options))
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                   help="the update rule (default %(default)s); lars and lamb adapt the step per layer")
    g.add_argument("--batch-size", type=_positive_int, default=d.batch_size, metavar="B",
                   help="global batch size in images (default %(default)s)")
    g.add_argument("--epochs", type=_positive_int, default=d.epochs, metavar="E",
                   help="passes over the training set (default %(default)s)")
    g.add_argument("--lr", type=float, default=d.lr,
                   help="global learning rate (for --base-batch images when --lr-scaling is set; "
                        "default %(default)s)")
    g.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help="lr per step t: inverse_time lr/(1+decay*t) (paper), constant, or "
                        "warmup_poly: linear warmup then polynomial decay (default %(default)s)")
    g.add_argument("--lr-decay", type=float, default=d.lr_decay,
                   help="inverse-time decay per step: lr/(1+decay*t) (default %(default)s)")
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                   help="warmup_poly: epochs of linear warmup, may be fractional (default %(default)s)")
    g.add_argument("--poly-power", type=float, default=d.poly_power,
                   help="warmup_poly: decay exponent (default %(default)s)")
    g.add_argument("--lr-scaling", choices=LR_SCALING, default=d.lr_scaling,
                   help="scale --lr from --base-batch to --batch-size: linear (x B/base) or sqrt "
                        "(default %(default)s)")
    g.add_argument("--base-batch", type=_positive_int, default=d.base_batch,
                   help="the batch size --lr is given for (needed by --lr-scaling)")
    g.add_argument("--momentum", type=float, default=d.momentum,
                   help="momentum of sgd, nesterov and lars (default %(default)s)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="weight decay (default %(default)s)")
    g.add_argument("--trust-coef", type=float, default=d.trust_coef,
                   help="LARS trust coefficient eta (default %(default)s)")
    g.add_argument("--beta1", type=float, default=d.beta1,
                   help="adamw/lamb first-moment decay (default %(default)s)")
    g.add_argument("--beta2", type=float, default=d.beta2,
                   help="adamw/lamb second-moment decay (default %(default)s)")
    g.add_argument("--eps", type=float, default=d.eps, help="adamw/lamb epsilon (default %(default)s)")
    g.add_argument("--parallel-batches", type=_positive_int, default=d.parallel_batches, metavar="P",
                   help="micro-batches per global batch, computed in a parfor (default %(default)s)")
    g.add_argument("--include-biases", action="store_true",
                   help="apply weight decay and the trust ratio to biases too (default: plain momentum)")
    g.add_argument("--standardize", action="store_true",
                   help="shift and scale pixels by the training set's mean and standard deviation "
                        "(default: pixels in [0, 1])")
    g.add_argument("--eval-every", type=_positive_int, default=d.eval_every, metavar="N",
                   help="evaluate the test set after every N-th epoch and the last (default "
                        "%(default)s: every epoch); saves evaluation time when the curve is not needed")
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="single: SystemDS's native matrix multiply and conv2d_bias_add in float32, "
                        "needs native BLAS (default %(default)s); see docs/performance.md")
    g.add_argument("--seed", type=_positive_int, default=d.seed, metavar="S",
                   help="seed of the initial weights, the batch order and the subsets (default %(default)s)")
    g.add_argument("--dataset", default=d.dataset,
                   help="mnist (default), fashion-mnist, or a folder with dataset.json and train_x, train_y, "
                        "test_x, test_y (.npy or .csv; see README: Data)")
    g.add_argument("--train-size", type=_positive_int, default=None, metavar="N", help="training subset size (default: all)")
    g.add_argument("--test-size", type=_positive_int, default=None, metavar="N", help="test subset size (default: all)")
    g.add_argument("--subset", default=d.subset, choices=["stratified", "first"],
                   help="how subsets are picked: seeded class-stratified, or the first N (default %(default)s)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    from pathlib import Path

    from .datasets import is_known

    values = {k: getattr(args, k) for k in TrainConfig.field_names() if k != "model_options"}
    if not is_known(args.dataset) and Path(args.dataset).is_dir():  # a folder: recorded absolute
        values["dataset"] = str(Path(args.dataset).resolve())
    return TrainConfig(**values, model_options=",".join(args.model_option))


def add_precision_option(p: argparse.ArgumentParser) -> None:
    """``--precision`` of the commands that run a config's runs (sweep, tune, max-batch)."""
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="every run in this arithmetic (single: native matrix multiply and conv2d_bias_add "
                        "in float32; a run setting, so in the config hash and results.csv); "
                        "default: the config's, else double")


def apply_precision(plan, precision: str | None) -> None:
    """``--precision`` over the precision of every run of ``plan`` (an Experiment or a Protocol)."""
    from dataclasses import replace

    from .experiment import Cell, Experiment

    if precision is None:
        return
    if "precision" in getattr(plan, "grid", {}) or "precision" in getattr(plan, "space", {}):
        raise UserError(f"{plan.source} varies precision itself: leave out --precision")
    plan.base["precision"] = precision
    for table in plan.overrides.values():
        table.pop("precision", None)
    if isinstance(plan, Experiment):  # its cells were built when it was loaded
        plan.cells = [Cell(c.run_id, replace(c.config, precision=precision)) for c in plan.cells]


def start_notes(single: bool = False) -> None:
    """One-line warnings before runs start: no native BLAS here (once per process), and
    single precision without it (the runs would compute in double)."""
    runtime.warn_native_blas_once()
    if single and runtime.find_openblas() is None:
        print("warning: precision single needs native BLAS (OpenBLAS); without it these runs compute in double",
              file=sys.stderr)


def record_command(output, argv: list[str]) -> None:
    """Append the command line (``lars-systemml`` + argv) to ``output/commands.txt``.

    Results folders say how they were made; the command is the one `main` got, not the
    interpreter's, so that a programmatic ``main([...])`` is recorded as itself.
    """
    import shlex

    output = prepare_output_folder(output)
    with open(output / "commands.txt", "a") as f:
        f.write(shlex.join(["lars-systemml", *argv]) + "\n")


def cmd_train(args: argparse.Namespace) -> int:
    from .train import RunOptions, train

    config = config_from_args(args).validate()
    output = args.output or f"runs/{config.optimizer}-b{config.batch_size}-s{config.seed}"
    start_notes(config.precision == "single")
    options = RunOptions(data_dir=args.data_dir, heap=args.heap, verbose=args.verbose,
                         progress=not args.no_progress, stats=args.stats,
                         spark=spark.options_from_args(args), checkpoint_every=args.checkpoint_every,
                         resume=args.resume)
    m = train(config, output, options)
    status = "DIVERGED" if m["diverged"] else "ok"
    print(f"{config.optimizer} batch={config.batch_size} epochs={m['epochs_run']} steps={m['steps']}: "
          f"train_acc={m['train_accuracy']:.4f} test_acc={m['test_accuracy']:.4f} "
          f"gen_error={m['generalization_error']:+.4f} [{status}] "
          f"{m['wall_seconds']:.1f}s ({m['train_seconds'] / max(1, m['epochs_run']):.1f}s/epoch) -> {output}/metrics.json")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import data, datasets, saved_model

    model = saved_model.load(args.model_dir)
    out = Path(args.output) if args.output else model.folder.parent / "evaluation.json"
    prepare_output_folder(out.parent)  # before the JVM: an output that cannot be written fails now
    trained = model.info["dataset"]
    dataset = args.dataset or trained["dataset"]
    same_data = dataset == trained["dataset"]
    test_size = args.test_size or (trained["test_size"] if same_data else None)
    data_dir = args.data_dir or (trained["source"] if same_data else None)
    # data of another shape is refused before it is prepared (preparing a folder starts a JVM)
    saved_model.check_data_shape(model, datasets.describe(dataset, data_dir))
    # the training split is prepared too (it is cached), sized as little as possible
    prepared = data.prepare(dataset, data_dir, trained["train_size"] if same_data else None, test_size,
                            trained["subset"] if same_data else "stratified")
    result = {**saved_model.evaluate(model, prepared, heap=args.heap), "dataset": dataset,
              "data_dir": prepared.source, "test_size": prepared.test_size, "model_dir": str(model.folder)}
    write_json_atomically(out, result)
    print(f"{model.info['model']} on {dataset} ({prepared.test_size} test images): "
          f"test_acc={result['test_accuracy']:.4f} test_loss={result['test_loss']:.4f} -> {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from . import datasets, saved_model

    model = saved_model.load(args.model_dir)
    images = datasets.read_images(args.input, model.shape)
    out = Path(args.output)
    prepare_output_folder(out.parent)
    probs = saved_model.predict(model, images, heap=args.heap)
    header = ",".join([f"prob_{k}" for k in range(probs.shape[1])] + ["predicted"])
    table = np.column_stack([probs, probs.argmax(axis=1)])
    with atomic_path(out) as tmp:
        np.savetxt(tmp, table, delimiter=",", header=header, comments="",
                   fmt=["%.17g"] * probs.shape[1] + ["%d"])
    print(f"{len(probs)} predictions -> {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import saved_model

    model = saved_model.load(args.model_dir)
    out = Path(args.output) if args.output else model.folder / "weights.npz"
    prepare_output_folder(out.parent)
    saved_model.export_npz(model, out)
    print(out)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .experiment import load_experiment
    from .sweep import run_sweep
    from .train import RunOptions

    experiment = load_experiment(args.config)
    apply_precision(experiment, args.precision)
    cells = experiment.filtered(args.only or [])
    if not cells:
        raise UserError(f"no run of {args.config} matches --only {' '.join(args.only)}")
    output = Path(args.output or f"results/{experiment.name}")
    options = RunOptions(data_dir=args.data_dir, heap=args.heap, verbose=args.verbose,
                         progress=not args.no_progress, stats=args.stats,
                         spark=spark.options_from_args(args))
    if not args.dry_run:  # an output that cannot be written fails here, before any run
        prepare_output_folder(output)
        write_text_atomically(output / "config.toml", Path(args.config).read_text())
        record_command(output, args.argv)
    if not args.dry_run:
        start_notes(any(c.config.precision == "single" for c in cells))
    failures = run_sweep(experiment, cells, output, options, dry_run=args.dry_run,
                         reuse=[Path(p) for p in args.reuse or []])
    if not args.dry_run and (output / "results.csv").is_file():
        from .plot import make_report

        written = make_report([output])
        print(f"figures and summary: {', '.join(str(p) for p in written if p.suffix != '.svg')}")
    if failures:
        raise UserError(f"{failures} run(s) failed (see the FAILED lines above); "
                        f"finished runs are kept, rerun the same command to retry them")
    return 0


def cmd_max_batch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .experiment import load_experiment
    from .maxbatch import find_max_batch, report, write_json
    from .train import RunOptions

    experiment = load_experiment(args.config)
    apply_precision(experiment, args.precision)
    output = Path(args.output or f"results/{experiment.name}")
    options = RunOptions(data_dir=args.data_dir, heap=args.heap, verbose=args.verbose,
                         progress=not args.no_progress, stats=args.stats)
    record_command(output, args.argv)
    start_notes(any(c.config.precision == "single" for c in experiment.cells))
    result = find_max_batch(experiment, args.optimizer, args.target, output, options)
    print(report(result))
    print(f"evidence: {write_json(result, output)}, runs in {output / 'results.csv'}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .train import RunOptions
    from .tune import load_protocol, run_protocol
    from .tune_report import write_report

    protocol = load_protocol(args.config)
    apply_precision(protocol, args.precision)
    output = Path(args.output or f"results/{protocol.name}")
    if args.report:
        prepare_output_folder(output)
        for path in write_report(protocol, output):
            print(path)
        return 0
    options = RunOptions(data_dir=args.data_dir, heap=args.heap, verbose=args.verbose,
                         progress=not args.no_progress, stats=args.stats)
    if not args.dry_run:  # an output that cannot be written fails here, before any run
        prepare_output_folder(output)
        write_text_atomically(output / "config.toml", Path(args.config).read_text())
        record_command(output, args.argv)
        start_notes(protocol.base.get("precision") == "single" or any(
            t.get("precision") == "single" for t in protocol.overrides.values()))

    def report() -> None:  # after every cell, so the summary follows a long protocol
        if (output / "results.csv").is_file():
            write_report(protocol, output)

    failures = run_protocol(protocol, output, options, dry_run=args.dry_run,
                            reuse=[Path(p) for p in args.reuse or []], after_cell=report)
    if not args.dry_run:
        print(f"summary: {output / 'summary.md'}")
    if failures:
        raise UserError(f"{failures} cell(s) stopped at a failed run (see the FAILED lines above); "
                        f"finished runs are kept, rerun the same command to retry them")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .plot import make_report

    written = make_report([Path(p) for p in args.input], Path(args.output) if args.output else None,
                          args.title)
    for path in written:
        print(path)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    return doctor.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lars-systemml",
        description="Large-batch training (LARS, LAMB, SGD-momentum, Nesterov, AdamW) of any registered "
                    "model in DML on Apache SystemDS, locally or on Spark.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model once: metrics.json, steps.csv and the model in model/")
    add_train_options(p)
    add_data_options(p)
    add_runtime_options(p)
    spark.add_options(p)
    p.add_argument("--output", metavar="DIR", help="output folder (default runs/<optimizer>-b<B>-s<seed>): "
                   "metrics.json, steps.csv, systemds.log, the trained model in model/; an earlier run there "
                   "is replaced only once the new one has finished")
    p.add_argument("--checkpoint-every", type=_positive_int, default=1, metavar="N",
                   help="write a checkpoint after every N-th epoch (default %(default)s), for --resume")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same command from its last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test loss and accuracy of a trained model (by default on the "
                       "test set its run used)")
    p.add_argument("--model-dir", required=True, help="the output folder of `train` (or its model/ folder)")
    p.add_argument("--dataset", help="evaluate on another data set of the same shape (a name or a folder)")
    p.add_argument("--test-size", type=_positive_int, help="test subset size (default: the run's)")
    p.add_argument("--output", help="where to write the result (default DIR/evaluation.json)")
    add_data_options(p)
    add_runtime_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="class probabilities and predicted classes of a trained model for new images")
    p.add_argument("--model-dir", required=True, help="the output folder of `train` (or its model/ folder)")
    p.add_argument("--input", required=True, help="images as .npy: (N, C*H*W), (N, C, H, W) or (N, H, W); "
                   "uint8 pixels are scaled to [0, 1]")
    p.add_argument("--output", required=True, help="CSV to write: prob_0..prob_K-1, predicted")
    add_runtime_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="the trained weights as named arrays, to load elsewhere")
    p.add_argument("--model-dir", required=True, help="the output folder of `train` (or its model/ folder)")
    p.add_argument("--format", choices=["npz"], default="npz", help="file format (default %(default)s)")
    p.add_argument("--output", help="file to write (default DIR/model/weights.npz)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sweep", help="run every (optimizer, batch size, seed) of an experiment config, resumably")
    p.add_argument("--config", required=True, metavar="TOML", help="experiment TOML, e.g. experiments/paper.toml")
    p.add_argument("--output", metavar="DIR", help="results folder (default results/<config name>)")
    p.add_argument("--only", nargs="+", metavar="KEY=VALUE[,VALUE]",
                   help="run only matching cells, e.g. --only optimizer=lars batch_size=1024,2048")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the estimated time, run nothing")
    p.add_argument("--reuse", nargs="+", metavar="DIR",
                   help="other results folders: a run there with the identical configuration (config hash) "
                        "is copied in instead of trained again, e.g. the chosen point of an LR search")
    add_precision_option(p)
    add_data_options(p)
    add_runtime_options(p)
    spark.add_options(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("max-batch", help="the largest batch size reaching a target test accuracy "
                       "within a config's epoch budget (bisection on a log2 grid, reusing finished runs)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, required=True,
                   help="the optimizer whose largest batch size is sought (one of the config's)")
    p.add_argument("--target", type=float, required=True, help="mean test accuracy over seeds, e.g. 0.98")
    p.add_argument("--config", required=True, metavar="TOML", help="experiment TOML, e.g. experiments/tuned.toml: its "
                   "smallest..largest batch sizes span the grid, its settings define every run")
    p.add_argument("--output", metavar="DIR", help="results folder shared with `sweep` (default results/<config name>)")
    add_precision_option(p)
    add_data_options(p)
    add_runtime_options(p)
    p.set_defaults(func=cmd_max_batch)

    p = sub.add_parser("tune", help="an equal-budget tuning protocol: the same seeded random search, "
                       "successive halving and 3-seed finals for every (optimizer, batch size), resumably")
    p.add_argument("--config", required=True, metavar="TOML", help="protocol TOML with a [search] table, e.g. experiments/fair.toml")
    p.add_argument("--output", metavar="DIR", help="results folder (default results/<config name>)")
    p.add_argument("--dry-run", action="store_true", help="print the trials, the plan and the estimated time, "
                   "run nothing")
    p.add_argument("--reuse", nargs="+", metavar="DIR",
                   help="other results folders: a run there with the identical configuration (config hash) "
                        "is copied in instead of trained again")
    p.add_argument("--report", action="store_true",
                   help="only (re)write summary.md and the best-so-far figures from results.csv")
    add_precision_option(p)
    add_data_options(p)
    add_runtime_options(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("plot", help="figures (PNG, SVG) and summary.md from results.csv")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="results folder(s) or CSV file(s); several are drawn on one figure")
    p.add_argument("--output", metavar="DIR", help="folder to write the figures and summary.md to (default: the first input folder)")
    p.add_argument("--title", help="figure and summary title (default: the config names)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("doctor", help="check this machine: Java, SystemDS, native BLAS, the data, and "
                       "optionally a Spark master; each line OK or FAIL with the fix (exit 1 if any fails)")
    from .doctor import add_options as add_doctor_options

    add_doctor_options(p)
    p.set_defaults(func=cmd_doctor)
    return parser


def _interrupt(signum, frame):
    # SIGTERM (kill, a scheduler's stop) unwinds like Ctrl-C, so the SystemDS JVM is stopped too.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal

    signal.signal(signal.SIGTERM, _interrupt)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file-system failure not met before: one line naming the path and the fix
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
