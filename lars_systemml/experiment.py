"""Experiment configs (TOML, in experiments/): which runs make up a sweep.

A config names everything that defines its runs::

    name = "paper"                 # required; recorded in every results row
    description = "..."
    dataset = "mnist"              # optional data keys: dataset, train_size, test_size, subset
    epochs = 10                    # the same epoch budget for every batch size
    seeds = [42]
    optimizers = ["sgd", "lars"]
    batch_sizes = [32, 64, ...]
    [hyperparameters]              # shared TrainConfig fields (lr, momentum, ...)
    lr = 0.01
    [overrides.lars]               # per-optimizer TrainConfig fields
    lr = 1.0
    [grid]                         # optional: every combination of these values, applied last
    lr = [0.1, 1.0, 10.0]          # ... for every optimizer, or per optimizer:
    momentum = { sgd = [0.8, 0.9], lars = [0.9] }
    [[seeds_for]]                  # optional, repeatable: other seeds for some cells
    optimizers = ["lars"]          # (default: all) the last matching entry wins
    batch_sizes = [8192, 32000]    # (default: all)
    seeds = [1, 2, 3]

Unknown keys anywhere are errors, so a typo cannot silently fall back to a default.
A run's id is ``<optimizer>-b<batch>-s<seed>`` plus ``-<key><value>`` per grid key.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .config import OPTIMIZERS, TrainConfig
from .errors import UserError

TOP_KEYS = {"name", "description", "dataset", "train_size", "test_size", "subset", "epochs",
            "seeds", "optimizers", "batch_sizes", "hyperparameters", "overrides", "grid", "seeds_for"}
SEEDS_FOR_KEYS = {"optimizers", "batch_sizes", "seeds"}
CELL_KEYS = {"optimizer", "batch_size", "seed"}
DATA_KEYS = {"dataset", "train_size", "test_size", "subset", "epochs"}
HYPER_KEYS = set(TrainConfig.field_names()) - CELL_KEYS - DATA_KEYS


@dataclass
class Cell:
    """One run of a sweep: its id and full TrainConfig."""

    run_id: str
    config: TrainConfig

    @property
    def config_hash(self) -> str:
        text = json.dumps(self.config.identity(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class Experiment:
    """A parsed config: its cells, and the rules that make them (also for other batch sizes)."""

    name: str
    description: str
    source: str
    cells: list[Cell] = field(default_factory=list)
    optimizers: list[str] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    seed_rules: list[dict] = field(default_factory=list)
    base: dict = field(default_factory=dict)        # data keys and [hyperparameters]
    overrides: dict = field(default_factory=dict)   # optimizer -> fields
    grid: dict = field(default_factory=dict)        # key -> list, or optimizer -> list

    def seeds_for(self, optimizer: str, batch_size: int) -> list[int]:
        """The seeds of (optimizer, batch size): the last matching [[seeds_for]], else ``seeds``."""
        seeds = self.seeds
        for rule in self.seed_rules:
            if optimizer in rule.get("optimizers", [optimizer]) and \
                    batch_size in rule.get("batch_sizes", [batch_size]):
                seeds = rule["seeds"]
        return seeds

    def grid_for(self, optimizer: str) -> list[dict]:
        """Every combination of the [grid] values that apply to ``optimizer`` ([{}] without a grid)."""
        axes = {}
        for key, values in self.grid.items():
            values = values.get(optimizer) if isinstance(values, dict) else values
            if values is not None:
                axes[key] = values
        return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]

    def cells_for(self, optimizer: str, batch_size: int) -> list[Cell]:
        """The validated cells of one (optimizer, batch size), which need not be in ``batch_sizes``."""
        cells = []
        for seed, point in itertools.product(self.seeds_for(optimizer, batch_size), self.grid_for(optimizer)):
            values = {**self.base, **self.overrides.get(optimizer, {}), **point, "optimizer": optimizer,
                      "batch_size": batch_size, "seed": seed}
            try:
                config = TrainConfig(**values).validate()
            except (UserError, TypeError) as exc:
                raise UserError(f"{self.source}: {optimizer} batch {batch_size}: {exc}") from None
            suffix = "".join(f"-{k}{v}" for k, v in point.items())
            cells.append(Cell(f"{optimizer}-b{batch_size}-s{seed}{suffix}", config))
        return cells

    def filtered(self, only: list[str]) -> list[Cell]:
        """The cells matching every ``key=value[,value...]`` filter (keys: TrainConfig fields)."""
        conditions = []
        for item in only:
            key, sep, values = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in TrainConfig.field_names():
                raise UserError(f"bad filter '{item}': use key=value with a run field, e.g. optimizer=lars")
            conditions.append((key, {v.strip() for v in values.split(",")}))
        return [c for c in self.cells
                if all(str(getattr(c.config, k)) in vals for k, vals in conditions)]


def _require(ok: bool, source: str, message: str) -> None:
    if not ok:
        raise UserError(f"{source}: {message}")


def _check_keys(table: dict, allowed: set[str], where: str, source: str) -> None:
    unknown = sorted(set(table) - allowed)
    _require(not unknown, source, f"unknown key(s) {', '.join(unknown)} in {where}; "
             f"allowed: {', '.join(sorted(allowed))}")


def _int_list(raw: dict, key: str, source: str) -> list[int]:
    values = raw.get(key)
    _require(isinstance(values, list) and values and all(isinstance(v, int) and not isinstance(v, bool) for v in values),
             source, f"'{key}' must be a non-empty list of integers")
    _require(len(set(values)) == len(values), source, f"'{key}' has duplicates")
    return values


def read_config(path: str | Path, example: str) -> tuple[dict, str]:
    """A config file's TOML table and its name for messages; a one-line UserError naming
    ``example`` for a missing file or invalid TOML."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text()), str(path)
    except FileNotFoundError:
        raise UserError(f"config {path} does not exist: see {example} for an example") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML ({exc})") from None


