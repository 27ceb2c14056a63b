"""One training run: prepare the data, run dml/train.dml on SystemDS, collect metrics, save the model."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import data, datasets, models, runtime, saved_model, spark
from .checkpoint import Checkpoints
from .config import TrainConfig
from .errors import DMLError, UserError
from .fsutil import atomic_path, translate_os_errors, write_json_atomically
from .runfolder import RunFolder

HISTORY_COLUMNS = ["epoch", "train_loss", "test_loss", "test_accuracy", "lr", "steps", "seconds", "diverged"]
TRACE_COLUMNS = ["step", "epoch", "lr", "batch_loss"]
TRACE_FILE = "steps.csv"
LOG_FILE = "systemds.log"
FINAL_COLUMNS = ["train_accuracy", "test_accuracy", "train_loss", "test_loss", "diverged",
                 "epochs_run", "steps", "train_seconds"]
# How dml/train.dml's micro-batch parfor runs locally: SystemDS's defaults (threads of one JVM).
LOCAL_PARFOR = {"parfor_mode": "LOCAL", "parfor_opt": "RULEBASED"}


@dataclass
class RunOptions:
    """How (not what) to run: where the data is, the backend and its resources, output noise."""

    data_dir: str | None = None
    heap: str = "8g"
    verbose: bool = False
    progress: bool = True
    stats: bool = False
    # SystemDS -config settings, over runtime.run_settings() (e.g. {"sysds.native.blas": "none"})
    systemds_config: dict = field(default_factory=dict)
    spark: spark.SparkOptions | None = None  # None: the embedded local SystemDS
    # -nvargs of dml/train.dml over the ones derived from the config, for A/B measurements
    # of how the DML runs (e.g. {"parfor_opt": "NONE"}); never what it computes
    dml_overrides: dict = field(default_factory=dict)
    jvm_flags: list = field(default_factory=list)  # extra flags of the local SystemDS JVM
    checkpoint_every: int = 1  # write a checkpoint after every N-th epoch (0: never)
    # continue from output/checkpoint (see train()): "auto" (the default, which sweep, tune and
    # max-batch use) if it holds a checkpoint of this run, True likewise but say when there is
    # none, False: start over (the `train` command without --resume)
    resume: bool | str = "auto"


def _read_csv_matrix(path: Path, ncols: int) -> np.ndarray:
    values = np.loadtxt(path, delimiter=",", ndmin=2)
    if values.shape[1] != ncols:
        raise UserError(f"{path} has {values.shape[1]} columns, expected {ncols}: DML output is corrupt")
    return values


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


class _EpochProgress:
    """Fed by the DML script's ``@@`` lines: a progress bar over epochs, the per-epoch
    seconds, the tensor names, and the commit of each finished checkpoint."""

    def __init__(self, config: TrainConfig, enabled: bool, checkpoints: Checkpoints,
                 seconds: dict[int, tuple[float, float]]):
        from tqdm import tqdm

        label = f"{config.model} {config.optimizer} B={config.batch_size}"
        self.bar = tqdm(total=config.epochs, initial=len(seconds), desc=label, unit="epoch",
                        disable=not enabled, leave=False, file=sys.stderr)
        self.checkpoints = checkpoints
        self.seconds = dict(seconds)  # epoch -> (training loop, evaluation), also of resumed epochs
        self.names: list[str] = []

    def __call__(self, line: str) -> None:
        parts = line.split()
        if parts and parts[0] == "names" and len(parts) == 2:
            self.names = parts[1].split(",")
        if parts and parts[0] == "checkpoint" and len(parts) == 3:
            self.checkpoints.commit(int(parts[1]), parts[2], self.seconds)
        if parts and parts[0] == "time" and len(parts) >= 4:
            self.seconds[int(parts[1])] = (float(parts[2]), float(parts[3]))
        if parts and parts[0] == "epoch" and len(parts) >= 6:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{float(parts[3]):.4f}", test_acc=f"{float(parts[5]):.4f}")

    def close(self) -> None:
        self.bar.close()


def run_record(config: TrainConfig, prepared) -> dict:
    """What a checkpoint must match to be resumed: the run's identity and its prepared data."""
    return {"config": config.identity(), "data": str(prepared.folder)}


