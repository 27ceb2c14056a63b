"""Learning-rate schedules and batch-size LR scaling, the Python mirror of
``dml/optim/schedule.dml`` (the DML code is what trains; this mirror is what the
tests check it against and what plans, plots and docs use).

Units: ``t`` is the 0-based optimizer step (the t-th update uses ``lr(t)``),
``total`` the number of steps of the run (epochs * batches per epoch),
``warmup`` a number of steps; learning rates are plain floats.

- ``inverse_time``: ``lr0 / (1 + decay*t)`` (the paper's Table 1, Keras-style).
- ``constant``: ``lr0``.
- ``warmup_poly``: linear warmup, then polynomial decay (LARS paper, Goyal et al.)::

      lr(t) = lr0 * (t + 1) / warmup                         for t < warmup
      lr(t) = lr0 * ((total - t) / (total - warmup))^power   for warmup <= t < total

  The warmup line starts at 0 one step before the first update and the decay
  reaches 0 one step after the last, so no update has lr 0: the first gets
  ``lr0/warmup`` and the last ``lr0 * (1/(total - warmup))^power``.

LR scaling with the batch size is a per-run constant, applied to the configured
``lr`` once in Python (:func:`scaled_lr`, used by ``TrainConfig.peak_lr``) before
the run starts; the schedule then starts from that peak value.
"""
from __future__ import annotations

import math

SCHEDULES = ("inverse_time", "constant", "warmup_poly")
LR_SCALING = ("none", "linear", "sqrt")


def inverse_time(lr0: float, decay: float, t: int) -> float:
    return lr0 / (1 + decay * t)


def constant(lr0: float) -> float:
    return lr0


def warmup_steps(warmup_epochs: float, steps_per_epoch: int) -> int:
    """Warmup length in steps: ``warmup_epochs * steps_per_epoch`` rounded half up."""
    return int(math.floor(warmup_epochs * steps_per_epoch + 0.5))


def warmup_poly(lr0: float, t: int, total: int, warmup: int, power: float) -> float:
    """Linear warmup over ``warmup`` steps, then polynomial decay to the run's end (0 <= t < total)."""
    if not 0 <= t < total:
        raise ValueError(f"step {t} outside 0..{total - 1}")
    if t < warmup:
        return lr0 * (t + 1) / warmup
    return lr0 * ((total - t) / (total - warmup)) ** power


def lr_at(schedule: str, lr0: float, t: int, total: int, decay: float = 0.0, warmup: int = 0,
          power: float = 2.0) -> float:
    """The learning rate of step ``t`` under ``schedule`` (dispatch as in train.dml)."""
    if schedule == "inverse_time":
        return inverse_time(lr0, decay, t)
    if schedule == "constant":
        return constant(lr0)
    if schedule == "warmup_poly":
        return warmup_poly(lr0, t, total, warmup, power)
    raise ValueError(f"unknown schedule '{schedule}': choose one of {', '.join(SCHEDULES)}")


def scaled_lr(lr: float, batch_size: int, base_batch: int | None, rule: str) -> float:
    """``lr`` given for ``base_batch`` images, scaled to ``batch_size``.

    ``linear``: lr * B/base (Goyal et al. 2017); ``sqrt``: lr * sqrt(B/base)
    (Krizhevsky 2014; the LAMB paper); ``none``: lr unchanged (exactly).
    """
    if rule == "none":
        return lr
    if base_batch is None or base_batch < 1:
        raise ValueError(f"lr scaling '{rule}' needs a base batch >= 1, got {base_batch!r}")
    ratio = batch_size / base_batch
    if rule == "linear":
        return lr * ratio
    if rule == "sqrt":
        return lr * math.sqrt(ratio)
    raise ValueError(f"unknown lr scaling '{rule}': choose one of {', '.join(LR_SCALING)}")


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    """Optimizer steps per epoch, as train.dml counts them (a short last batch is a step)."""
    return -(-train_size // min(batch_size, train_size))


def lr_trace(config, train_size: int) -> list[float]:
    """Every step's learning rate for a ``TrainConfig`` on ``train_size`` images (what train.dml uses)."""
    per_epoch = steps_per_epoch(train_size, config.batch_size)
    total = config.epochs * per_epoch
    warmup = warmup_steps(config.warmup_epochs, per_epoch)
    lr0 = config.peak_lr()
    return [lr_at(config.schedule, lr0, t, total, config.lr_decay, warmup, config.poly_power)
            for t in range(total)]
