"""The DML LeNet-5 backward pass against central finite differences."""
import numpy as np

from conftest import run_test_dml


def test_backward_matches_finite_differences(tmp_path):
    out = tmp_path / "grad_check.csv"
    run_test_dml("grad_check.dml", out=str(out))
    rows = np.loadtxt(out, delimiter=",")
    index, analytic, numeric, segment = rows.T
    # every one of the ten parameter tensors is sampled
    assert set(segment.astype(int)) == set(range(1, 11))
    # the sample must not be all zeros (dead ReLUs): enough live entries per tensor
    assert np.sum(np.abs(analytic) > 1e-6) >= 35
    scale = np.maximum(np.abs(analytic) + np.abs(numeric), 1e-8)
    rel = np.abs(analytic - numeric) / scale
    assert rel.max() < 1e-5, rows[rel.argmax()]
