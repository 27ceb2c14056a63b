"""A tuning protocol as code: the same random search for every (optimizer, batch size) cell.

A protocol config (TOML, e.g. experiments/fair.toml) declares::

    name = "fair"                  # required; recorded in every results row
    description = "..."
    dataset = "mnist"              # optional data keys: dataset, train_size, test_size, subset
    epochs = 30                    # the epoch budget of every full run
    optimizers = ["sgd", "lars"]
    batch_sizes = [16384, 32000]
    [hyperparameters]              # fixed TrainConfig fields for every trial
    schedule = "warmup_poly"
    [overrides.lars]               # fixed per-optimizer fields
    include_biases = true
    [search]
    trials = 6                     # trials per cell, the same for every cell
    sampler_seed = 2026            # draws the trials
    seed = 1                       # the training seed of every trial
    final_seeds = [1, 2, 3]        # the best trial's configuration is run with these
    rung_epochs = 10               # optional successive halving (with keep): screen runs ...
    keep = 1                       # ... and how many of them continue to full runs
    [search.space]                 # what each trial draws; lr is required
    warmup_epochs = { uniform = [0.5, 6.0] }
    lr = { sgd = { log_uniform = [0.003, 3.0] }, lars = { log_uniform = [0.3, 300.0] } }

A distribution is ``{ log_uniform = [low, high] }``, ``{ uniform = [low, high] }`` or
``{ choice = [a, b, ...] }``; a searched field takes one for all optimizers or one per
optimizer (then for every optimizer, so that every cell searches the same fields).

The protocol, applied identically to every cell:

1. **Trials.** ``trials`` points drawn once from the space by a Latin hypercube with
   ``sampler_seed``: per searched field, its range (in log scale for log_uniform) is cut
   into ``trials`` equal strata and each trial gets one stratum, at a random place in it.
   The draws are quantiles shared by every cell (trial k has the same quantile of each
   field in every cell), mapped through each optimizer's own ranges; they do not depend on
   the batch size. Values are rounded to 4 significant digits.
2. **Screen** (with ``rung_epochs``): every trial is trained as a complete run of
   ``rung_epochs`` epochs: the same peak lr and decay power, with the schedule, warmup
   included, compressed to the shorter run (``warmup_epochs * rung_epochs / epochs``), so a
   screen run is a short run of its own, not the first part of a full one. The ``keep``
   best by test accuracy (diverged runs last, ties to the lower trial number) continue.
   Without halving every trial is a full run.
3. **Full runs**: the continuing trials trained for ``epochs`` epochs; the best by test
   accuracy is the cell's configuration.
4. **Finals**: that configuration trained with every seed of ``final_seeds``; the run at
   the trials' own seed is its full run (the same run id and config hash), not run twice.

Every run is a row of ``results.csv`` (the results store) with its stage ("screen",
"full", "final") and trial number; run ids are ``<optimizer>-b<batch>-s<seed>-t<trial>``
plus ``-e<rung_epochs>`` for a screen run. The tuner works out from results.csv what is
done, so a killed tuner loses at most the run under way; runs of an identical
configuration in other folders can be adopted (``reuse``) as in ``sweep``.

Several tuners may share one output folder (on one machine or on several that mount it):
each run is claimed with a lock file first, as in ``sweep``, so that they split the runs
and each run makes one row; a cell whose stage waits for runs another tuner holds is
left for later (revisited while that gets anywhere, else to that tuner). A FatalError
(no data, no Java, ...) stops the tuner at the first run that meets it.

Selection uses the test accuracy, as the project's other searches did (there is no
validation split); the finals' other seeds are not selected on.
"""
from __future__ import annotations

import itertools
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config import OPTIMIZERS, TrainConfig
from .errors import UserError
from .experiment import DATA_KEYS, HYPER_KEYS, Cell, _check_keys, _int_list, _require, read_config
from .results import git_commit, read_results
from .sweep import (_duration, attempt_run, calibration, check_recorded, estimate_seconds, held_elsewhere, outcome_text,
                    reusable_runs, run_execution)

TOP_KEYS = {"name", "description", "dataset", "train_size", "test_size", "subset", "epochs",
            "optimizers", "batch_sizes", "hyperparameters", "overrides", "search", "reference"}
SEARCH_KEYS = {"trials", "sampler_seed", "seed", "final_seeds", "rung_epochs", "keep", "space"}
DISTRIBUTIONS = ("log_uniform", "uniform", "choice")
# the peak lr is searched directly: a scaling rule would make it another number
SEARCHABLE = HYPER_KEYS - {"lr_scaling", "base_batch"}