def train(config: TrainConfig, output: str | Path, options: RunOptions | None = None) -> dict:
    """Run one training and write ``output/metrics.json`` and ``output/model/``; return the metrics.

    Also writes ``output/steps.csv``, the per-step trace (TRACE_COLUMNS: 1-based
    step, epoch, learning rate, mean batch loss in nats), one row per update, and
    ``output/systemds.log``.

    Nothing is lost on failure (lars_systemml/runfolder.py): the result files are
    written to a hidden folder beside ``output`` (``.<name>.partial-<host>-<pid>``) and
    swapped in as the new ``output`` only when all of them are complete, so a failed,
    interrupted or killed run leaves an earlier run in ``output`` intact (a SystemDS
    failure adds its log there as ``systemds-failed.log``). ``output`` must be a run
    folder (new, empty, or an earlier run's): its old contents are replaced as a whole.

    The checkpoints are no result: while the run goes on they are written to
    ``output/checkpoint/`` after every ``options.checkpoint_every``-th epoch
    (lars_systemml/checkpoint.py), where an interrupted run leaves them to resume
    from; the swap removes them with the old folder.
    ``options.resume``: continue from the checkpoint there if it belongs to this run
    ("auto": if there is one, else start over; True: a checkpoint of another run is an
    error, and no checkpoint a note; False: start over).

    Everything that can be checked before the JVM starts (hyperparameters, the model
    against the data's shape, Java, the output folder (created and probed: an existing
    file, a read-only or full disk, missing permissions), data; Spark and its master) is
    checked first. A run whose loss becomes NaN/inf ends early and is reported with
    ``diverged: true``; a SystemDS or Spark failure raises DMLError, a file-system
    failure fsutil.FileSystemError, and neither changes ``output``'s earlier run.
    """
    options = options or RunOptions()
    config.validate()
    spec = models.get(config.model)
    spec.check_shape(datasets.describe(config.dataset, options.data_dir))
    runtime.check_java()
    if options.spark:
        spark.check_mode(options.spark, config.batch_size)
        spark.preflight(options.spark)
    started = time.time()
    folder = RunFolder(output)
    partial = folder.prepare()
    checkpoints = Checkpoints(folder.output)
    try:
        with translate_os_errors(partial):
            metrics = _run(config, spec, folder, checkpoints, options, started)
    except DMLError as exc:
        log = folder.keep_failed_log(partial / LOG_FILE)
        _drop_unresumable(folder, checkpoints)
        if log is not None:
            # the same class, so that a fatal one (runtime.JVMStartError) still stops a sweep
            raise type(exc)(str(exc).replace(str(partial / LOG_FILE), str(log))) from exc
        raise
    except BaseException:
        _drop_unresumable(folder, checkpoints)
        raise
    folder.commit()
    return metrics


def _drop_unresumable(folder: RunFolder, checkpoints: Checkpoints) -> None:
    """After a failure: remove the partial folder, and a checkpoint folder with no finished epoch
    (and the output folder, if this run created it and it is left empty)."""
    folder.discard()
    try:  # tidying only: never hide the failure that got us here
        if checkpoints.folder.is_dir() and checkpoints.latest() is None:
            checkpoints.clear()
        if not folder.existed and folder.output.is_dir() and not any(folder.output.iterdir()):
            folder.output.rmdir()
    except (OSError, ValueError):
        pass


