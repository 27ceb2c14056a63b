"""What defines one training run, with the paper's Table 1 as defaults, and its validation."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from .errors import UserError
from .schedules import LR_SCALING, SCHEDULES, scaled_lr

OPTIMIZERS = ("sgd", "nesterov", "adamw", "lars", "lamb")
# Optimizers whose state is Adam's moments (beta1, beta2, eps); the others use momentum.
ADAM_FAMILY = ("adamw", "lamb")
# SystemDS's sysds.floating.point.precision: "single" runs the native (OpenBLAS) matrix
# multiply and conv2d_bias_add in float32 (inputs rounded to float, results widened back);
# everything else, and every Java kernel, stays double (runtime.precision_settings).
PRECISIONS = ("double", "single")
# Fields added after the first release (v0.1). While at their default they are left
# out of a run's identity (``identity()``, hence the sweep's config hash), so results
# written by v0.1 still count as finished runs of the same config.
LATER_FIELDS = ("schedule", "warmup_epochs", "poly_power", "lr_scaling", "base_batch", "standardize",
                "eval_every", "model", "model_options", "precision")


@dataclass
class TrainConfig:
    """One training run.

    Units: ``batch_size`` is the global batch in images, split into
    ``parallel_batches`` micro-batches; ``epochs`` are full passes over the
    training set. ``train_size``/``test_size`` None = full set.

    Arithmetic: ``precision`` "double" (default) or "single": SystemDS's native matrix
    multiply and conv2d_bias_add in float32 (only with native BLAS; see PRECISIONS). It
    changes the numbers, so it is part of the run's identity (and config hash) when single.

    Learning rate: ``lr`` is the global rate for ``base_batch`` images, scaled to
    ``batch_size`` by ``lr_scaling`` (none | linear | sqrt) into ``peak_lr()``,
    which ``schedule`` then varies per optimizer step t (0-based):
    ``inverse_time`` (default, the paper): peak / (1 + lr_decay*t); ``constant``;
    ``warmup_poly``: linear warmup over ``warmup_epochs`` epochs, then decay with
    exponent ``poly_power`` to just above 0 at the last step (lars_systemml/schedules.py).

    Inputs: pixels in [0, 1]; ``standardize`` shifts and scales them (train and test
    alike) by the training set's pixel mean and standard deviation.

    Model: ``model`` names a registered model (lars_systemml/models.py), ``model_options``
    its options as ``"key=value,..."`` (validate() keeps only those that differ from the
    defaults, sorted, so that equal models have equal identities).

    Evaluation: the test set is evaluated after every ``eval_every``-th epoch and
    after the last one (the final metrics always come from full evaluations); the
    history holds no test loss/accuracy for the epochs in between. A larger value
    saves the evaluation time (10,000 test images: about a tenth of a full-MNIST
    training epoch at batch 32000) when the per-epoch curve is not needed.
    """

    optimizer: str = "sgd"
    batch_size: int = 1024
    epochs: int = 10
    lr: float = 0.01
    lr_decay: float = 0.0001
    momentum: float = 0.9
    weight_decay: float = 0.0001
    trust_coef: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    parallel_batches: int = 4
    include_biases: bool = False
    seed: int = 42
    dataset: str = "mnist"
    train_size: int | None = None
    test_size: int | None = None
    subset: str = "stratified"
    schedule: str = "inverse_time"
    warmup_epochs: float = 0.0
    poly_power: float = 2.0
    lr_scaling: str = "none"
    base_batch: int | None = None
    standardize: bool = False
    eval_every: int = 1
    model: str = "lenet5"
    model_options: str = ""
    precision: str = "double"

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def as_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """The settings that define the run: ``as_dict()`` less LATER_FIELDS at their default.

        LR scaling enters as its result: ``lr`` is the peak lr the run uses and
        ``lr_scaling``/``base_batch`` are left out, so a scaled cell whose peak equals
        an unscaled run's lr (e.g. the base batch itself) is the same run, same hash.
        """
        defaults = TrainConfig()
        values = {**self.as_dict(), "lr": self.peak_lr(), "lr_scaling": "none", "base_batch": None}
        return {k: v for k, v in values.items()
                if k not in LATER_FIELDS or v != getattr(defaults, k)}

    def peak_lr(self) -> float:
        """The global lr the schedule starts from: ``lr`` scaled from ``base_batch`` to ``batch_size``."""
        return scaled_lr(self.lr, self.batch_size, self.base_batch, self.lr_scaling)

    def hyperparameters(self) -> dict:
        """The optimizer settings that the run actually uses."""
        keys = ["lr"]
        if self.lr_scaling != "none":
            keys += ["lr_scaling", "base_batch"]
        keys.append("schedule")
        keys += {"inverse_time": ["lr_decay"], "constant": [],
                 "warmup_poly": ["warmup_epochs", "poly_power"]}.get(self.schedule, [])
        keys += ["weight_decay", "include_biases"]
        keys += ["beta1", "beta2", "eps"] if self.optimizer in ADAM_FAMILY else ["momentum"]
        if self.optimizer == "lars":
            keys.append("trust_coef")
        if self.standardize:
            keys.append("standardize")
        values = {k: getattr(self, k) for k in keys}
        values["peak_lr"] = self.peak_lr()
        return values

    def validate(self) -> "TrainConfig":
        """Raise a one-line UserError for the first impossible setting; return self."""
        from .data import SUBSET_METHODS
        from .datasets import validate_choice as validate_dataset

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise UserError(message)

        def finite(name: str) -> float:
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                 f"{name} must be a finite number, got {value!r}")
            return value

        def integer(name: str, low: int) -> int:
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= low,
                 f"{name} must be an integer >= {low}, got {value!r}")
            return value

        from .models import get as get_model

        need(self.optimizer in OPTIMIZERS,
             f"unknown optimizer '{self.optimizer}': choose one of {', '.join(OPTIMIZERS)}")
        integer("batch_size", 1)
        integer("epochs", 1)
        integer("parallel_batches", 1)
        integer("seed", 0)
        integer("eval_every", 1)
        need(finite("lr") > 0, f"lr must be > 0, got {self.lr}")
        need(finite("lr_decay") >= 0, f"lr_decay must be >= 0, got {self.lr_decay}")
        need(0 <= finite("momentum") < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(finite("weight_decay") >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(finite("trust_coef") > 0, f"trust_coef must be > 0, got {self.trust_coef}")
        need(0 <= finite("beta1") < 1, f"beta1 must be in [0, 1), got {self.beta1}")
        need(0 <= finite("beta2") < 1, f"beta2 must be in [0, 1), got {self.beta2}")
        need(finite("eps") > 0, f"eps must be > 0, got {self.eps}")
        need(isinstance(self.include_biases, bool), f"include_biases must be true or false, got {self.include_biases!r}")
        need(isinstance(self.standardize, bool), f"standardize must be true or false, got {self.standardize!r}")
        validate_dataset(self.dataset)
        need(self.subset in SUBSET_METHODS,
             f"unknown subset method '{self.subset}': choose one of {', '.join(SUBSET_METHODS)}")
        for name in ("train_size", "test_size"):
            if getattr(self, name) is not None:
                integer(name, 1)
        need(self.schedule in SCHEDULES,
             f"unknown schedule '{self.schedule}': choose one of {', '.join(SCHEDULES)}")
        need(0 <= finite("warmup_epochs") <= self.epochs,
             f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        need(self.warmup_epochs == 0 or self.schedule == "warmup_poly",
             f"warmup_epochs needs schedule warmup_poly (schedule is {self.schedule})")
        need(finite("poly_power") > 0, f"poly_power must be > 0, got {self.poly_power}")
        need(self.lr_scaling in LR_SCALING,
             f"unknown lr_scaling '{self.lr_scaling}': choose one of {', '.join(LR_SCALING)}")
        if self.base_batch is not None or self.lr_scaling != "none":
            need(self.base_batch is not None, f"lr_scaling {self.lr_scaling} needs base_batch (the batch size lr is given for)")
            integer("base_batch", 1)
        need(self.precision in PRECISIONS,
             f"unknown precision '{self.precision}': choose one of {', '.join(PRECISIONS)}")
        need(isinstance(self.model, str) and isinstance(self.model_options, str),
             f"model and model_options must be strings, got {self.model!r}, {self.model_options!r}")
        self.model_options = get_model(self.model).canonical_options(self.model_options)
        return self

    def dml_args(self) -> dict:
        """The ``-nvargs`` of dml/train.dml for this run (data paths added by the runner)."""
        return {
            "optimizer": self.optimizer, "batch_size": self.batch_size, "epochs": self.epochs,
            "parallel_batches": self.parallel_batches, "seed": self.seed, "lr": self.peak_lr(),
            "schedule": self.schedule, "warmup_epochs": float(self.warmup_epochs),
            "poly_power": float(self.poly_power), "lr_decay": self.lr_decay, "momentum": self.momentum,
            "weight_decay": self.weight_decay, "trust_coef": self.trust_coef,
            "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
            "include_biases": self.include_biases, "standardize": self.standardize,
            "eval_every": self.eval_every,
        }
