"""The scaling model of benchmarks/scaling.py: pure functions, no JVM (tests/test_scaling_model.py).

Time of one synchronous data-parallel step with global batch B on K workers (seconds):

    t_step(B, K) = fixed + per_image * B / K + driver_per_image * B + comm(K)

- ``fixed``: per-step work that depends on neither B nor K: the optimizer update on the driver
  (LARS/LAMB trust ratios: O(model size)), scheduling one Spark job, the step's bookkeeping.
- ``per_image * B / K``: the gradient work, split evenly over K workers (one task slot each;
  the micro-batch count must be >= K, see docs/scaling.md).
- ``driver_per_image * B``: per-image work the driver does serially every step: slicing the
  batch and, in the parfor mode, shipping it to the executors (about 0 in paramserv mode,
  where every worker reads its own partition).
- ``comm(K)``: model out and gradients back. Our Spark modes are driver-centred (the driver
  broadcasts the model to every worker and collects and sums every worker's gradient, like a
  parameter server with one server), so it grows linearly with K:
      comm_driver(K) = K * (per_worker + 2 * model_bytes / bandwidth)
  ``per_worker`` is the measured cost of one more worker per step (task launch, serialising
  the model for it, fetching and merging its result); the wire term is zero when no
  bandwidth is given (loopback measurements already contain it). A ring allreduce (Horovod,
  DDP) instead sends 2 (K-1)/K model sizes per worker at every hop in parallel:
      comm_ring(K) = 2 (K - 1) * per_worker + 2 (K - 1) / K * model_bytes / bandwidth
  (``per_worker`` standing in for the latency of one hop); offered as a what-if only.

Per epoch: ceil(N / B) steps. Time to a target accuracy: the epochs the sweeps needed to
first reach it (``epochs_to_target``) times the seconds per epoch; training loop only (no
JVM start, no test-set evaluation).
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

COMM_FORMS = ("driver", "ring")


@dataclass
class Coefficients:
    """The fitted constants of t_step (seconds, seconds per image, bytes, bytes/s)."""

    fixed: float
    per_image: float
    driver_per_image: float = 0.0
    per_worker: float = 0.0
    model_bytes: int = 0
    bandwidth: float | None = None  # bytes/s of the network; None: the wire term is left out
    comm: str = "driver"
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def comm_seconds(c: Coefficients, k: int) -> float:
    """Seconds per step to send the model to ``k`` workers and get their gradients back."""
    wire = 0.0 if not c.bandwidth else c.model_bytes / c.bandwidth
    if c.comm == "driver":
        return k * (c.per_worker + 2 * wire)
    if c.comm == "ring":
        return 2 * (k - 1) * c.per_worker + 2 * (k - 1) / k * wire
    raise ValueError(f"unknown communication form '{c.comm}': use one of {', '.join(COMM_FORMS)}")


def step_seconds(c: Coefficients, batch: int, k: int) -> float:
    """t_step(B, K) in seconds (see the module docstring)."""
    if batch < 1 or k < 1:
        raise ValueError(f"batch ({batch}) and workers ({k}) must be >= 1")
    return c.fixed + c.per_image * batch / k + c.driver_per_image * batch + comm_seconds(c, k)


def steps_per_epoch(n: int, batch: int) -> int:
    """ceil(N / B): the last, smaller batch is a step too (as in dml/train.dml)."""
    return -(-n // min(batch, n))


def epoch_seconds(c: Coefficients, n: int, batch: int, k: int) -> float:
    """Seconds of one epoch of ``n`` images: every batch is a full step except the last; its
    smaller batch is charged at its own size."""
    full, rest = divmod(n, batch)
    return full * step_seconds(c, batch, k) + (step_seconds(c, rest, k) if rest else 0.0)


def best_workers(c: Coefficients, batch: int, k_max: int) -> int:
    """The K in 1..k_max with the shortest step (K* = sqrt(per_image * B / per_worker) for the
    driver-centred form)."""
    return min(range(1, k_max + 1), key=lambda k: (step_seconds(c, batch, k), k))


# ---------------------------------------------------------------- fitting to measurements


def _lstsq(features: dict[str, list[float]], y: list[float]) -> tuple[dict[str, float], list[str]]:
    """Least squares of y on an intercept plus ``features``; a feature that does not vary (or
    duplicates the intercept) is left out and named in the notes (its coefficient is 0)."""
    names = [n for n, v in features.items() if len(set(round(x, 12) for x in v)) > 1]
    notes = [f"'{n}' does not vary in the measurements: its coefficient is unknown (set to 0)"
             for n in features if n not in names]
    a = np.column_stack([np.ones(len(y))] + [np.asarray(features[n], float) for n in names])
    coef, *_ = np.linalg.lstsq(a, np.asarray(y, float), rcond=None)
    out = {"intercept": float(coef[0]), **{n: 0.0 for n in features}}
    out.update({n: float(v) for n, v in zip(names, coef[1:])})
    return out, notes


def fit(points: list[dict], model_bytes: int, comm: str = "driver", bandwidth: float | None = None) -> Coefficients:
    """Coefficients from measured steps of one mode. Each point: ``batch``, ``workers`` (task
    slots K), and the per-step split ``compute``, ``driver``, ``comm`` (seconds).

    compute ~ c0 + per_image * B/K;  driver ~ d0 + d1 * B;  comm ~ g0 + per_worker * K + g1 * B;
    fixed = c0 + d0 + g0, driver_per_image = d1 + g1. Negative fitted slopes (noise with two
    points per axis) are set to 0 and noted.
    """
    if not points:
        raise ValueError("no measured points to fit")
    b = [p["batch"] for p in points]
    k = [p["workers"] for p in points]
    compute, n1 = _lstsq({"B/K": [bi / ki for bi, ki in zip(b, k)]}, [p["compute"] for p in points])
    driver, n2 = _lstsq({"B": b}, [p["driver"] for p in points])
    comm_fit, n3 = _lstsq({"K": k, "B": b}, [p["comm"] for p in points])
    notes = [f"compute: {n}" for n in n1] + [f"driver: {n}" for n in n2] + [f"comm: {n}" for n in n3]
    values = {"per_image": compute["B/K"], "driver_per_image": driver["B"] + comm_fit["B"],
              "per_worker": comm_fit["K"]}
    for name, value in list(values.items()):
        if value < 0:
            notes.append(f"{name} fitted negative ({value:.3g}): set to 0 (noise)")
            values[name] = 0.0
    fixed = compute["intercept"] + driver["intercept"] + comm_fit["intercept"]
    return Coefficients(fixed=fixed, model_bytes=model_bytes, comm=comm, bandwidth=bandwidth,
                        notes=notes, **values)


# ---------------------------------------------------------------- epochs to a target accuracy


def epochs_to_target(history: list[dict], target: float) -> int | None:
    """The first epoch whose test accuracy is >= ``target``; None if none is (an epoch
    without evaluation, test_accuracy null, does not count)."""
    for row in history:
        acc = row.get("test_accuracy")
        if acc is not None and not (isinstance(acc, float) and math.isnan(acc)) and acc >= target:
            return int(row["epoch"])
    return None


def _median_epochs(per_seed: list[int | None]) -> float | None:
    """Median over seeds, a seed that never reached the target counting as infinitely late:
    None (not reached) unless more than half the seeds reached it."""
    values = sorted(math.inf if e is None else e for e in per_seed)
    m = statistics.median(values)
    return None if math.isinf(m) else float(m)


def collect_epochs(folders: list[Path], target: float) -> list[dict]:
    """Per (sweep folder, optimizer, batch size): the epochs each seed needed to reach
    ``target`` (``folder/runs/*/metrics.json``), their median (None: not reached), the number
    of training images and the epoch budget. Sorted by folder, optimizer, batch."""
    groups: dict[tuple, dict] = {}
    for folder in folders:
        folder = Path(folder)
        for path in sorted(folder.glob("runs/*/metrics.json")):
            m = json.loads(path.read_text())
            if m.get("diverged") and not m.get("history"):
                continue
            key = (folder.name, m["optimizer"], int(m["batch_size"]))
            g = groups.setdefault(key, {"source": folder.name, "optimizer": m["optimizer"],
                                        "batch_size": int(m["batch_size"]), "train_size": int(m["train_size"]),
                                        "epochs_budget": int(m["epochs"]), "runs": [], "per_seed": []})
            g["runs"].append(path.parent.name)
            g["per_seed"].append(epochs_to_target(m.get("history", []), target))
    out = []
    for key in sorted(groups):
        g = groups[key]
        g["epochs"] = _median_epochs(g["per_seed"])
        g["reached"] = sum(e is not None for e in g["per_seed"])
        out.append(g)
    return out


def time_to_target(c: Coefficients, group: dict, k: int) -> float | None:
    """Seconds of training until ``group`` (from collect_epochs) first reaches the target on
    K workers; None if it did not reach it."""
    if group["epochs"] is None:
        return None
    return group["epochs"] * epoch_seconds(c, group["train_size"], group["batch_size"], k)


def crossover(c: Coefficients, groups: list[dict], ks: list[int], small: dict, large: list[dict]) -> dict:
    """For each K: the time to target of ``small`` (one group) and of the fastest of ``large``;
    ``first_k``: the smallest K where a large group is faster than ``small`` at the same K,
    ``vs_best_small``: the smallest K where it is faster than ``small`` at its own best K."""
    rows = []
    small_best = min((t for k in ks if (t := time_to_target(c, small, k)) is not None), default=None)
    first_k = first_k_best = None
    for k in ks:
        t_small = time_to_target(c, small, k)
        timed = [(t, g) for g in large if (t := time_to_target(c, g, k)) is not None]
        t_large, g_large = min(timed, key=lambda x: x[0]) if timed else (None, None)
        rows.append({"workers": k, "small_seconds": t_small, "large_seconds": t_large,
                     "large": None if g_large is None else f"{g_large['optimizer']} B={g_large['batch_size']}"})
        if t_large is not None and t_small is not None and t_large < t_small and first_k is None:
            first_k = k
        if t_large is not None and small_best is not None and t_large < small_best and first_k_best is None:
            first_k_best = k
    return {"rows": rows, "first_k": first_k, "vs_best_small": first_k_best, "small_best_seconds": small_best}