def _round(x: float) -> float:
    """4 significant digits: readable run settings, and the same float on every machine."""
    return float(f"{x:.4g}")


@dataclass(frozen=True)
class Distribution:
    """One searched field's range: ``value(u)`` maps a quantile u in [0, 1) into it."""

    kind: str  # one of DISTRIBUTIONS
    args: tuple

    def value(self, u: float):
        if self.kind == "choice":
            return self.args[min(int(u * len(self.args)), len(self.args) - 1)]
        low, high = self.args
        if self.kind == "log_uniform":
            return _round(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
        return _round(low + u * (high - low))

    def __str__(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.args))
        return f"{self.kind.replace('_', '-')} [{self.args[0]:g}, {self.args[1]:g}]"


@dataclass
class Run:
    """One training run of the protocol: its id, settings, stage and trial number (1-based)."""

    run_id: str
    config: TrainConfig
    stage: str  # "screen", "full" or "final"
    trial: int

    @property
    def cell(self) -> Cell:
        return Cell(self.run_id, self.config)

    @property
    def config_hash(self) -> str:
        return self.cell.config_hash


@dataclass
class Protocol:
    """A parsed protocol config: the cells, the search space and the halving rule."""

    name: str
    description: str
    source: str
    optimizers: list[str]
    batch_sizes: list[int]
    epochs: int
    base: dict                     # data keys, epochs and [hyperparameters]
    overrides: dict                # optimizer -> fields
    space: dict                    # field -> Distribution, or optimizer -> Distribution
    trials: int
    sampler_seed: int
    seed: int
    final_seeds: list[int]
    rung_epochs: int | None = None
    keep: int | None = None
    reference: list[str] = field(default_factory=list)  # results folders shown beside the finals
    _quantiles: dict = field(default_factory=dict, repr=False)

    @property
    def halving(self) -> bool:
        return self.rung_epochs is not None

    def cells(self) -> list[tuple[str, int]]:
        """(optimizer, batch size) in the order the tuner runs them: largest batch first."""
        return [(o, b) for b in sorted(self.batch_sizes, reverse=True) for o in self.optimizers]

    def space_for(self, optimizer: str) -> dict[str, Distribution]:
        return {name: d if isinstance(d, Distribution) else d[optimizer] for name, d in self.space.items()}

    def quantiles(self) -> dict[str, list[float]]:
        """Per searched field, trial k's quantile in [0, 1): a Latin hypercube seeded by sampler_seed.

        Fields are drawn in sorted order, each from a fresh permutation of the strata, so
        the draws depend only on sampler_seed, trials and the searched fields' names.
        """
        if not self._quantiles:
            rng = random.Random(self.sampler_seed)
            for name in sorted(self.space):
                strata = rng.sample(range(self.trials), self.trials)
                self._quantiles[name] = [(s + rng.random()) / self.trials for s in strata]
        return self._quantiles

    def trial_values(self, optimizer: str, trial: int) -> dict:
        """The searched settings of ``trial`` (1-based) for ``optimizer``."""
        q = self.quantiles()
        return {name: dist.value(q[name][trial - 1]) for name, dist in sorted(self.space_for(optimizer).items())}

    def _config(self, optimizer: str, batch_size: int, trial: int, seed: int, epochs: int) -> TrainConfig:
        values = {**self.base, **self.overrides.get(optimizer, {}), **self.trial_values(optimizer, trial),
                  "optimizer": optimizer, "batch_size": batch_size, "seed": seed}
        if epochs != self.epochs:  # the same schedule, compressed to the shorter run
            values["warmup_epochs"] = _round(values.get("warmup_epochs", 0.0) * epochs / self.epochs)
            values["epochs"] = epochs
        try:
            return TrainConfig(**values).validate()
        except (UserError, TypeError) as exc:
            raise UserError(f"{self.source}: {optimizer} batch {batch_size} trial {trial}: {exc}") from None

    def _id(self, optimizer: str, batch_size: int, seed: int, trial: int) -> str:
        return f"{optimizer}-b{batch_size}-s{seed}-t{trial:0{max(2, len(str(self.trials)))}d}"

    def screen_run(self, optimizer: str, batch_size: int, trial: int) -> Run:
        """The first run of a trial: a screen run with halving, else its full run."""
        if not self.halving:
            return self.full_run(optimizer, batch_size, trial)
        config = self._config(optimizer, batch_size, trial, self.seed, self.rung_epochs)
        return Run(self._id(optimizer, batch_size, self.seed, trial) + f"-e{self.rung_epochs}", config,
                   "screen", trial)

    def full_run(self, optimizer: str, batch_size: int, trial: int, seed: int | None = None) -> Run:
        """``trial`` for the whole budget at ``seed`` (default: the trials' seed; others are finals)."""
        seed = self.seed if seed is None else seed
        config = self._config(optimizer, batch_size, trial, seed, self.epochs)
        return Run(self._id(optimizer, batch_size, seed, trial), config,
                   "full" if seed == self.seed else "final", trial)

    def continuing(self) -> int:
        """How many trials per cell get a full run."""
        return self.keep if self.halving else self.trials

    def describe(self) -> str:
        """The protocol in one sentence."""
        seeds = ", ".join(map(str, self.final_seeds))
        if self.halving:
            middle = (f"screened as complete {self.rung_epochs}-epoch runs (schedule compressed), the best "
                      f"{self.keep} by test accuracy trained for {self.epochs} epochs")
        else:
            middle = f"each trained for {self.epochs} epochs"
        return (f"per (optimizer, batch size): {self.trials} trials (Latin hypercube, sampler seed "
                f"{self.sampler_seed}, training seed {self.seed}), {middle}; the best configuration run "
                f"with seeds {seeds}")


