"""LeNet-5's dense copy (a 1x1 conv2d with weight 1.0) returns its input's values exactly, with and
without native BLAS."""
import numpy as np
import pytest

from conftest import TESTS_DML
from lars_systemml import runtime


@pytest.mark.parametrize("native", [True, False])
def test_dense_copy_keeps_every_value(tmp_path, native):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((7, 40)) * 10.0 ** rng.integers(-200, 200, (7, 40))
    X[rng.random((7, 40)) < 0.8] = 0.0  # mostly zeros, like a ReLU/max-pool gradient
    X[0, 1], X[2, 3], X[4, 5] = np.nan, np.inf, -np.inf
    settings = runtime.native_blas_settings(tmp_path) if native else {}
    if native and not settings:
        pytest.skip("no OpenBLAS on this machine")
    config = runtime.SystemDSConfig(settings).write(tmp_path / "config.xml")
    # SystemDS's CSV spells the non-finite values NaN, Infinity, -Infinity
    text = "\n".join(",".join(repr(float(v)).replace("nan", "NaN").replace("inf", "Infinity") for v in row)
                     for row in X)
    (tmp_path / "X.csv").write_text(text + "\n")
    nvargs = {"X": str(tmp_path / "X.csv"), "out": str(tmp_path / "D.csv")}
    runtime.run_dml(runtime.local_command(TESTS_DML / "conv_dense.dml", nvargs, config, heap="1g"),
                    cwd=runtime.dml_dir())
    D = np.loadtxt(tmp_path / "D.csv", delimiter=",", ndmin=2)
    np.testing.assert_array_equal(D, X)