def load_experiment(path: str | Path) -> Experiment:
    """Parse and validate an experiment config; every cell's TrainConfig is validated too."""
    raw, source = read_config(path, "experiments/quick.toml")
    _require("search" not in raw, source, "a tuning protocol ([search]), not a sweep: run "
             f"`lars-systemml tune --config {source}`")
    _check_keys(raw, TOP_KEYS, "the top level", source)
    _require(isinstance(raw.get("name"), str) and raw["name"], source, "'name' (a string) is required")
    _require("epochs" in raw, source, "'epochs' is required (one budget for every batch size)")
    optimizers = raw.get("optimizers")
    _require(isinstance(optimizers, list) and optimizers and all(o in OPTIMIZERS for o in optimizers),
             source, f"'optimizers' must be a non-empty list from {', '.join(OPTIMIZERS)}")
    batch_sizes = _int_list(raw, "batch_sizes", source)
    seeds = _int_list(raw, "seeds", source)
    shared = raw.get("hyperparameters", {})
    _check_keys(shared, HYPER_KEYS, "[hyperparameters]", source)
    overrides = raw.get("overrides", {})
    _check_keys(overrides, set(optimizers), "[overrides]", source)
    for opt, table in overrides.items():
        _check_keys(table, HYPER_KEYS | DATA_KEYS - {"dataset"}, f"[overrides.{opt}]", source)

    grid = raw.get("grid", {})
    _check_keys(grid, HYPER_KEYS, "[grid]", source)
    for key, values in grid.items():
        if isinstance(values, dict):
            _check_keys(values, set(optimizers), f"[grid] {key}", source)
            lists = list(values.values())
        else:
            lists = [values]
        _require(all(isinstance(v, list) and v for v in lists), source,
                 f"[grid] {key} must be a non-empty list, or a table of them per optimizer")

    seed_rules = raw.get("seeds_for", [])
    _require(isinstance(seed_rules, list), source, "'seeds_for' must be an array of tables: [[seeds_for]]")
    for i, rule in enumerate(seed_rules, start=1):
        where = f"[[seeds_for]] #{i}"
        _check_keys(rule, SEEDS_FOR_KEYS, where, source)
        _int_list(rule, "seeds", f"{source}: {where}")
        if "batch_sizes" in rule:
            _int_list(rule, "batch_sizes", f"{source}: {where}")
        if "optimizers" in rule:
            _require(isinstance(rule["optimizers"], list) and set(rule["optimizers"]) <= set(optimizers),
                     source, f"{where}: 'optimizers' must be a list from the config's optimizers")

    experiment = Experiment(raw["name"], raw.get("description", ""), source, optimizers=optimizers,
                            batch_sizes=batch_sizes, seeds=seeds, seed_rules=seed_rules,
                            base={**{k: raw[k] for k in DATA_KEYS if k in raw}, **shared},
                            overrides=overrides, grid=grid)
    for opt, batch in itertools.product(optimizers, batch_sizes):
        experiment.cells += experiment.cells_for(opt, batch)
    return experiment