# --- parsing -----------------------------------------------------------------------------


def _distribution(value, where: str, source: str) -> Distribution:
    shape = "{ log_uniform = [low, high] }, { uniform = [low, high] } or { choice = [a, b, ...] }"
    _require(isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS, source,
             f"{where} must be one of {shape}")
    kind, args = next(iter(value.items()))
    _require(isinstance(args, list) and args, source, f"{where}: {kind} needs a non-empty list")
    if kind == "choice":
        return Distribution(kind, tuple(args))
    numbers = all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args)
    _require(len(args) == 2 and numbers and args[0] < args[1], source,
             f"{where}: {kind} needs [low, high] with low < high, got {args}")
    _require(kind != "log_uniform" or args[0] > 0, source, f"{where}: log_uniform needs low > 0, got {args[0]}")
    return Distribution(kind, (float(args[0]), float(args[1])))


def _space(raw: dict, optimizers: list[str], fixed: set[str], source: str) -> dict:
    _require(isinstance(raw, dict) and raw, source, "[search.space] must declare the searched fields, lr at least")
    _check_keys(raw, SEARCHABLE, "[search.space]", source)
    _require("lr" in raw, source, "[search.space] must search lr (the peak learning rate) for every optimizer")
    both = sorted(set(raw) & fixed)
    _require(not both, source, f"{', '.join(both)} both fixed ([hyperparameters]/[overrides]) and searched; "
             f"keep one")
    space = {}
    for name, value in raw.items():
        where = f"[search.space] {name}"
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            _check_keys(value, set(optimizers), where, source)
            missing = [o for o in optimizers if o not in value]
            _require(not missing, source, f"{where} has no range for {', '.join(missing)}: every cell "
                     f"searches the same fields")
            space[name] = {o: _distribution(value[o], f"{where}.{o}", source) for o in optimizers}
        else:
            space[name] = _distribution(value, where, source)
    return space


def _integer(raw: dict, key: str, low: int, source: str) -> int:
    value = raw.get(key)
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= low, source,
             f"[search] {key} must be an integer >= {low}, got {value!r}")
    return value


def _reference(raw: dict, source: str) -> list[str]:
    folders = raw.get("reference", [])
    _require(isinstance(folders, list) and all(isinstance(f, str) and f for f in folders), source,
             "'reference' must be a list of results folders (e.g. [\"results/tuned\"])")
    return folders


