"""Run every cell of an experiment, appending each finished run to results.csv.

Resumable: a cell whose run_id (with the same config hash) is already in
results.csv is skipped, so an interrupted sweep continues where it stopped.
A cell that another results folder already ran with the identical configuration
(same config hash, e.g. the chosen point of an LR search) can be adopted from
there instead of trained again (``reuse``).
Rows go through the results store (lars_systemml/results.py): each is written with
one write() and flushed to disk, so Ctrl-C or a crash never loses or half-writes a
finished run; a diverged run is a row like any other.

Several sweeps may share one output folder (on one machine, or on several that mount
it): each run is claimed with a lock file (``<output>/locks/<run_id>.lock``, see
lars_systemml/locks.py) before it starts, and results.csv is read again once the lock
is held, so the processes split the runs between them and each run makes one row.
A lock left by a killed process of this machine is taken over; one held on another
machine is that machine's run (delete the lock file if that machine is gone).

A FatalError (no data and no download, no Java, no Spark master, a broken install, a
size larger than the data) stops the sweep at the first run that meets it.
"""
from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import locks
from .errors import UserError
from .experiment import Cell, Experiment
from .results import LATER_COLUMNS, RESULT_COLUMNS, append_result, git_commit, read_results
from .runtime import FatalError

# A simple cost model for --dry-run before any cell has finished: seconds per epoch of 60k
# images (training loop ~10 s + test evaluation ~0.8 s) plus per optimizer step, plus per run
# (JVM start, data read, compilation, final evaluation). Measured on a quiet 2-core machine
# (results/bench/epoch_time_epyc.md: 9.3-10.9 s/epoch at batch >= 4096, 19.5 s at 64 = 938 steps;
# outside the loop 7.5-8.7 s); check against finished runs with benchmarks/sweep_time.py.
SECONDS_PER_EPOCH = 11.0
SECONDS_PER_STEP = 0.01
SECONDS_PER_RUN = 9.0


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def model_seconds(batch_size: int, epochs: int, images: int) -> float:
    """The cost model's wall seconds of one run: ``epochs`` epochs of ``images`` training images."""
    steps_per_epoch = -(-images // min(batch_size, images))
    return SECONDS_PER_RUN + epochs * (SECONDS_PER_EPOCH * images / 60000 + SECONDS_PER_STEP * steps_per_epoch)


def estimate_seconds(cell: Cell, train_images: int = 60000) -> float:
    c = cell.config
    return model_seconds(c.batch_size, c.epochs, min(c.train_size or train_images, train_images))


def timed_local_runs(rows: list[dict]) -> list[dict]:
    """The rows that can calibrate the cost model: local runs with a measured wall time."""
    return [r for r in rows if r.get("backend", "local") == "local" and r.get("wall_seconds")]


def machine_factor(rows: list[dict]) -> float | None:
    """Measured over modelled wall time of finished local runs (None without any).

    The cost model's constants come from one quiet machine; a slower or busier one
    (seen here: 2.5x) would make every estimate short, so the finished runs of the
    results folder calibrate it. Rows whose numbers do not parse are left out.
    """
    measured = modelled = 0.0
    for row in timed_local_runs(rows):
        try:
            seconds = float(row["wall_seconds"])
            model = model_seconds(int(row["batch_size"]), int(row["epochs_run"]), int(row["train_size_used"]))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            continue
        if seconds > 0 and model > 0:
            measured += seconds
            modelled += model
    return measured / modelled if modelled else None


def _hint_rows(paths: list[Path]) -> tuple[list[dict], list[str]]:
    """The rows of other folders' results.csv, read only as a hint: (rows, the files skipped
    with why). An unreadable, garbled or foreign file is skipped, never an error."""
    rows, skipped = [], []
    for path in paths:
        try:
            rows += [r for r in read_results(path) if isinstance(r, dict)]
        except (UserError, OSError, UnicodeDecodeError, ValueError) as exc:
            skipped.append(f"{path} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
        except Exception as exc:  # e.g. csv.Error: a hint never stops a sweep
            skipped.append(f"{path} ({type(exc).__name__})")
    return rows, skipped


def calibration(output: Path) -> tuple[float, str]:
    """The cost model's factor for this machine and where it comes from, as (factor, note).

    From the output folder's finished runs; a new folder borrows those of its sibling
    results folders (``output/../*/results.csv``), since the factor is the machine's, not
    the config's. Those are only a hint: one that cannot be read (garbled, another
    program's columns, no permission) is skipped, with one warning line for all of them.
    (1.0, "") when nothing has finished anywhere near.
    """
    own, _ = _hint_rows([output / "results.csv"])  # its own problems are the sweep's errors, not here
    factor = machine_factor(own)
    if factor:
        return factor, f" (cost model x{factor:.2f}, from the finished runs)"
    try:
        siblings = [p for p in sorted(output.parent.glob("*/results.csv")) if p.parent != output]
    except OSError:
        siblings = []
    rows, skipped = _hint_rows(siblings)
    if skipped:
        print(f"warning: time estimate: skipped {len(skipped)} unreadable results file(s): {skipped[0]}"
              f"{' and others' if len(skipped) > 1 else ''}", file=sys.stderr)
    rows = timed_local_runs(rows)
    factor = machine_factor(rows)
    if factor:
        return factor, f" (cost model x{factor:.2f}, from {len(rows)} finished runs in {output.parent}/)"
    return 1.0, ""


def result_row(experiment: Experiment, cell: Cell, metrics: dict, commit: str) -> dict:
    row = {"config_name": experiment.name, "run_id": cell.run_id, "config_hash": cell.config_hash,
           **cell.config.as_dict()}
    row.update({k: metrics[k] for k in RESULT_COLUMNS if k in metrics and k not in row})
    if isinstance(metrics.get("data_checksums"), dict):  # what the data files were: one cell of text
        row["data_checksums"] = " ".join(f"{name}:{md5}" for name, md5 in metrics["data_checksums"].items())
    row["train_size_used"] = metrics["train_size"]
    row["test_size_used"] = metrics["test_size"]
    row["git_commit"] = commit
    row["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return row


def run_execution(options) -> str:
    """What of the execution changes a run's steps: "paramserv K=<workers>", else "".

    Local runs and the Spark parfor mode run the same DML steps (the same results), so they
    share ""; paramserv's workers each take B/K rows and update as a BSP server says.
    """
    spark = getattr(options, "spark", None)
    return f"paramserv K={spark.workers}" if spark is not None and spark.mode == "paramserv" else ""


def row_execution(row: dict) -> str:
    """``run_execution`` of the run a results row records."""
    return f"paramserv K={row.get('workers')}" if row.get("spark_mode") == "paramserv" else ""


def _execution_text(execution: str) -> str:
    return f"in the {execution} mode" if execution else "locally or in the Spark parfor mode"


def check_recorded(row: dict, run_id: str, config_hash: str, results: Path, execution: str | None = None) -> None:
    """A row of results.csv with ``run_id`` must be that run: the same config hash and, unless
    ``execution`` is None, the same ``run_execution``; else a UserError asking for another --output."""
    if row["config_hash"] != config_hash:
        raise UserError(f"{results} has run {run_id} from a different config "
                        f"(hash {row['config_hash']} != {config_hash}): use another --output")
    if execution is not None and row_execution(row) != execution:
        raise UserError(f"{results} has run {run_id} {_execution_text(row_execution(row))}, and this one runs "
                        f"{_execution_text(execution)}: use another --output")


def plan(experiment: Experiment, cells: list[Cell], output: Path,
         execution: str = "") -> tuple[list[Cell], list[Cell]]:
    """Split ``cells`` into (done, todo) against output/results.csv (``execution``: ``run_execution``)."""
    results = output / "results.csv"
    done_rows = {r["run_id"]: r for r in read_results(results)}
    done, todo = [], []
    for cell in cells:
        row = done_rows.get(cell.run_id)
        if row is None:
            todo.append(cell)
        else:
            check_recorded(row, cell.run_id, cell.config_hash, results, execution)
            done.append(cell)
    return done, todo


def reusable_runs(folders: list[Path], execution: str = "") -> dict[str, tuple[Path, dict]]:
    """The finished runs (diverged ones too) of other results folders by config hash: (folder, row).

    Only runs of the same ``execution`` (``run_execution``) count. The first folder that has a
    hash wins. A folder without results.csv is an error, so a mistyped path is not silently ignored.
    """
    found: dict[str, tuple[Path, dict]] = {}
    for folder in folders:
        if not (folder / "results.csv").is_file():
            raise UserError(f"--reuse {folder}: no results.csv there; name a folder written by "
                            f"`lars-systemml sweep`")
        for row in read_results(folder / "results.csv"):
            if row_execution(row) == execution:
                found.setdefault(row["config_hash"], (folder, row))
    return found


def adopt(experiment: Experiment, cell: Cell, source: Path, row: dict, output: Path,
          extra: dict | None = None) -> dict:
    """Copy another folder's finished run of ``cell``'s exact configuration into ``output``.

    The row keeps what the run measured and where it came from (git commit, finish time);
    only its config name and run id become this sweep's, and its LATER_COLUMNS (a tuning
    run's stage and trial) are ``extra``'s or empty. The run folder is copied with a note
    naming its origin.
    """
    src_run = source / "runs" / row["run_id"]
    dst_run = output / "runs" / cell.run_id
    if src_run.is_dir():
        shutil.copytree(src_run, dst_run, dirs_exist_ok=True)
        (dst_run / "reused_from.txt").write_text(f"{src_run}\n")
    # the row's role (a tuning stage and trial) is the one it has here, none unless given
    adopted = {**row, **dict.fromkeys(LATER_COLUMNS, ""), "config_name": experiment.name, "run_id": cell.run_id,
               **(extra or {})}
    append_row(output, adopted)
    return adopted


def lock_path(output: Path, run_id: str) -> Path:
    """The lock file that claims one run of a results folder."""
    return output / "locks" / f"{run_id}.lock"


RESULTS_LOCK = "results.csv.lock"
APPEND_WAIT_S = 300.0


def append_row(output: Path, row: dict) -> None:
    """results.append_result under the folder's results lock, so that processes sharing the
    folder append one at a time (two first rows would write two headers; on NFS, appends
    from several machines are not atomic)."""
    lock = locks.FileLock(output / "locks" / RESULTS_LOCK)
    deadline = time.time() + APPEND_WAIT_S
    while not lock.acquire():
        if time.time() > deadline:
            raise UserError(f"{lock.path} is held by {locks.describe(lock.holder)} for over "
                            f"{APPEND_WAIT_S:.0f} s: if that process is gone, delete the file")
        time.sleep(0.05)
    with lock:
        append_result(output / "results.csv", row)


def finished(output: Path, run_id: str) -> bool:
    """Whether results.csv already has the run (read again, e.g. once its lock is held)."""
    return any(r["run_id"] == run_id for r in read_results(output / "results.csv"))


def claim(output: Path, run_id: str) -> locks.FileLock | None:
    """The held lock of a run that is still to do, or None if another process holds it.

    None too if the run is in results.csv by now (another process finished it); the
    caller then has nothing to do. Use the lock as a context manager around the run
    and its row, so that the row is written before the lock goes.
    """
    lock = locks.FileLock(lock_path(output, run_id))
    try:
        if not lock.acquire():
            return lock  # not held by us: lock.holder says whose
    except OSError as exc:
        raise UserError(f"cannot write the lock file {lock.path} ({exc.strerror or exc}): the results "
                        f"folder must be writable") from None
    try:
        done = finished(output, run_id)
    except BaseException:
        lock.release()
        raise
    if done:
        lock.release()
        return None
    return lock


@dataclass
class Attempt:
    """What became of one run tried under its lock (``attempt_run``).

    status: "elsewhere" (another process finished it), "held" (another process runs it:
    ``holder`` says which), "reused" (adopted from ``source``), "trained" (``metrics``, in
    ``seconds`` of wall time) or "failed" (``error``, one line). ``row`` is the results row
    written here (reused, trained).
    """

    status: str
    row: dict | None = None
    holder: dict | None = None
    source: Path | None = None
    metrics: dict | None = None
    seconds: float = 0.0
    error: str = ""


def attempt_run(experiment: Experiment, cell: Cell, output: Path, reusable: dict[str, tuple[Path, dict]],
                train_fn, options, commit: str, extra: dict | None = None, stop_note: str = "") -> Attempt:
    """Claim one run of a shared results folder, then adopt it from ``reusable`` or train it.

    Its row is appended before the lock goes, so a process sharing the folder never runs it
    twice. A FatalError (the next runs would fail the same way) is raised again with
    ``stop_note`` appended; any other UserError is the run's failure ("failed").
    """
    lock = claim(output, cell.run_id)
    if lock is None:
        return Attempt("elsewhere")
    if not lock.held:
        return Attempt("held", holder=lock.holder)
    with lock:
        if cell.config_hash in reusable:
            source, found = reusable[cell.config_hash]
            row = adopt(experiment, cell, source, found, output, extra)
            return Attempt("reused", row=row, source=source / "runs" / found["run_id"])
        started = time.time()
        try:
            metrics = train_fn(cell.config, output / "runs" / cell.run_id, options)
        except FatalError as exc:
            raise FatalError(f"{exc} ({stop_note})" if stop_note else str(exc)) from None
        except UserError as exc:
            return Attempt("failed", error=str(exc))
        row = {**result_row(experiment, cell, metrics, commit), **(extra or {})}
        append_row(output, row)
    return Attempt("trained", row=row, metrics=metrics, seconds=time.time() - started)


def outcome_text(attempt: Attempt) -> str:
    """``diverged`` or ``test_acc=0.9812`` for a trained or reused run."""
    diverged = attempt.metrics["diverged"] if attempt.metrics else str(attempt.row.get("diverged")).lower() == "true"
    return "diverged" if diverged else f"test_acc={float(attempt.row['test_accuracy']):.4f}"


def held_elsewhere(held: dict[str, dict | None], output: Path) -> str:
    """One line about the runs other processes hold: whose, and what to do if they are gone."""
    first_id, holder = next(iter(held.items()))
    others = f" and {len(held) - 1} more" if len(held) > 1 else ""
    return (f"{len(held)} run(s) are being run by other processes ({first_id}: {locks.describe(holder)}{others}); "
            f"their rows go to {output / 'results.csv'}. If such a process is gone on another machine, "
            f"delete its lock in {output / 'locks'}/ and rerun")


def run_sweep(experiment: Experiment, cells: list[Cell], output: Path, options, dry_run: bool = False,
              largest_first: bool = True, reuse: list[Path] | None = None) -> int:
    """Run the cells not yet in results.csv; return the number of failed cells.

    ``reuse``: other results folders whose runs of an identical configuration are
    adopted (``adopt``) instead of trained again. Each run is claimed with a lock first
    (``claim``), so that sweeps sharing ``output`` split the runs; runs another process
    holds are left to it (one line says so). A FatalError stops the sweep (raised again,
    saying so).
    """
    from tqdm import tqdm

    from .train import train

    if not dry_run:  # a plan writes nothing
        output.mkdir(parents=True, exist_ok=True)
    execution = run_execution(options)
    done, todo = plan(experiment, cells, output, execution)
    if largest_first:  # the large-batch cells are the cheap and the telling ones
        todo.sort(key=lambda c: (-c.config.batch_size, c.config.optimizer, c.config.seed))
    reusable = reusable_runs(reuse or [], execution)
    adoptable = [c for c in todo if c.config_hash in reusable]
    todo = [c for c in todo if c.config_hash not in reusable]
    factor, calibrated = calibration(output)
    estimate = sum(estimate_seconds(c) for c in todo)
    reused = f", {len(adoptable)} to reuse" if adoptable else ""
    print(f"{experiment.name}: {len(cells)} runs, {len(done)} done{reused}, {len(todo)} to run, "
          f"estimated {_duration(estimate * factor)} on 2 cores{calibrated} -> {output}/results.csv",
          file=sys.stderr)
    if dry_run:
        for cell in adoptable:
            source, row = reusable[cell.config_hash]
            print(f"  {cell.run_id:<28} reuse {source / 'runs' / row['run_id']}")
        for cell in todo:
            print(f"  {cell.run_id:<28} epochs={cell.config.epochs} lr={cell.config.peak_lr():.6g} "
                  f"schedule={cell.config.schedule} "
                  f"~{estimate_seconds(cell) * factor / 60:.1f} min")
        return 0
    commit = git_commit()
    failures = 0
    held: dict[str, dict | None] = {}  # run id -> the record of the process that holds it
    bar = tqdm(total=round(estimate), unit="s", desc=experiment.name, file=sys.stderr,
               disable=not options.progress, bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")

    def run(cell: Cell, rest: int) -> bool:
        """Adopt or train one cell under its lock; False if another process holds it."""
        nonlocal failures
        if cell.config_hash not in reusable:
            bar.set_postfix_str(cell.run_id)
        attempt = attempt_run(experiment, cell, output, reusable, train, options, commit,
                              stop_note=f"the sweep stopped at {cell.run_id}: its other {rest} run(s) "
                                        f"would fail the same way")
        if attempt.status == "held":
            held[cell.run_id] = attempt.holder
            return False
        held.pop(cell.run_id, None)
        if attempt.status == "failed":
            failures += 1
            tqdm.write(f"FAILED {cell.run_id}: {attempt.error}", file=sys.stderr)
        elif attempt.status == "reused":
            tqdm.write(f"{cell.run_id}: reused {attempt.source} ({outcome_text(attempt)})", file=sys.stderr)
        elif attempt.status == "trained":
            tqdm.write(f"{cell.run_id}: {outcome_text(attempt)} ({attempt.seconds:.0f}s)", file=sys.stderr)
        return True

    try:
        pending = adoptable + todo
        while pending:  # again over the runs others held, while that gets anywhere
            waiting = []
            for index, cell in enumerate(pending):
                if run(cell, len(pending) - index - 1):
                    if cell in todo:
                        bar.update(round(estimate_seconds(cell)))
                else:
                    waiting.append(cell)
            if len(waiting) == len(pending):
                break
            pending = waiting
    finally:
        bar.close()
    if held:
        print(held_elsewhere(held, output), file=sys.stderr)
    return failures
