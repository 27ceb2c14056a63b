"""The flat optimizer step (optim/step.dml) equals the per-tensor rules for every registered
model and every optimizer, on the model's own parameters and segment table."""
import numpy as np
import pytest

from conftest import SMALL_MODEL_OPTIONS, TESTS_DML
from lars_systemml import models, runtime
from lars_systemml.config import OPTIMIZERS
from test_model_contract import SMALL_SHAPES  # each model's small input shape

pytestmark = pytest.mark.slow


def test_every_model_has_small_test_options():
    assert set(SMALL_MODEL_OPTIONS) == set(SMALL_SHAPES) == set(models.MODELS)


@pytest.fixture(scope="module", params=sorted(models.MODELS))
def model_params(request, tmp_path_factory):
    """(theta0 CSV path, segment table CSV path) of a registered model at its small options."""
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    script = models.render(TESTS_DML / "model_params.dml", name, tmp)
    options, shape = SMALL_MODEL_OPTIONS[name], SMALL_SHAPES[name]
    args = {**models.get(name).script_args(options, shape), "seed": 4,
            "theta": str(tmp / "theta.csv"), "seg": str(tmp / "seg.csv")}
    runtime.run_dml(runtime.local_command(script, args, heap="2g"), cwd=runtime.dml_dir())
    return tmp / "theta.csv", tmp / "seg.csv"


@pytest.fixture(scope="module")
def flat_steps_run(model_params, tmp_path_factory):
    """Folder with <optimizer>.csv (flat-step theta, per-tensor theta) for every optimizer:
    one SystemDS run per model serves the five tests below."""
    theta0, seg = model_params
    out = tmp_path_factory.mktemp("flat_steps")
    cmd = runtime.local_command(TESTS_DML / "flat_steps.dml",
                                {"theta0": str(theta0), "seg": str(seg), "include_biases": False,
                                 "K": 3, "zero_grad": 2, "out": str(out)}, heap="2g")
    runtime.run_dml(cmd, cwd=runtime.dml_dir())
    return out


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_flat_step_equals_per_tensor_rules(model_params, flat_steps_run, optimizer):
    theta0, _ = model_params
    flat, per_tensor = np.loadtxt(flat_steps_run / f"{optimizer}.csv", delimiter=",", ndmin=2)
    start = np.loadtxt(theta0, delimiter=",", ndmin=2)[0]
    assert np.all(np.isfinite(flat)) and not np.allclose(flat, start)
    # the same arithmetic; SystemDS may fuse a + s*b into one rounding, so not bit for bit
    np.testing.assert_allclose(flat, per_tensor, rtol=1e-13, atol=1e-15)
    # the run gave each optimizer its own steps (not one optimizer's result five times)
    for other in OPTIMIZERS:
        if other != optimizer:
            assert not np.allclose(flat, np.loadtxt(flat_steps_run / f"{other}.csv", delimiter=",", ndmin=2)[0])
