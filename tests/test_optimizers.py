"""The DML optimizers and LR schedule against the numpy reference and golden values.

The DML cases of this file are registered at import (step_case) and run in one SystemDS run
(the module fixture ``dml``, tests/dml/optim_steps.dml): one JVM instead of one per case.
"""
import numpy as np
import pytest

import reference
from conftest import run_test_dml, write_csv

W0 = [[0.5, -0.3], [0.8, 0.1]]
G1 = [[0.1, 0.2], [-0.05, 0.3]]
G2 = [[-0.02, 0.15], [0.1, -0.2]]
OPTIMIZER_CODES = {"sgd": 1, "nesterov": 2, "adamw": 3, "lars": 4, "lamb": 5}  # optim_steps.dml's
CASES: dict[str, dict] = {}  # name -> the inputs of one DML case, as reference.run takes them


def step_case(name, optimizer, w0, grads, lrs, mu=0.9, lam=0.0, trust=0.001,
              b1=0.9, b2=0.999, eps=1e-6) -> str:
    """Register a DML case: len(grads) steps of ``optimizer`` from ``w0``; returns ``name``."""
    assert name not in CASES, name
    CASES[name] = {"optimizer": optimizer, "w0": np.atleast_2d(np.asarray(w0, dtype=float)),
                   "grads": [np.atleast_2d(np.asarray(g, dtype=float)) for g in grads],
                   "lrs": list(lrs), "mu": mu, "lam": lam, "trust": trust, "b1": b1, "b2": b2, "eps": eps}
    return name


@pytest.fixture(scope="module")
def dml(tmp_path_factory):
    """name -> final W of every registered case, and "schedule" -> the DML inverse_time value:
    all from one run of tests/dml/optim_steps.dml."""
    tmp = tmp_path_factory.mktemp("optim_steps")
    rows, data = [], []
    for c in CASES.values():
        (r, k), K = c["w0"].shape, len(c["grads"])
        assert len(c["lrs"]) == K and all(g.shape == (r, k) for g in c["grads"])
        rows.append([OPTIMIZER_CODES[c["optimizer"]], r, k, K, c["mu"], c["lam"], c["trust"],
                     c["b1"], c["b2"], c["eps"]])
        data += [c["w0"].ravel(), *(g.ravel() for g in c["grads"]), np.asarray(c["lrs"], dtype=float)]
    out = tmp / "w.csv"
    run_test_dml("optim_steps.dml", cases=write_csv(tmp / "cases.csv", rows),
                 data=write_csv(tmp / "data.csv", np.concatenate(data).reshape(-1, 1)),
                 out=str(out), out_schedule=str(tmp / "schedule.txt"))
    flat = np.loadtxt(out, delimiter=",", ndmin=1)
    results, start = {}, 0
    for name, c in CASES.items():
        n = c["w0"].size
        results[name] = flat[start:start + n].reshape(c["w0"].shape)
        start += n
    assert start == flat.size
    results["schedule"] = float((tmp / "schedule.txt").read_text())
    return results


