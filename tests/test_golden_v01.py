"""The model-agnostic engine reproduces the v0.1 engine's LeNet-5 runs (tests/golden/v01) to 1e-12."""
import json
from pathlib import Path

import numpy as np
import pytest

from golden_cases import CASES
from lars_systemml.config import TrainConfig
from lars_systemml.train import RunOptions, train

pytestmark = pytest.mark.slow
GOLDEN = Path(__file__).resolve().parent / "golden" / "v01"


@pytest.mark.parametrize("case", sorted(CASES))
def test_reproduces_v01_run(tmp_path, mnist_dir, case):
    m = train(TrainConfig(**CASES[case]), tmp_path / case,
              RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g"))
    want = json.loads((GOLDEN / case / "metrics.json").read_text())
    assert m["model"] == "lenet5" and m["steps"] == want["steps"] and m["epochs_run"] == want["epochs_run"]
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        assert m[key] == pytest.approx(want[key], rel=1e-12, abs=0), key
    for got, old in zip(m["history"], want["history"], strict=True):
        for key in ("train_loss", "test_loss", "test_accuracy", "lr"):
            assert got[key] == pytest.approx(old[key], rel=1e-12, abs=0), (got["epoch"], key)
    trace = np.loadtxt(tmp_path / case / "steps.csv", delimiter=",", skiprows=1)
    old_trace = np.loadtxt(GOLDEN / case / "steps.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(trace, old_trace, rtol=1e-12, atol=0)