def _run(config: TrainConfig, spec, folder: RunFolder, checkpoints: Checkpoints, options: RunOptions,
         started: float) -> dict:
    """train()'s work: the result files go to ``folder.partial``, the checkpoints to ``checkpoints``."""
    out = folder.partial
    t0 = time.time()
    prepared = data.prepare(config.dataset, options.data_dir, config.train_size,
                            config.test_size, config.subset)
    prepare_seconds = time.time() - t0

    resume_from = (checkpoints.check_resumable(run_record(config, prepared), strict=options.resume is True)
                   if options.resume else None)
    if options.resume is True and resume_from is None:
        print(f"note: no checkpoint in {checkpoints.folder} to resume from: starting at epoch 1", file=sys.stderr)
    checkpoints.start(run_record(config, prepared), keep=resume_from is not None)

    # the run's temporary folder (SystemDS scratch, the JVM's java.io.tmpdir): removed when the
    # run ends, and by the next run if this process is killed (runtime.work_dir)
    with runtime.work_dir() as tmp:
        settings = runtime.run_settings(tmp, config.precision)
        if options.spark:
            settings["sysds.scratch"] = spark.scratch_dir(options.spark, tmp)
        settings.update(options.systemds_config)
        sds_config = runtime.SystemDSConfig(settings).write(tmp / "systemds-config.xml")
        nvargs = {**prepared.paths, "fmt": prepared.fmt, **config.dml_args(),
                  **spec.script_args(config.model_options, prepared.shape),
                  "history": str(tmp / "history.csv"), "final": str(tmp / "final.csv"),
                  "trace": str(tmp / "trace.csv"), "model_dir": str(tmp / "model"),
                  # SystemDS rejects an empty -nvargs value: absent ones take train.dml's defaults
                  **({"checkpoint_dir": str(checkpoints.folder), "checkpoint_every": options.checkpoint_every}
                     if options.checkpoint_every else {}),
                  **({"resume_from": str(resume_from["folder"])} if resume_from else {}),
                  **(spark.PARFOR if options.spark else LOCAL_PARFOR), **options.dml_overrides}
        script = models.render(runtime.dml_dir() / "train.dml", config.model, tmp)
        if options.spark and options.spark.mode == "paramserv":  # docs/spark.md: the paramserv mode
            spark.check_partitions(prepared.train_size, config.batch_size, options.spark.workers)
            script = spark.render_paramserv(tmp / "model.dml", tmp, config.model)
            nvargs.update(spark.stage_training_data(prepared.paths, options.spark, tmp),
                          **spark.paramserv_args(tmp / "paramserv-functions.dml", options.spark.workers,
                                                 min(config.batch_size, prepared.train_size) // options.spark.workers))
        if options.spark:
            cmd, env = spark.submit_command(script, nvargs, sds_config, options.spark, tmp, heap=options.heap,
                                            stats=options.stats, name=f"lars-systemml {folder.output.name}")
        else:
            cmd, env = runtime.local_command(script, nvargs, sds_config, heap=options.heap,
                                             stats=options.stats, jvm_flags=options.jvm_flags,
                                             tmpdir=tmp / "java-tmp"), None
        log_path = out / LOG_FILE
        progress = _EpochProgress(config, options.progress, checkpoints,
                                  resume_from["seconds"] if resume_from else {})
        echo = (lambda line: print(line, file=sys.stderr)) if options.verbose else None
        t1 = time.time()
        run = spark.run_submit if options.spark else runtime.run_dml
        try:
            run(cmd, cwd=runtime.dml_dir(), on_progress=progress, on_output=echo, log_path=log_path, env=env)
        finally:
            progress.close()
        systemds_seconds = time.time() - t1
        if not (tmp / "final.csv").is_file():
            raise DMLError(f"SystemDS ended without writing its results (full log: {log_path})")
        history = _read_csv_matrix(tmp / "history.csv", len(HISTORY_COLUMNS))
        final = dict(zip(FINAL_COLUMNS, _read_csv_matrix(tmp / "final.csv", len(FINAL_COLUMNS))[0]))
        trace = _read_csv_matrix(tmp / "trace.csv", len(TRACE_COLUMNS))
        saved_model.save(tmp / "model", out / "model", config, spec, prepared, progress.names)
    trace = trace[trace[:, 0] > 0]  # no update taken: DML writes one zero row
    with atomic_path(out / TRACE_FILE) as path:
        np.savetxt(path, trace, delimiter=",", fmt=["%d", "%d", "%.17g", "%.17g"],
                   header=",".join(TRACE_COLUMNS), comments="")

    diverged = bool(final["diverged"]) or not (math.isfinite(final["train_loss"]) and math.isfinite(final["test_loss"]))
    metrics = {
        **config.as_dict(),
        "hyperparameters": config.hyperparameters(),
        "data_dir": prepared.source,
        "dataset_name": prepared.dataset_name,
        # what the data files are by content: a known data set's name, or "custom" (data.py)
        "data_identity": prepared.identity,
        "data_checksums": prepared.checksums,
        "shape": prepared.shape.script_args(),
        "train_size": prepared.train_size,
        "test_size": prepared.test_size,
        "train_accuracy": float(final["train_accuracy"]),
        "test_accuracy": float(final["test_accuracy"]),
        "generalization_error": float(final["train_accuracy"] - final["test_accuracy"]),
        "train_loss": _finite_or_none(final["train_loss"]),
        "test_loss": _finite_or_none(final["test_loss"]),
        "diverged": diverged,
        "epochs_run": int(final["epochs_run"]),
        "steps": int(final["steps"]),
        "wall_seconds": time.time() - started,
        "train_seconds": float(final["train_seconds"]),
        "systemds_seconds": systemds_seconds,
        "prepare_seconds": prepare_seconds,
        "resumed_from_epoch": resume_from["epoch"] if resume_from else None,
        "step_trace": TRACE_FILE,
        "model_dir": "model",
        "backend": "spark" if options.spark else "local",
        "spark_master": options.spark.master if options.spark else None,
        "spark_mode": options.spark.mode if options.spark else None,
        "workers": options.spark.workers if options.spark else None,
        "native_blas": settings.get("sysds.native.blas", "none"),
        "systemds_version": runtime.systemds_version(),
        "history": [
            {k: (_finite_or_none(v) if k not in ("epoch", "steps", "diverged") else int(v))
             for k, v in zip(HISTORY_COLUMNS, row)}
            for row in history
        ],
    }
    for row in metrics["history"]:
        row["diverged"] = bool(row["diverged"])
        if row["epoch"] in progress.seconds:  # "seconds" split into training loop and test evaluation
            row["loop_seconds"], row["eval_seconds"] = progress.seconds[row["epoch"]]
    write_json_atomically(out / "metrics.json", metrics)
    return metrics
