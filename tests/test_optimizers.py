"""The DML optimizers and LR schedule against the numpy reference and golden values."""
import numpy as np
import pytest

import reference
from conftest import run_test_dml, write_csv

W0 = [[0.5, -0.3], [0.8, 0.1]]
G1 = [[0.1, 0.2], [-0.05, 0.3]]
G2 = [[-0.02, 0.15], [0.1, -0.2]]


def dml_steps(tmp_path, optimizer, w0, grads, lrs, mu=0.9, lam=0.0, trust=0.001,
              beta1=0.9, beta2=0.999, eps=1e-6):
    out = tmp_path / f"{optimizer}.csv"
    run_test_dml(
        "optim_steps.dml", optimizer=optimizer,
        W0=write_csv(tmp_path / "w0.csv", w0),
        G=write_csv(tmp_path / "g.csv", np.vstack([np.atleast_2d(g) for g in grads])),
        lrs=write_csv(tmp_path / "lrs.csv", np.reshape(lrs, (-1, 1))),
        mu=mu, trust=trust, beta1=beta1, beta2=beta2, eps=eps, out=str(out),
        out_schedule=str(tmp_path / "schedule.txt"), **{"lambda": lam})
    return np.loadtxt(out, delimiter=",", ndmin=2)


def test_lars_golden_constant_lr(tmp_path):
    w = dml_steps(tmp_path, "lars", W0, [G1, G2], [0.5, 0.5], mu=0.9, lam=0.01, trust=0.02)
    expected = [[0.495410889458, -0.314836764803], [0.798209316657, 0.092390697813]]
    np.testing.assert_allclose(w, expected, atol=1e-9)


def test_lars_golden_momentum_holds_lr_scaled_step(tmp_path):
    w = dml_steps(tmp_path, "lars", W0, [G1, G2], [0.5, 0.25], mu=0.9, lam=0.01, trust=0.02)
    expected = [[0.495143768393, -0.312224575147], [0.800129328863, 0.088851876742]]
    np.testing.assert_allclose(w, expected, atol=1e-9)


def test_lamb_golden(tmp_path):
    w = dml_steps(tmp_path, "lamb", W0, [G1, G2], [0.1, 0.1], lam=0.01)
    expected = [[0.405092111043, -0.434836816132], [0.816824128260, 0.037522610866]]
    np.testing.assert_allclose(w, expected, atol=1e-9)


@pytest.mark.parametrize("optimizer", ["sgd", "lars", "lamb"])
def test_random_tensors_several_steps(tmp_path, optimizer):
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(7, 5))
    grads = [rng.normal(scale=0.1, size=(7, 5)) for _ in range(6)]
    lrs = [reference.inverse_time(0.3, 0.05, t) for t in range(6)]
    got = dml_steps(tmp_path, optimizer, w0, grads, lrs, mu=0.8, lam=0.003, trust=0.01)
    want = reference.run(optimizer, w0, grads, lrs, mu=0.8, lam=0.003, trust=0.01)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert not np.allclose(got, w0)  # the steps did something


@pytest.mark.parametrize("optimizer", ["lars", "lamb"])
def test_zero_weights_use_trust_ratio_one(tmp_path, optimizer):
    # zero-initialized tensor (like a bias): ||w|| = 0, the trust ratio must fall back to 1
    w0 = np.zeros((3, 2))
    grads = [np.full((3, 2), 0.2), np.full((3, 2), -0.1)]
    got = dml_steps(tmp_path, optimizer, w0, grads, [0.1, 0.1], lam=0.01, trust=0.001)
    want = reference.run(optimizer, w0, grads, [0.1, 0.1], lam=0.01, trust=0.001)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if optimizer == "lars":  # first step alone, ratio 1: w1 = -lr*g (not scaled by trust)
        one = dml_steps(tmp_path, optimizer, w0, grads[:1], [0.1], lam=0.01, trust=0.001)
        np.testing.assert_allclose(one, -0.1 * 0.2, rtol=1e-15)


def test_zero_gradient_leaves_lars_weights_but_decays_momentum(tmp_path):
    w0 = np.array([[1.0, -2.0]])
    grads = [np.array([[0.5, 0.5]]), np.zeros((1, 2))]
    got = dml_steps(tmp_path, "lars", w0, grads, [0.1, 0.1], mu=0.9, lam=0.0, trust=0.01)
    want = reference.run("lars", w0, grads, [0.1, 0.1], mu=0.9, lam=0.0, trust=0.01)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_inverse_time_schedule(tmp_path):
    dml_steps(tmp_path, "sgd", W0, [G1], [0.1])
    value = float((tmp_path / "schedule.txt").read_text())
    assert value == pytest.approx(reference.inverse_time(0.5, 0.01, 7), rel=1e-15)


@pytest.mark.parametrize("optimizer", ["sgd", "lars", "lamb"])
@pytest.mark.parametrize("include_biases", [False, True])
def test_layerwise_step_equals_per_tensor_steps(tmp_path, optimizer, include_biases):
    # train.dml updates all ten tensors at once (optim/layerwise.dml): the same
    # arithmetic as the per-tensor optimizers. Not bit for bit: with all sizes known
    # SystemDS fuses a + s*b into one fused multiply-add (+*), which rounds once, so
    # results may differ in the last bit (about 1e-16 here), never more.
    out = tmp_path / "both.csv"
    run_test_dml("layerwise_steps.dml", optimizer=optimizer, include_biases=include_biases, out=str(out))
    layerwise, per_tensor = np.loadtxt(out, delimiter=",", ndmin=2)
    np.testing.assert_allclose(layerwise, per_tensor, rtol=1e-13, atol=1e-15)
