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
      comm_driver(B, K) = K * per_worker + wire_bytes(B, K) / bandwidth
      wire_bytes(B, K)  = bytes_fixed + K * (bytes_per_worker + bytes_per_worker_image * B)
  ``per_worker`` is the measured cost of one more worker per step (task launch, serialising
  the model for it, fetching and merging its result). The wire term is left out when no
  bandwidth is given (loopback measurements already contain the copying); its bytes are fitted
  to the measured bytes per step (the parfor mode broadcasts the whole batch to every
  executor, hence the K * B term), else 2 model sizes per worker. A ring allreduce (Horovod,
  DDP) sends 2 (K-1)/K model sizes per worker, all links at once, in 2 (K-1) hops:
      comm_ring(K) = 2 (K - 1) * per_worker + 2 (K - 1) / K * model_bytes / bandwidth
  (``per_worker`` standing in for the latency of one hop, the data partitioned on the
  workers); offered as a what-if only.

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
    # bytes on the wire per step: bytes_fixed + K * (bytes_per_worker + bytes_per_worker_image * B);
    # None: 2 model sizes per worker (model out, gradient back)
    bytes_fixed: float = 0.0
    bytes_per_worker: float | None = None
    bytes_per_worker_image: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def wire_bytes(c: Coefficients, batch: int, k: int) -> float:
    """Bytes the driver sends and receives per step with ``k`` workers (driver-centred form)."""
    per_worker = 2 * c.model_bytes if c.bytes_per_worker is None else c.bytes_per_worker
    return c.bytes_fixed + k * (per_worker + c.bytes_per_worker_image * batch)


def comm_seconds(c: Coefficients, batch: int, k: int) -> float:
    """Seconds per step to send the model (and, in the parfor mode, the batch) to ``k`` workers
    and get their gradients back."""
    if c.comm == "driver":
        return k * c.per_worker + (wire_bytes(c, batch, k) / c.bandwidth if c.bandwidth else 0.0)
    if c.comm == "ring":
        wire = c.model_bytes / c.bandwidth if c.bandwidth else 0.0
        return 2 * (k - 1) * c.per_worker + 2 * (k - 1) / k * wire
    raise ValueError(f"unknown communication form '{c.comm}': use one of {', '.join(COMM_FORMS)}")


def step_seconds(c: Coefficients, batch: int, k: int) -> float:
    """t_step(B, K) in seconds (see the module docstring)."""
    if batch < 1 or k < 1:
        raise ValueError(f"batch ({batch}) and workers ({k}) must be >= 1")
    return c.fixed + c.per_image * batch / k + c.driver_per_image * batch + comm_seconds(c, batch, k)


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
    coef, _, rank, _ = np.linalg.lstsq(a, np.asarray(y, float), rcond=None)
    if rank < a.shape[1]:
        notes.append(f"{', '.join(names)} and the intercept are collinear in the measurements: "
                     "their split is arbitrary (minimum-norm)")
    out = {"intercept": float(coef[0]), **{n: 0.0 for n in features}}
    out.update({n: float(v) for n, v in zip(names, coef[1:])})
    return out, notes


def fit(points: list[dict], model_bytes: int, comm: str = "driver", bandwidth: float | None = None) -> Coefficients:
    """Coefficients from measured steps of one mode. Each point: ``batch``, ``workers`` (task
    slots K), the per-step split ``compute``, ``driver``, ``comm`` (seconds), and optionally
    ``bytes`` (moved per step).

    compute ~ c0 + per_image * B/K;  driver ~ d0 + d1 * B;  comm ~ g0 + per_worker * K + g1 * B;
    fixed = c0 + d0 + g0 (at least 0), driver_per_image = d1 + g1; bytes ~ bytes_fixed + K * bytes_per_worker
    + K * B * bytes_per_worker_image. Negative fitted slopes (noise with two points per axis)
    are set to 0 and noted.
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
        if -1e-12 < value < 0:  # rounding of an exact zero
            values[name] = 0.0
        elif value < 0:
            notes.append(f"{name} fitted negative ({value:.3g}): set to 0 (noise)")
            values[name] = 0.0
    fixed = compute["intercept"] + driver["intercept"] + comm_fit["intercept"]
    if fixed < 0:  # a step cannot take negative time: noise, or points far from B = 0
        notes.append(f"fixed fitted negative ({fixed:.3g} s): set to 0 (noise)")
        fixed = 0.0
    wire = {}
    if all(p.get("bytes") is not None for p in points):
        moved, n4 = _lstsq({"K": k, "K*B": [bi * ki for bi, ki in zip(b, k)]}, [p["bytes"] for p in points])
        notes += [f"bytes: {n}" for n in n4]
        wire = {"bytes_fixed": moved["intercept"], "bytes_per_worker": moved["K"],
                "bytes_per_worker_image": moved["K*B"]}
        for name in ("bytes_per_worker", "bytes_per_worker_image"):
            if wire[name] < 0:
                notes.append(f"{name} fitted negative ({wire[name]:.3g}): set to 0 (noise)")
                wire[name] = 0.0
    return Coefficients(fixed=fixed, model_bytes=model_bytes, comm=comm, bandwidth=bandwidth,
                        notes=notes, **values, **wire)


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


def crossover(c: Coefficients, ks: list[int], small: list[dict], large: list[dict]) -> dict:
    """For each K: the fastest time to target of the ``small`` groups and of the ``large`` ones;
    ``first_k``: the smallest K where the large-batch time is below the small-batch time at the
    same K; ``vs_best_small``: the smallest K where it is below the small batches' best time
    at any K (their own best cluster size)."""

    def fastest(groups: list[dict], k: int) -> tuple[float | None, str | None]:
        timed = [(t, f"{g['optimizer']} B={g['batch_size']}") for g in groups
                 if (t := time_to_target(c, g, k)) is not None]
        return min(timed) if timed else (None, None)

    rows = []
    for k in ks:
        (t_small, g_small), (t_large, g_large) = fastest(small, k), fastest(large, k)
        rows.append({"workers": k, "small_seconds": t_small, "small": g_small,
                     "large_seconds": t_large, "large": g_large})
    small_best = min((r["small_seconds"] for r in rows if r["small_seconds"] is not None), default=None)
    first_k = next((r["workers"] for r in rows if r["large_seconds"] is not None and r["small_seconds"] is not None
                    and r["large_seconds"] < r["small_seconds"]), None)
    vs_best = next((r["workers"] for r in rows if r["large_seconds"] is not None and small_best is not None
                    and r["large_seconds"] < small_best), None)
    return {"rows": rows, "first_k": first_k, "vs_best_small": vs_best, "small_best_seconds": small_best}