def load_protocol(path: str | Path) -> Protocol:
    """Parse and validate a protocol config; every run it can make is validated too."""
    raw, source = read_config(path, "experiments/fair.toml")
    _require("search" in raw, source, "no [search] table: this is no tuning protocol (see experiments/fair.toml); "
             "run a sweep config with `lars-systemml sweep`")
    _check_keys(raw, TOP_KEYS, "the top level", source)
    _require(isinstance(raw.get("name"), str) and raw["name"], source, "'name' (a string) is required")
    _require(isinstance(raw.get("epochs"), int), source, "'epochs' (an integer) is required: the budget of every full run")
    optimizers = raw.get("optimizers")
    _require(isinstance(optimizers, list) and optimizers and all(o in OPTIMIZERS for o in optimizers)
             and len(set(optimizers)) == len(optimizers), source,
             f"'optimizers' must be a non-empty list without duplicates from {', '.join(OPTIMIZERS)}")
    batch_sizes = _int_list(raw, "batch_sizes", source)
    shared = raw.get("hyperparameters", {})
    _check_keys(shared, HYPER_KEYS, "[hyperparameters]", source)
    overrides = raw.get("overrides", {})
    _check_keys(overrides, set(optimizers), "[overrides]", source)
    for opt, table in overrides.items():
        _check_keys(table, HYPER_KEYS, f"[overrides.{opt}]", source)
    fixed = set(shared) | {k for table in overrides.values() for k in table}
    scaled = sorted(fixed & {"lr_scaling", "base_batch"})
    _require(not scaled, source, f"{', '.join(scaled)}: a protocol searches the peak lr itself; remove them")

    search = raw["search"]
    _require(isinstance(search, dict), source, "'search' must be a table: [search]")
    _check_keys(search, SEARCH_KEYS, "[search]", source)
    trials = _integer(search, "trials", 1, source)
    rung_epochs, keep = search.get("rung_epochs"), search.get("keep")
    _require((rung_epochs is None) == (keep is None), source,
             "[search] rung_epochs and keep go together (successive halving), or neither")
    if rung_epochs is not None:
        rung_epochs = _integer(search, "rung_epochs", 1, source)
        _require(rung_epochs < raw["epochs"], source,
                 f"[search] rung_epochs must be < epochs ({raw['epochs']}), got {rung_epochs}")
        keep = _integer(search, "keep", 1, source)
        _require(keep <= trials, source, f"[search] keep must be <= trials ({trials}), got {keep}")
    protocol = Protocol(
        name=raw["name"], description=raw.get("description", ""), source=source, optimizers=optimizers,
        batch_sizes=batch_sizes, epochs=raw["epochs"],
        base={**{k: raw[k] for k in DATA_KEYS if k in raw}, **shared}, overrides=overrides,
        space=_space(search.get("space"), optimizers, fixed, source), trials=trials,
        sampler_seed=_integer(search, "sampler_seed", 0, source), seed=_integer(search, "seed", 0, source),
        final_seeds=_int_list(search, "final_seeds", f"{source}: [search]"), rung_epochs=rung_epochs, keep=keep,
        reference=_reference(raw, source))
    for (opt, batch), trial in itertools.product(protocol.cells(), range(1, trials + 1)):
        protocol.screen_run(opt, batch, trial)  # every setting any run can have is valid
        for seed in protocol.final_seeds:
            protocol.full_run(opt, batch, trial, seed)
    return protocol


# --- selection ---------------------------------------------------------------------------


def score(row: dict) -> float:
    """A finished run's test accuracy for ranking; a diverged or unmeasured run ranks last."""
    try:
        accuracy = float(row["test_accuracy"])
    except (KeyError, ValueError):
        return -math.inf
    diverged = str(row.get("diverged", "")).lower() == "true"
    return -math.inf if diverged or not math.isfinite(accuracy) else accuracy


def ranked(rows: dict[int, dict]) -> list[int]:
    """Trial numbers best first: by test accuracy, ties to the lower trial number."""
    return sorted(rows, key=lambda t: (-score(rows[t]), t))


@dataclass
class CellProgress:
    """What results.csv holds for one cell, and the selections it determines so far."""

    optimizer: str
    batch_size: int
    screen: dict[int, dict] = field(default_factory=dict)   # trial -> row of its first run
    kept: list[int] = field(default_factory=list)           # trials continued (once the screen is complete)
    full: dict[int, dict] = field(default_factory=dict)     # kept trial -> row of its full run
    best: int | None = None                                  # once every kept trial has its full run
    finals: dict[int, dict] = field(default_factory=dict)   # seed -> row of the best trial's run

    def complete(self, protocol: Protocol) -> bool:
        return self.best is not None and len(self.finals) == len(protocol.final_seeds)


def _row(rows: dict[str, dict], run: Run, results: Path, execution: str | None = None) -> dict | None:
    row = rows.get(run.run_id)
    if row is not None:
        check_recorded(row, run.run_id, run.config_hash, results, execution)
    return row