def random_inputs(seed):
    """(w0 7 x 5, 6 gradients, 6 inverse-time learning rates) from numpy's generator ``seed``."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=(7, 5))
    grads = [rng.normal(scale=0.1, size=(7, 5)) for _ in range(6)]
    return w0, grads, [reference.inverse_time(0.3, 0.05, t) for t in range(6)]


LARS_CONSTANT = step_case("lars-constant-lr", "lars", W0, [G1, G2], [0.5, 0.5], mu=0.9, lam=0.01, trust=0.02)
LARS_DECAYING = step_case("lars-decaying-lr", "lars", W0, [G1, G2], [0.5, 0.25], mu=0.9, lam=0.01, trust=0.02)
LAMB_GOLDEN = step_case("lamb-golden", "lamb", W0, [G1, G2], [0.1, 0.1], lam=0.01)


def test_lars_golden_constant_lr(dml):
    w = dml[LARS_CONSTANT]
    expected = [[0.495410889458, -0.314836764803], [0.798209316657, 0.092390697813]]
    np.testing.assert_allclose(w, expected, atol=1e-9)


def test_lars_golden_momentum_holds_lr_scaled_step(dml):
    w = dml[LARS_DECAYING]
    expected = [[0.495143768393, -0.312224575147], [0.800129328863, 0.088851876742]]
    np.testing.assert_allclose(w, expected, atol=1e-9)


def test_lamb_golden(dml):
    w = dml[LAMB_GOLDEN]
    expected = [[0.405092111043, -0.434836816132], [0.816824128260, 0.037522610866]]
    np.testing.assert_allclose(w, expected, atol=1e-9)


for _opt in ("sgd", "lars", "lamb"):
    step_case(f"random-{_opt}", _opt, *random_inputs(3), mu=0.8, lam=0.003, trust=0.01)


@pytest.mark.parametrize("optimizer", ["sgd", "lars", "lamb"])
def test_random_tensors_several_steps(dml, optimizer):
    case = CASES[f"random-{optimizer}"]
    got = dml[f"random-{optimizer}"]
    want = reference.run(**case)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert not np.allclose(got, case["w0"])  # the steps did something


# zero-initialized tensor (like a bias): ||w|| = 0, the trust ratio must fall back to 1
for _opt in ("lars", "lamb"):
    step_case(f"zero-weights-{_opt}", _opt, np.zeros((3, 2)), [np.full((3, 2), 0.2), np.full((3, 2), -0.1)],
              [0.1, 0.1], lam=0.01, trust=0.001)
LARS_ZERO_WEIGHTS_ONE_STEP = step_case("zero-weights-lars-one-step", "lars", np.zeros((3, 2)),
                                       [np.full((3, 2), 0.2)], [0.1], lam=0.01, trust=0.001)


@pytest.mark.parametrize("optimizer", ["lars", "lamb"])
def test_zero_weights_use_trust_ratio_one(dml, optimizer):
    got = dml[f"zero-weights-{optimizer}"]
    want = reference.run(**CASES[f"zero-weights-{optimizer}"])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if optimizer == "lars":  # first step alone, ratio 1: w1 = -lr*g (not scaled by trust)
        np.testing.assert_allclose(dml[LARS_ZERO_WEIGHTS_ONE_STEP], -0.1 * 0.2, rtol=1e-15)


LARS_ZERO_GRADIENT = step_case("lars-zero-gradient", "lars", [[1.0, -2.0]], [[[0.5, 0.5]], np.zeros((1, 2))],
                               [0.1, 0.1], mu=0.9, lam=0.0, trust=0.01)


def test_zero_gradient_leaves_lars_weights_but_decays_momentum(dml):
    got = dml[LARS_ZERO_GRADIENT]
    want = reference.run(**CASES[LARS_ZERO_GRADIENT])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_inverse_time_schedule(dml):
    assert dml["schedule"] == pytest.approx(reference.inverse_time(0.5, 0.01, 7), rel=1e-15)




# --- Nesterov momentum and AdamW ---------------------------------------------------------

def pytorch_sgd_nesterov(w0, grads, lr, mu, lam):
    """A direct transcription of torch.optim.SGD(momentum=mu, nesterov=True, dampening=0,
    weight_decay=lam) with a constant lr: the buffer holds the unscaled gradient."""
    w, buf = np.array(w0, dtype=float), None
    for g in grads:
        d_p = np.asarray(g, dtype=float) + lam * w
        buf = d_p.copy() if buf is None else mu * buf + d_p
        w = w - lr * (d_p + mu * buf)
    return w


def pytorch_adamw(w0, grads, lr, b1, b2, eps, lam):
    """A direct transcription of torch.optim.AdamW (amsgrad=False, the single-tensor path):
    decay the weights first, then the Adam step with lr / bias_correction1."""
    w = np.array(w0, dtype=float)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, dtype=float)
        w = w * (1 - lr * lam)
        m = m + (g - m) * (1 - b1)           # exp_avg.lerp_(grad, 1 - beta1)
        v = v * b2 + (1 - b2) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps
        w = w - (lr / (1 - b1 ** t)) * m / denom
    return w


# Two steps from W0 with G1, G2, lr 0.1, lambda 0.01 (mu 0.9; beta1 0.9, beta2 0.999,
# eps 1e-6), printed to 12 decimals from reference.run; the tests below check them again
# against the PyTorch transcriptions, and the Nesterov row also by hand:
# step 1, w=0.5, g=0.1: g'=0.105, v=0.0105, w=0.5-(0.00945+0.0105)=0.48005;
# step 2, g=-0.02: g'=-0.0151995, v=0.00793005, w=0.48005-(0.007137045-0.00151995)=0.474432905.
NESTEROV_GOLDEN = [[0.474432905000, -0.381245883000], [0.790846838000, 0.056347661000]]
ADAMW_GOLDEN = [[0.347999600091, -0.497556752784], [0.861688912349, -0.014551563282]]


NESTEROV_CASE = step_case("nesterov-golden", "nesterov", W0, [G1, G2], [0.1, 0.1], mu=0.9, lam=0.01)
ADAMW_CASE = step_case("adamw-golden", "adamw", W0, [G1, G2], [0.1, 0.1], lam=0.01)


def test_nesterov_golden(dml):
    w = dml[NESTEROV_CASE]
    np.testing.assert_allclose(w, NESTEROV_GOLDEN, atol=1e-9)


def test_adamw_golden(dml):
    w = dml[ADAMW_CASE]
    np.testing.assert_allclose(w, ADAMW_GOLDEN, atol=1e-9)


def test_goldens_agree_with_pytorch_form():
    # the golden numbers by a second computation: PyTorch's own update rules
    np.testing.assert_allclose(pytorch_sgd_nesterov(W0, [G1, G2], 0.1, 0.9, 0.01),
                               NESTEROV_GOLDEN, atol=1e-11)
    np.testing.assert_allclose(pytorch_adamw(W0, [G1, G2], 0.1, 0.9, 0.999, 1e-6, 0.01),
                               ADAMW_GOLDEN, atol=1e-11)


@pytest.mark.parametrize("optimizer", ["nesterov", "adamw"])
def test_reference_equals_pytorch_with_constant_lr(optimizer):
    rng = np.random.default_rng(5)
    w0 = rng.normal(size=(6, 4))
    grads = [rng.normal(scale=0.1, size=(6, 4)) for _ in range(8)]
    ours = reference.run(optimizer, w0, grads, [0.05] * 8, mu=0.8, lam=0.02, eps=1e-8)
    if optimizer == "nesterov":
        theirs = pytorch_sgd_nesterov(w0, grads, 0.05, 0.8, 0.02)
    else:
        theirs = pytorch_adamw(w0, grads, 0.05, 0.9, 0.999, 1e-8, 0.02)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_nesterov_velocity_holds_lr_scaled_step():
    # with a varying lr our convention (like sgd_momentum and lars) departs from PyTorch's:
    # a new lr scales new steps only, not the momentum already accumulated
    rng = np.random.default_rng(6)
    w0 = rng.normal(size=(3, 3))
    grads = [rng.normal(size=(3, 3)) for _ in range(2)]
    ours = reference.run("nesterov", w0, grads, [0.1, 0.05], mu=0.9)
    # by hand: v1 = 0.1*g1, v2 = 0.9*v1 + 0.05*g2, w2 = w1 - (0.9*v2 + 0.05*g2)
    v1 = 0.1 * grads[0]
    w1 = w0 - (0.9 * v1 + 0.1 * grads[0])
    v2 = 0.9 * v1 + 0.05 * grads[1]
    np.testing.assert_allclose(ours, w1 - (0.9 * v2 + 0.05 * grads[1]), rtol=1e-14)
    w1_pt = pytorch_sgd_nesterov(w0, grads[:1], 0.1, 0.9, 0.0)  # then continue at lr 0.05
    buf = grads[0] * 0.9 + grads[1]
    w2_pt = w1_pt - 0.05 * (grads[1] + 0.9 * buf)
    assert not np.allclose(ours, w2_pt, rtol=1e-6)


for _opt in ("nesterov", "adamw"):
    step_case(f"first-step-{_opt}", _opt, W0, [G1], [0.1], mu=0.9, lam=0.01, eps=1e-6)


@pytest.mark.parametrize("optimizer", ["nesterov", "adamw"])
def test_first_step_closed_form(dml, optimizer):
    # one step from zero state: nesterov w - lr*(1+mu)*(g + lam*w);
    # adamw m_hat = g and v_hat = g^2, so w - lr*(g/(|g|+eps) + lam*w)
    w0, g = np.array(W0), np.array(G1)
    got = dml[f"first-step-{optimizer}"]
    if optimizer == "nesterov":
        want = w0 - 0.1 * 1.9 * (g + 0.01 * w0)
    else:
        want = w0 - 0.1 * (g / (np.abs(g) + 1e-6) + 0.01 * w0)
    np.testing.assert_allclose(got, want, rtol=1e-13)


for _opt in ("nesterov", "adamw"):
    step_case(f"random-{_opt}", _opt, *random_inputs(4), mu=0.8, lam=0.003)


@pytest.mark.parametrize("optimizer", ["nesterov", "adamw"])
def test_new_optimizers_random_tensors_several_steps(dml, optimizer):
    case = CASES[f"random-{optimizer}"]
    got = dml[f"random-{optimizer}"]
    want = reference.run(**case)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert not np.allclose(got, case["w0"])


# --- the flat step (optim/step.dml) against the per-tensor rules ---------------------------

# five tensors of sizes 6, 3, 20, 1, 7; tensors 2 and 4 are no_decay (biases);
# tensor 5 starts at zero and tensor 1 always gets a zero gradient (trust-ratio fallbacks)
FLAT_SIZES = [6, 3, 20, 1, 7]
FLAT_NO_DECAY = [0, 1, 0, 1, 0]


def flat_segments():
    last = np.cumsum(FLAT_SIZES)
    return np.column_stack([last - np.array(FLAT_SIZES) + 1, last, FLAT_NO_DECAY])


_FLAT_RUNS = {}  # (include_biases, K) -> folder of results: one run serves every optimizer


def flat_steps(tmp_path, optimizer, include_biases, K=4):
    """(theta0, flat-step theta, per-tensor theta) after K steps of tests/dml/flat_steps.dml."""
    key = (include_biases, K)
    if key not in _FLAT_RUNS:
        _FLAT_RUNS[key] = _run_flat_steps(tmp_path, include_biases, K)
    theta0, out = _FLAT_RUNS[key]
    flat, per_tensor = np.loadtxt(out / f"{optimizer}.csv", delimiter=",", ndmin=2)
    return theta0[0], flat, per_tensor


def _run_flat_steps(tmp_path, include_biases, K):
    """(theta0, folder of <optimizer>.csv): all five optimizers in one SystemDS run."""
    seg = flat_segments()
    theta0 = np.random.default_rng(8).normal(scale=0.5, size=(1, int(seg[-1, 1])))
    theta0[0, int(seg[4, 0]) - 1:int(seg[4, 1])] = 0.0
    out = tmp_path / f"flat_{include_biases}"
    out.mkdir()
    run_test_dml("flat_steps.dml", theta0=write_csv(tmp_path / "theta0.csv", theta0),
                 seg=write_csv(tmp_path / "seg.csv", seg),
                 include_biases=include_biases, K=K, zero_grad=1, out=str(out))
    return theta0, out


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adamw", "lars", "lamb"])
@pytest.mark.parametrize("include_biases", [False, True])
def test_flat_step_equals_per_tensor_steps(tmp_path, optimizer, include_biases):
    # the same arithmetic; not bit for bit: with all sizes known SystemDS may fuse
    # a + s*b into one multiply-add (+*) that rounds once, so the last bit may differ
    theta0, flat, per_tensor = flat_steps(tmp_path, optimizer, include_biases)
    assert np.all(np.isfinite(flat))
    np.testing.assert_allclose(flat, per_tensor, rtol=1e-13, atol=1e-15)
    # every column moved, the zero-gradient tensor too (by weight decay or lamb's direction)
    assert not np.any(np.isclose(flat, theta0, rtol=0, atol=1e-12))
    # the run gave each optimizer its own steps (not one optimizer's result five times)
    for other in {"sgd", "nesterov", "adamw", "lars", "lamb"} - {optimizer}:
        assert not np.allclose(flat, flat_steps(tmp_path, other, include_biases)[1])


@pytest.mark.parametrize("optimizer", ["nesterov", "adamw"])
def test_flat_step_include_biases_switch(tmp_path, optimizer):
    # include_biases changes exactly the no_decay tensors (here: weight decay on or off)
    _, off, _ = flat_steps(tmp_path, optimizer, False)
    _, on, _ = flat_steps(tmp_path, optimizer, True)
    no_decay = np.repeat(FLAT_NO_DECAY, FLAT_SIZES).astype(bool)
    np.testing.assert_array_equal(off[~no_decay], on[~no_decay])
    assert np.all(np.abs(off[no_decay] - on[no_decay]) > 1e-9)
