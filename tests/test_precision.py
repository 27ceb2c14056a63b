"""--precision single: SystemDS's native float32 matrix multiply and conv2d_bias_add, as a run setting."""
import json

import pytest

from lars_systemml import runtime
from lars_systemml.cli import apply_precision, build_parser, config_from_args, main
from lars_systemml.config import TrainConfig
from lars_systemml.errors import UserError
from lars_systemml.experiment import Cell, load_experiment
from lars_systemml.results import RESULT_COLUMNS
from lars_systemml.train import RunOptions, train
from lars_systemml.tune import load_protocol

needs_openblas = pytest.mark.skipif(runtime.find_openblas() is None or runtime.missing_native_packages(),
                                    reason="no native BLAS (OpenBLAS) on this machine")

# Two matrix multiplies of dense random inputs (large enough for SystemDS's native path) and a
# sum of squares printed with all its digits.
MATMUL_DML = """X = rand(rows=256, cols=300, min=-1, max=1, seed=7)
W = rand(rows=300, cols=200, min=-1, max=1, seed=8)
Y = X %*% W
print("@@sum " + toString(sum(Y * Y), decimal=17))
"""


def test_precision_is_validated_and_defaults_to_double():
    assert TrainConfig().precision == "double"
    TrainConfig(precision="single").validate()
    with pytest.raises(UserError, match="unknown precision 'half': choose one of double, single"):
        TrainConfig(precision="half").validate()


def test_single_precision_is_part_of_the_identity_and_double_is_as_before():
    # double is the default and stays out of the identity, so hashes of earlier runs are unchanged
    assert "precision" not in TrainConfig().identity()
    single = TrainConfig(precision="single")
    assert single.identity()["precision"] == "single"
    assert Cell("a", single).config_hash != Cell("a", TrainConfig()).config_hash
    assert "precision" in RESULT_COLUMNS and "precision" in single.as_dict()  # results rows, metrics.json


def test_precision_settings():
    assert runtime.precision_settings("single") == {"sysds.floating.point.precision": "single"}
    assert runtime.precision_settings("double") == {}


def test_train_flag_reaches_the_config():
    assert config_from_args(build_parser().parse_args(["train", "--precision", "single"])).precision == "single"
    assert config_from_args(build_parser().parse_args(["train"])).precision == "double"
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["train", "--precision", "half"])
    assert exc.value.code == 2


SWEEP_TOML = """name = "p"
epochs = 1
seeds = [1]
optimizers = ["sgd", "lars"]
batch_sizes = [64, 128]
[overrides.lars]
lr = 1.0
{extra}
"""


