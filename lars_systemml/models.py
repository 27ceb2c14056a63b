"""The model registry: name -> DML file, options with defaults, accepted input shapes;
and the rendering of a model into a run's scripts.

The model contract (docs/engine.md): ``dml/models/<name>.dml`` defines ``segments()``,
``names()``, ``init(seed)``, ``gradients(X, Y, theta, state)``, ``update_state(state,
stats)`` and ``predict(X, theta, state, chunk)``, reading its sizes from the script
arguments ``$C, $H, $W, $classes`` and its options from ``$<name>_<option>``.
Adding a model = that file + one ``ModelSpec`` in ``MODELS``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import UserError

# The line of every entry script (train/evaluate/predict.dml) that render() points at the chosen model.
SOURCE_LINE = 'source("models/lenet5.dml") as model'


@dataclass(frozen=True)
class Shape:
    """An image data set's shape: ``channels x height x width`` pixels per image, ``classes`` labels."""

    channels: int
    height: int
    width: int
    classes: int

    def script_args(self) -> dict[str, int]:
        return {"C": self.channels, "H": self.height, "W": self.width, "classes": self.classes}

    def __str__(self) -> str:
        return f"{self.channels}x{self.height}x{self.width} images, {self.classes} classes"


def _lenet5_fits(shape: Shape) -> str | None:
    if (shape.channels, shape.height, shape.width) != (1, 28, 28):
        return "LeNet-5 here is built for 1x28x28 images (MNIST-style)"
    return None


def _resnet_fits(shape: Shape) -> str | None:
    if min(shape.height, shape.width) < 4:
        return "the ResNet halves the image twice and needs at least 4x4 pixels"
    return None


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: its DML file (under dml/models/), options and accepted shapes."""

    name: str
    description: str
    options: dict[str, int] = field(default_factory=dict)  # option -> default (all integers >= 1)
    fits: Callable[[Shape], str | None] = lambda shape: None  # None, or why the shape does not fit
    # Spark paramserv only: function -> {input: columns} that the workers reshape to the literal
    # local batch rows at the function's entry (spark.with_literal_rows says why). Only stateless
    # models can be listed: their short batches are padded, so every call has those rows.
    paramserv_literal_rows: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def file(self) -> str:
        return f"models/{self.name}.dml"

    def parse_options(self, text: str) -> dict[str, int]:
        """``"k=v,k=v"`` (the config's ``model_options``) -> all options with defaults filled in."""
        values = dict(self.options)
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in self.options:
                known = ", ".join(f"{k} (default {v})" for k, v in self.options.items()) or "none"
                raise UserError(f"unknown model option '{item}' for {self.name}: its options are {known}")
            try:
                values[key] = int(value)
            except ValueError:
                raise UserError(f"model option {key} of {self.name} must be an integer, got '{value}'") from None
            if values[key] < 1:
                raise UserError(f"model option {key} of {self.name} must be >= 1, got {values[key]}")
        return values

    def canonical_options(self, text: str) -> str:
        """The options that differ from their defaults, sorted, as ``"k=v,k=v"`` ("" if none)."""
        values = self.parse_options(text)
        return ",".join(f"{k}={v}" for k, v in sorted(values.items()) if v != self.options[k])

    def script_args(self, options: str, shape: Shape) -> dict[str, int]:
        """The ``-nvargs`` that size the model: the data's shape and ``<name>_<option>``."""
        return {**shape.script_args(),
                **{f"{self.name}_{k}": v for k, v in self.parse_options(options).items()}}

    def check_shape(self, shape: Shape) -> None:
        reason = self.fits(shape)
        if reason:
            raise UserError(f"model {self.name} does not fit the data ({shape}): {reason}; "
                            f"choose another --model (mlp takes any shape)")


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in [
    ModelSpec("lenet5", "LeNet-5: two 5x5 conv + max-pool stages, FC 120-84-classes (the paper's network)",
              fits=_lenet5_fits,
              paramserv_literal_rows={"backward": {"X": 784, "z1": 6 * 28 * 28, "p1": 6 * 14 * 14,
                                                   "z2": 16 * 14 * 14}}),
    ModelSpec("mlp", "a deep ReLU MLP: `depth` hidden layers of `width` units",
              options={"width": 256, "depth": 6}),
    ModelSpec("resnet", "a small ResNet: 3x3 stem, three stages of `blocks` residual blocks "
              "(`channels`, 2x, 4x channels; stride-2 projection shortcuts), batch norm, global average pooling",
              options={"channels": 8, "blocks": 1}, fits=_resnet_fits),
]}


def get(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UserError(f"unknown model '{name}': choose one of {', '.join(MODELS)}")
    return MODELS[name]


# ---------------------------------------------------------------- rendering for a run


def _function_span(text: str, name: str) -> tuple[int, int]:
    """Start and end offsets of the DML function definition ``name = function(...) ... { ... }``."""
    match = re.search(rf"^{re.escape(name)}\s*=\s*function\s*\(", text, re.MULTILINE)
    if not match:
        raise UserError(f"the model file defines no function {name}(): see docs/engine.md")
    depth, i = 0, text.index("{", match.end())
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return match.start(), j + 1
    raise UserError(f"unbalanced braces in function {name}() of the model file")


def with_varsize_twin(model_text: str) -> str:
    """The model's text plus ``gradients_varsize``: a copy of ``gradients`` under another name.

    SystemDS compiles a function for the row count its callers pass when they all pass
    the same one; the loop calls ``gradients`` with the run's fixed micro-batch size and
    the twin for other sizes (a short last batch), so both stay compiled once.
    """
    start, end = _function_span(model_text, "gradients")
    twin = "gradients_varsize" + model_text[start + len("gradients"):end]
    return model_text + "\n\n# generated by lars_systemml/models.py: gradients() for other row counts\n" + twin + "\n"


def render(script: Path, model: str, workdir: Path) -> Path:
    """Write ``workdir/<script name>`` sourcing ``workdir/model.dml``, the chosen model with its twin.

    The rendered script runs with the working directory ``dml/`` (runtime.dml_dir()),
    against which every other ``source()`` path resolves, as for the scripts themselves.
    """
    from .runtime import dml_dir

    spec = get(model)
    model_file = dml_dir() / spec.file
    rendered_model = workdir / "model.dml"
    rendered_model.write_text(with_varsize_twin(model_file.read_text()))
    text = script.read_text()
    if SOURCE_LINE not in text:
        raise UserError(f"{script} lacks the line {SOURCE_LINE!r} that selects the model")
    out = workdir / script.name
    out.write_text(text.replace(SOURCE_LINE, f'source("{rendered_model}") as model'))
    return out