def progress(protocol: Protocol, optimizer: str, batch_size: int, rows: dict[str, dict],
             results: Path = Path("results.csv"), execution: str | None = None) -> CellProgress:
    """The cell's state from the rows of results.csv by run id (a row of another config is an
    error; so is one of another ``sweep.run_execution`` unless ``execution`` is None)."""
    p = CellProgress(optimizer, batch_size)
    for trial in range(1, protocol.trials + 1):
        row = _row(rows, protocol.screen_run(optimizer, batch_size, trial), results, execution)
        if row is not None:
            p.screen[trial] = row
    if len(p.screen) < protocol.trials:
        return p
    p.kept = ranked(p.screen)[: protocol.continuing()]
    for trial in p.kept:
        row = _row(rows, protocol.full_run(optimizer, batch_size, trial), results, execution)
        if row is not None:
            p.full[trial] = row
    if len(p.full) < len(p.kept):
        return p
    p.best = ranked(p.full)[0]
    for seed in protocol.final_seeds:
        row = _row(rows, protocol.full_run(optimizer, batch_size, p.best, seed), results, execution)
        if row is not None:
            p.finals[seed] = row
    return p


def rows_by_id(results: Path) -> dict[str, dict]:
    return {row["run_id"]: row for row in read_results(results)}


# --- planning and running -----------------------------------------------------------------


