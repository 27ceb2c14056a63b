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
    lr = [0.1, 1.0, 10.0]

Unknown keys anywhere are errors, so a typo cannot silently fall back to a default.
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
            "seeds", "optimizers", "batch_sizes", "hyperparameters", "overrides", "grid"}
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
        text = json.dumps(self.config.as_dict(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class Experiment:
    name: str
    description: str
    source: str
    cells: list[Cell] = field(default_factory=list)

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


def load_experiment(path: str | Path) -> Experiment:
    """Parse and validate an experiment config; every cell's TrainConfig is validated too."""
    path = Path(path)
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config {path} does not exist: see experiments/ for examples") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source} is not valid TOML ({exc})") from None
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
        _require(isinstance(values, list) and values, source, f"[grid] {key} must be a non-empty list")

    data = {k: raw[k] for k in DATA_KEYS if k in raw}
    experiment = Experiment(raw["name"], raw.get("description", ""), source)
    grid_points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    for opt, batch, seed, point in itertools.product(optimizers, batch_sizes, seeds, grid_points):
        values = {**data, **shared, **overrides.get(opt, {}), **point, "optimizer": opt,
                  "batch_size": batch, "seed": seed}
        try:
            config = TrainConfig(**values).validate()
        except (UserError, TypeError) as exc:
            raise UserError(f"{source}: {opt} batch {batch}: {exc}") from None
        suffix = "".join(f"-{k}{v}" for k, v in point.items())
        experiment.cells.append(Cell(f"{opt}-b{batch}-s{seed}{suffix}", config))
    return experiment
