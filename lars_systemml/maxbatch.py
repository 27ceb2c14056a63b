"""The largest batch size that reaches a target test accuracy within a config's epoch budget.

The candidates are a log2 grid from the config's smallest to its largest batch
size (``batch_grid``: 1024, 2048, ..., 16384, 32000 for 1024..32000). A batch size
passes when the mean test accuracy over its seeds (the config's seeds for that
cell, ``[[seeds_for]]`` included) is >= the target. Assuming accuracy does not
rise with the batch size, bisection finds the largest passing grid size with
about 2 + log2(grid length) evaluations: the largest size first (if it passes,
that is the answer), then the smallest (if it fails, none passes), then halving.

Runs are shared with ``lars-systemml sweep``: a cell already in the output
folder's results.csv (same run id and config hash) is reused, a new one is
trained and appended there, so a sweep and the finder never repeat each other.
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .errors import UserError
from .experiment import Experiment
from .fsutil import prepare_output_folder, write_json_atomically
from .results import append_result, git_commit, read_results
from .sweep import check_recorded, result_row, run_execution


@dataclass
class Trial:
    """One evaluated batch size: its runs' test accuracies (fractions) and where they came from."""

    batch_size: int
    accuracies: list[float]
    run_ids: list[str]
    reused: int
    new: int
    passed: bool = False
    diverged: int = 0

    @property
    def accuracy(self) -> float:
        return statistics.fmean(self.accuracies)


@dataclass
class MaxBatchResult:
    optimizer: str
    target: float
    epochs: int
    grid: list[int]
    answer: int | None
    trials: list[Trial] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = asdict(self)
        for trial, record in zip(self.trials, out["trials"]):
            record["accuracy"] = trial.accuracy
        return out


def batch_grid(smallest: int, largest: int) -> list[int]:
    """smallest * 2^k below largest, then largest itself."""
    if not 1 <= smallest <= largest:
        raise UserError(f"batch sizes must satisfy 1 <= smallest <= largest, got {smallest}, {largest}")
    grid = []
    b = smallest
    while b < largest:
        grid.append(b)
        b *= 2
    return grid + [largest]


def evaluate(experiment: Experiment, optimizer: str, batch_size: int, output: Path, options,
             train_fn: Callable | None = None, commit: str | None = None) -> Trial:
    """Reuse or run every seed of (optimizer, batch size); the runs' accuracies as a Trial."""
    if train_fn is None:
        from . import train as training

        train_fn = training.train
    cells = experiment.cells_for(optimizer, batch_size)
    if len(cells) != len(experiment.seeds_for(optimizer, batch_size)):
        raise UserError(f"{experiment.source} has a [grid]: max-batch needs one run per "
                        f"(optimizer, batch size, seed)")
    results = output / "results.csv"
    done = {row["run_id"]: row for row in read_results(results, complete=True)}
    trial = Trial(batch_size, [], [], 0, 0)
    for cell in cells:
        row = done.get(cell.run_id)
        if row is not None:
            check_recorded(row, cell.run_id, cell.config_hash, results, run_execution(options))
            trial.reused += 1
        else:
            metrics = train_fn(cell.config, output / "runs" / cell.run_id, options)
            row = result_row(experiment, cell, metrics, commit or git_commit())
            append_result(results, row)
            trial.new += 1
        trial.accuracies.append(float(row["test_accuracy"]))
        trial.run_ids.append(cell.run_id)
        trial.diverged += str(row["diverged"]).lower() == "true"
    return trial


def find_max_batch(experiment: Experiment, optimizer: str, target: float, output: Path, options,
                   train_fn: Callable | None = None, log: Callable[[str], None] | None = None) -> MaxBatchResult:
    """Bisection for the largest grid batch size whose mean test accuracy is >= ``target``."""
    if optimizer not in experiment.optimizers:
        raise UserError(f"{experiment.source} has no optimizer '{optimizer}' "
                        f"(it has {', '.join(experiment.optimizers)})")
    if not 0 < target <= 1:
        raise UserError(f"target must be a test accuracy in (0, 1], e.g. 0.98, got {target}")
    log = log or (lambda line: print(line, file=sys.stderr))
    prepare_output_folder(output)  # a folder that cannot be written fails here, before any run
    grid = batch_grid(min(experiment.batch_sizes), max(experiment.batch_sizes))
    epochs = experiment.cells_for(optimizer, grid[0])[0].config.epochs
    result = MaxBatchResult(optimizer, target, epochs, grid, None)
    commit = git_commit()

    def passes(i: int) -> bool:
        trial = evaluate(experiment, optimizer, grid[i], output, options, train_fn, commit)
        trial.passed = trial.accuracy >= target
        result.trials.append(trial)
        log(describe(trial, target))
        return trial.passed

    last = len(grid) - 1
    if passes(last):
        result.answer = grid[last]
    elif last > 0 and passes(0):
        lo, hi = 0, last  # invariant: grid[lo] passes, grid[hi] fails
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if passes(mid):
                lo = mid
            else:
                hi = mid
        result.answer = grid[lo]
    return result


def describe(trial: Trial, target: float) -> str:
    runs = ", ".join(f"{a:.4f}" for a in trial.accuracies)
    origin = " + ".join(x for x in (f"{trial.reused} reused" if trial.reused else "",
                                      f"{trial.new} new" if trial.new else "") if x)
    verdict = ">= target" if trial.passed else "< target"
    extra = f", {trial.diverged} diverged" if trial.diverged else ""
    return (f"  batch {trial.batch_size:>6}: mean test accuracy {100 * trial.accuracy:.2f}% {verdict} "
            f"(seeds: {runs}; {origin}{extra})")


def report(result: MaxBatchResult) -> str:
    """The answer in one paragraph: what was searched and the evidence, in evaluation order."""
    lines = [f"max-batch {result.optimizer}: target {100 * result.target:.2f}% mean test accuracy in "
             f"{result.epochs} epochs; grid {' '.join(map(str, result.grid))}; evaluated in this order:"]
    lines += [describe(t, result.target) for t in result.trials]
    if result.answer is None:
        lines.append(f"answer: none: even batch {result.grid[0]} stays below {100 * result.target:.2f}%")
    else:
        passed = {t.batch_size for t in result.trials if t.passed}
        failed = sorted(t.batch_size for t in result.trials if not t.passed)
        above = [b for b in failed if b > result.answer]
        tail = f"; the next grid size {above[0]} fails" if above else " (the largest on the grid)"
        assert result.answer in passed
        lines.append(f"answer: {result.answer}{tail}")
    return "\n".join(lines)


def write_json(result: MaxBatchResult, output: Path) -> Path:
    return write_json_atomically(output / f"max_batch-{result.optimizer}-{result.target:g}.json",
                                 result.as_dict())