def _settings(values: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def plan_lines(protocol: Protocol, output: Path, reusable: dict, factor: float,
               execution: str = "") -> tuple[list[str], dict]:
    """The dry-run plan of every cell (lines) and its totals: runs, done, reuse, to run, seconds
    (``execution``: ``sweep.run_execution`` of the runs to come)."""
    rows = rows_by_id(output / "results.csv")
    totals = {"runs": 0, "done": 0, "reuse": 0, "run": 0, "seconds": 0.0}
    lines = []

    def account(run: Run, row: dict | None) -> str:
        totals["runs"] += 1
        if row is not None:
            totals["done"] += 1
            return f"done: test {100 * score(row):.2f}%" if score(row) > -math.inf else "done: diverged"
        if run.config_hash in reusable:
            totals["reuse"] += 1
            source, found = reusable[run.config_hash]
            return f"reuse {source / 'runs' / found['run_id']}"
        seconds = estimate_seconds(run.cell) * factor
        totals["run"] += 1
        totals["seconds"] += seconds
        return f"~{seconds / 60:.1f} min"

    def pending(count: int, example: Run, what: str) -> None:
        seconds = estimate_seconds(example.cell) * factor
        totals["runs"] += count
        totals["run"] += count
        totals["seconds"] += count * seconds
        lines.append(f"    then {what}: {count} run(s) of {example.config.epochs} epochs, ~{seconds / 60:.1f} min each")

    extra_seeds = [s for s in protocol.final_seeds if s != protocol.seed]
    for opt, batch in protocol.cells():
        p = progress(protocol, opt, batch, rows, output / "results.csv", execution)
        lines.append(f"{opt} b{batch}:")
        for trial in range(1, protocol.trials + 1):
            run = protocol.screen_run(opt, batch, trial)
            lines.append(f"  {run.run_id:<28} {run.stage:<6} {run.config.epochs:>3} epochs  "
                         f"{_settings(protocol.trial_values(opt, trial))}  [{account(run, p.screen.get(trial))}]")
        if protocol.halving:
            if p.kept:
                for trial in p.kept:
                    run = protocol.full_run(opt, batch, trial)
                    lines.append(f"  {run.run_id:<28} {run.stage:<6} {run.config.epochs:>3} epochs  "
                                 f"continues t{trial}  [{account(run, p.full.get(trial))}]")
            else:
                pending(protocol.keep, protocol.full_run(opt, batch, 1), f"the best {protocol.keep} of the screen")
        if p.best is not None:
            for seed in extra_seeds:
                run = protocol.full_run(opt, batch, p.best, seed)
                lines.append(f"  {run.run_id:<28} {run.stage:<6} {run.config.epochs:>3} epochs  "
                             f"best trial t{p.best}  [{account(run, p.finals.get(seed))}]")
        elif extra_seeds:
            pending(len(extra_seeds), protocol.full_run(opt, batch, 1, extra_seeds[0]),
                    f"the best trial at seeds {', '.join(map(str, extra_seeds))}")
    return lines, totals


class _CellFailed(Exception):
    """A run of the cell failed; the cell's later stages wait for a rerun."""


class _CellWaiting(Exception):
    """Another process holds a run of the cell's stage: its later stages wait for that run."""


def run_protocol(protocol: Protocol, output: Path, options, dry_run: bool = False,
                 reuse: list[Path] | None = None, train_fn: Callable | None = None,
                 log: Callable[[str], None] | None = None, after_cell: Callable[[], None] | None = None) -> int:
    """Run what results.csv does not hold yet, cell by cell; return the number of failed cells.

    ``train_fn(config, run_dir, options) -> metrics`` (default: lars_systemml.train.train);
    ``reuse``: other results folders whose runs of an identical configuration are adopted;
    ``after_cell()`` is called after each cell (e.g. to refresh the report). Each run is
    claimed with a lock (sweep.claim); a cell waiting for runs other processes hold is
    tried again after the others, as long as that gets anywhere. A FatalError stops it.
    """
    log = log or (lambda line: print(line, file=sys.stderr))
    results = output / "results.csv"
    execution = run_execution(options)
    reusable = reusable_runs(reuse or [], execution)
    factor, calibrated = calibration(output)
    lines, totals = plan_lines(protocol, output, reusable, factor, execution)
    reused = f", {totals['reuse']} to reuse" if totals["reuse"] else ""
    log(f"{protocol.name}: {len(protocol.cells())} cells, {totals['runs']} runs, {totals['done']} done{reused}, "
        f"{totals['run']} to run, estimated {_duration(totals['seconds'])} on 2 cores{calibrated} -> {results}")
    if dry_run:
        print(f"{protocol.name}: {protocol.describe()}")
        print("\n".join(lines))
        return 0
    if train_fn is None:
        from . import train as training

        train_fn = training.train
    output.mkdir(parents=True, exist_ok=True)
    commit = git_commit()
    held: dict[str, dict | None] = {}  # run id -> the record of the process that holds it
    moved = 0  # runs finished (here or found finished), to tell whether a pass got anywhere

    def ensure(run: Run) -> dict:
        """The run's row: already there, adopted from a --reuse folder, or trained now."""
        nonlocal moved
        row = _row(rows_by_id(results), run, results, execution)
        if row is not None:
            return row
        attempt = attempt_run(protocol, run.cell, output, reusable, train_fn, options, commit,
                              extra={"stage": run.stage, "trial": run.trial},
                              stop_note=f"tuning stopped at {run.run_id}: its other runs would fail the same way")
        if attempt.status == "held":
            held[run.run_id] = attempt.holder
            raise _CellWaiting
        held.pop(run.run_id, None)
        moved += 1
        if attempt.status == "elsewhere":  # another tuner finished it meanwhile
            return _row(rows_by_id(results), run, results, execution)
        if attempt.status == "failed":
            log(f"FAILED {run.run_id}: {attempt.error}")
            raise _CellFailed
        if attempt.status == "reused":
            log(f"{run.run_id}: reused {attempt.source} ({outcome_text(attempt)})")
        else:
            log(f"{run.run_id}: {outcome_text(attempt)} ({attempt.seconds:.0f}s, {run.stage}, trial {run.trial})")
        return attempt.row

    def stage(runs: list[Run]) -> None:
        """Every run of one stage; a failed one stops the cell after the others (they need not wait),
        as does one another process holds (the cell waits for it)."""
        failed = waiting = 0
        for run in runs:
            try:
                ensure(run)
            except _CellFailed:
                failed += 1
            except _CellWaiting:
                waiting += 1
        if failed:
            raise _CellFailed
        if waiting:
            raise _CellWaiting

    failures = 0
    cells = protocol.cells()
    while cells:  # again over the cells that waited for other processes, while that gets anywhere
        before, waiting_cells = moved, []
        for opt, batch in cells:
            try:
                stage([protocol.screen_run(opt, batch, t) for t in range(1, protocol.trials + 1)])
                p = progress(protocol, opt, batch, rows_by_id(results), results, execution)
                if protocol.halving:
                    log(f"{opt} b{batch}: screen done, continuing trial(s) {', '.join(f't{t}' for t in p.kept)}")
                stage([protocol.full_run(opt, batch, t) for t in p.kept])
                p = progress(protocol, opt, batch, rows_by_id(results), results, execution)
                stage([protocol.full_run(opt, batch, p.best, seed) for seed in protocol.final_seeds])
                log(f"{opt} b{batch}: done, best trial t{p.best}")
            except _CellFailed:
                failures += 1
            except _CellWaiting:
                waiting_cells.append((opt, batch))
            if after_cell:
                after_cell()
        if moved == before:
            break
        cells = waiting_cells
    if held:
        log(held_elsewhere(held, output))
    return failures
