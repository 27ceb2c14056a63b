"""LR schedules and batch-size scaling: the Python mirror's properties, and
dml/optim/schedule.dml against the mirror at many (t, total, warmup) points."""
import math

import numpy as np
import pytest

from conftest import run_test_dml, write_csv
from lars_systemml import schedules
from lars_systemml.config import TrainConfig

CODES = {"inverse_time": 1, "constant": 2, "warmup_poly": 3}


def edge_points(total, warmup):
    """Steps around the start, the warmup edges and the end of a run."""
    ts = {0, 1, warmup - 2, warmup - 1, warmup, warmup + 1, total // 2, total - 2, total - 1}
    return sorted(t for t in ts if 0 <= t < total)


def test_warmup_poly_shape():
    lr0, total, warmup = 2.0, 60, 6
    lrs = [schedules.warmup_poly(lr0, t, total, warmup, 2.0) for t in range(total)]
    assert lrs[0] == pytest.approx(lr0 / warmup)  # the first step is not wasted
    assert lrs[warmup - 1] == lrs[warmup] == lr0  # the peak is reached at the end of warmup
    assert np.all(np.diff(lrs[:warmup]) > 0) and np.all(np.diff(lrs[warmup:]) < 0)
    assert lrs[-1] == pytest.approx(lr0 / (total - warmup) ** 2) and lrs[-1] > 0  # nor the last
    # the warmup is linear from 0: equal increments of lr0/warmup
    np.testing.assert_allclose(np.diff(lrs[:warmup]), lr0 / warmup)


@pytest.mark.parametrize("total, warmup", [(1, 0), (1, 1), (5, 0), (5, 5), (2, 1)])
def test_warmup_poly_degenerate_lengths(total, warmup):
    lrs = [schedules.warmup_poly(1.0, t, total, warmup, 2.0) for t in range(total)]
    assert all(lr > 0 for lr in lrs) and max(lrs) == 1.0
    if warmup == 0:
        assert lrs[0] == 1.0
    with pytest.raises(ValueError):
        schedules.warmup_poly(1.0, total, total, warmup, 2.0)


def test_warmup_steps_round_half_up():
    assert schedules.warmup_steps(3, 2) == 6
    assert schedules.warmup_steps(1.5, 3) == 5  # 4.5 -> 5 (Python's round() would give 4)
    assert schedules.warmup_steps(0.1, 30) == 3  # 3.0000000000000004
    assert schedules.warmup_steps(0.2, 2) == 0


def test_lr_scaling_rules():
    assert schedules.scaled_lr(0.1, 4096, 1024, "linear") == pytest.approx(0.4)
    assert schedules.scaled_lr(0.1, 4096, 1024, "sqrt") == pytest.approx(0.2)
    assert schedules.scaled_lr(0.1, 256, 1024, "sqrt") == pytest.approx(0.05)
    assert schedules.scaled_lr(0.1, 4096, None, "none") == 0.1
    with pytest.raises(ValueError, match="needs a base batch"):
        schedules.scaled_lr(0.1, 4096, None, "linear")


def test_config_peak_lr_and_trace():
    c = TrainConfig(batch_size=4000, lr=1.0, lr_scaling="sqrt", base_batch=1000, epochs=3,
                    schedule="warmup_poly", warmup_epochs=1).validate()
    assert c.peak_lr() == 2.0 and c.dml_args()["lr"] == 2.0
    trace = schedules.lr_trace(c, train_size=10000)  # 3 steps per epoch, 9 steps, warmup 3
    assert len(trace) == 9 and trace[2] == trace[3] == 2.0 and trace[0] == pytest.approx(2 / 3)
    assert c.hyperparameters()["peak_lr"] == 2.0
    # default: the paper's inverse time decay from the unscaled lr
    d = TrainConfig()
    assert d.dml_args()["lr"] is d.lr and d.dml_args()["schedule"] == "inverse_time"
    assert schedules.lr_trace(d, 2048)[-1] == d.lr / (1 + d.lr_decay * (d.epochs * 2 - 1))


def test_dml_schedules_match_python(tmp_path):
    points, expected = [], []
    for total, warmup in [(1, 0), (1, 1), (2, 1), (10, 0), (10, 3), (10, 10), (60, 6), (1770, 177)]:
        for power in (2.0, 1.0, 0.5):
            for t in edge_points(total, warmup):
                points.append([CODES["warmup_poly"], 0.7, 0.0, t, total, warmup, power])
                expected.append(schedules.warmup_poly(0.7, t, total, warmup, power))
    for t in (0, 1, 7, 18749):
        points.append([CODES["inverse_time"], 0.01, 1e-4, t, 18750, 0, 2.0])
        expected.append(schedules.inverse_time(0.01, 1e-4, t))
        points.append([CODES["constant"], 0.3, 1e-4, t, 18750, 0, 2.0])
        expected.append(schedules.constant(0.3))
    epochs = [[3, 2], [1.5, 3], [0.1, 30], [0.2, 2], [0, 5], [2.5, 1], [0.25, 469]]
    run_test_dml("schedules.dml", points=write_csv(tmp_path / "p.csv", points),
                 epochs=write_csv(tmp_path / "e.csv", epochs), out=str(tmp_path / "lr.csv"),
                 out_warmup=str(tmp_path / "w.csv"))
    got = np.loadtxt(tmp_path / "lr.csv", delimiter=",", ndmin=1)
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=0)
    warm = np.loadtxt(tmp_path / "w.csv", delimiter=",", ndmin=1)
    assert warm.tolist() == [schedules.warmup_steps(e, n) for e, n in epochs]
    assert all(math.isfinite(x) and x > 0 for x in got)