def test_sweep_and_max_batch_flag_sets_every_run(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(SWEEP_TOML.format(extra='precision = "double"'))  # an override the flag also wins over
    experiment = load_experiment(path)
    before = {c.run_id: c.config_hash for c in experiment.cells}
    apply_precision(experiment, None)
    assert {c.run_id: c.config_hash for c in experiment.cells} == before
    apply_precision(experiment, "single")
    assert {c.config.precision for c in experiment.cells} == {"single"}
    assert all(before[c.run_id] != c.config_hash for c in experiment.cells)
    # max-batch makes cells for other batch sizes from the same rules
    assert {c.config.precision for o in ("sgd", "lars") for c in experiment.cells_for(o, 256)} == {"single"}
    args = build_parser().parse_args(["sweep", "--config", str(path), "--precision", "single"])
    assert args.precision == "single"
    assert build_parser().parse_args(["max-batch", "--config", str(path), "--optimizer", "sgd",
                                      "--target", "0.9", "--precision", "single"]).precision == "single"


def test_a_config_that_varies_precision_rejects_the_flag(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(SWEEP_TOML.format(extra='[grid]\nprecision = ["double", "single"]'))
    experiment = load_experiment(path)
    assert sorted(c.run_id for c in experiment.cells if c.config.optimizer == "sgd") == \
        ["sgd-b128-s1-precisiondouble", "sgd-b128-s1-precisionsingle",
         "sgd-b64-s1-precisiondouble", "sgd-b64-s1-precisionsingle"]
    with pytest.raises(UserError, match="varies precision itself"):
        apply_precision(experiment, "single")


def test_tune_flag_sets_every_run(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('name = "t"\nepochs = 2\noptimizers = ["sgd"]\nbatch_sizes = [64]\n'
                    '[search]\ntrials = 2\nsampler_seed = 1\nseed = 1\nfinal_seeds = [1]\n'
                    '[search.space]\nlr = { log_uniform = [0.01, 0.1] }\n')
    protocol = load_protocol(path)
    assert protocol.screen_run("sgd", 64, 1).config.precision == "double"
    apply_precision(protocol, "single")
    assert protocol.screen_run("sgd", 64, 1).config.precision == "single"
    assert protocol.full_run("sgd", 64, 2, 1).config.precision == "single"
    assert build_parser().parse_args(["tune", "--config", str(path), "--precision", "single"]).precision == "single"


def _matmul(tmp_path, precision: str, native: bool) -> tuple[float, list[str]]:
    """The sum MATMUL_DML prints and its -stats lines, under ``precision`` with or without native BLAS."""
    folder = tmp_path / f"{precision}-{native}"
    folder.mkdir()
    settings = {**(runtime.native_blas_settings(folder) if native else {}), **runtime.precision_settings(precision)}
    config = runtime.SystemDSConfig(settings).write(folder / "config.xml")
    script = folder / "matmul.dml"
    script.write_text(MATMUL_DML)
    lines = runtime.run_dml(runtime.local_command(script, {}, config, heap="1g", stats=True,
                                                  tmpdir=folder / "java-tmp"), cwd=folder)
    value = next(float(line.split()[1]) for line in lines if line.startswith("@@sum "))
    return value, [line for line in lines if line.startswith("Native ")]


@needs_openblas
def test_single_precision_runs_the_native_float_kernel(tmp_path):
    double, double_stats = _matmul(tmp_path, "double", native=True)
    single, single_stats = _matmul(tmp_path, "single", native=True)
    # both went through OpenBLAS (-stats: one native dense matrix multiply) ...
    for stats in (double_stats, single_stats):
        assert any(line.startswith("Native openblas calls (dense mult/conv/bwdF/bwdD):\t1/") for line in stats), stats
    # ... and single precision rounded: float32 products, close to but not the double result
    assert single != double
    assert single == pytest.approx(double, rel=1e-5)
    # SystemDS's Java kernels have no single-precision path: the setting changes nothing there
    java_double, _ = _matmul(tmp_path, "double", native=False)
    java_single, java_stats = _matmul(tmp_path, "single", native=False)
    assert java_single == java_double == pytest.approx(double, rel=1e-12)
    assert not any("openblas" in line for line in java_stats)


@needs_openblas
@pytest.mark.slow
def test_a_single_precision_run_trains_close_to_double(tmp_path, mnist_dir):
    settings = dict(optimizer="lars", lr=1.0, train_size=600, test_size=200, epochs=2, batch_size=100)
    options = RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g")
    double = train(TrainConfig(**settings), tmp_path / "double", options)
    single = train(TrainConfig(**settings, precision="single"), tmp_path / "single", options)
    assert single["precision"] == "single" and double["precision"] == "double"
    assert single["native_blas"] == "openblas"
    recorded = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert recorded["precision"] == "single"
    # float32 convolutions and matrix multiplies: a different run, but the same training
    assert single["test_loss"] != double["test_loss"]
    assert single["test_loss"] == pytest.approx(double["test_loss"], rel=1e-3)
    assert single["train_loss"] == pytest.approx(double["train_loss"], rel=1e-3)
    assert abs(single["test_accuracy"] - double["test_accuracy"]) <= 0.02
    # evaluate reruns the saved model in the arithmetic it was trained in: the run's own numbers
    assert main(["evaluate", "--model-dir", str(tmp_path / "single"), "--data-dir", str(mnist_dir),
                 "--heap", "2g"]) == 0
    evaluation = json.loads((tmp_path / "single" / "evaluation.json").read_text())
    assert evaluation["test_loss"] == pytest.approx(single["test_loss"], rel=1e-12)
