"""The model contract of docs/engine.md, checked on every model in lars_systemml.models.MODELS.

One SystemDS run per model (tests/dml/contract_check.dml, rendered for the model with its
gradients_varsize twin) on a small configuration and a 16-row random batch; the tests
read its outputs: finite-difference gradients, the segment table and names, seeded init,
predict (shape, chunking, inference mode), the state update, and the twin.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lars_systemml import models, runtime
from lars_systemml.models import MODELS, Shape

from conftest import SMALL_MODEL_OPTIONS, write_csv

HARNESS = Path(__file__).resolve().parent / "dml" / "contract_check.dml"
N = 16  # rows of the test batch
# A small configuration of each model, (options, data shape): fast, yet taking every code
# path (mlp: several hidden layers, a multi-channel non-square input; resnet: two blocks per
# stage, so both identity and projection blocks in stages 2 and 3, and odd image sizes).
# small input shapes, odd on purpose (rows != columns, channels > 1) where the model allows
SMALL_SHAPES = {"lenet5": Shape(1, 28, 28, 10), "mlp": Shape(2, 5, 3, 4), "resnet": Shape(3, 8, 7, 5)}
# Tensors without weight decay (docs/engine.md): biases and batch-norm scales and shifts,
# named as in PyTorch (bn<i>.weight, downsample.1.weight for the shortcut's BN).
BN_WEIGHT = re.compile(r"((^|\.)bn\d*\.weight|downsample\.1\.weight)$")
NO_DECAY = re.compile(r"(\.bias|(^|\.)bn\d*\.weight|downsample\.1\.weight)$")
INIT_DOCUMENTED = {"lenet5", "mlp", "resnet"}  # models whose init follows _init_std


@dataclass
class Run:
    """One model's harness run: its spec, configuration and outputs."""

    name: str
    shape: Shape
    out: dict[str, np.ndarray]
    names: list[str]

    @property
    def seg(self) -> np.ndarray:
        return self.out["seg"].astype(np.int64)

    def tensor(self, key: str, row: int) -> np.ndarray:
        """Segment row ``row`` (0-based) of the flat ``key`` output, in its rows x cols shape."""
        first, last, _, rows, cols = self.seg[row]
        return self.out[key][0, first - 1:last].reshape(rows, cols)

    @property
    def bn_channels(self) -> list[int]:
        """Channels of each batch-norm layer, in theta order."""
        return [int(r * c) for (_, _, _, r, c), n in zip(self.seg, self.names) if BN_WEIGHT.search(n)]


def _resnet_bn_layers(options: str, shape: Shape) -> list[tuple[int, int]]:
    """(channels, values per channel m = N*Hout*Wout) of resnet's BN layers, in state order."""
    opts = MODELS["resnet"].parse_options(options)
    c, blocks = opts["channels"], opts["blocks"]
    h, w = shape.height, shape.width
    layers = [(c, N * h * w)]  # the stem
    for stage in range(3):
        for i in range(blocks):
            projection = stage > 0 and i == 0
            if projection:
                h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
            layers += [(c * 2 ** stage, N * h * w)] * (3 if projection else 2)
    return layers


def _mean_xent(scores: np.ndarray, Y: np.ndarray) -> float:
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-(Y * log_probs).sum() / len(Y))


@pytest.fixture(scope="module", params=sorted(MODELS))
def run(request, tmp_path_factory) -> Run:
    name = request.param
    spec = MODELS[name]
    path = runtime.dml_dir() / spec.file
    if not path.is_file():
        pytest.skip(f"{spec.file} does not exist yet: {name} is not converted to the model contract")
    if not re.search(r"^segments\s*=\s*function", path.read_text(), re.MULTILINE):
        pytest.skip(f"{spec.file} defines no segments(): {name} is not converted to the model contract yet")
    if name not in SMALL_SHAPES or name not in SMALL_MODEL_OPTIONS:
        pytest.fail(f"add {name} to SMALL_SHAPES in {Path(__file__).name} and to SMALL_MODEL_OPTIONS in conftest.py")
    options, shape = SMALL_MODEL_OPTIONS[name], SMALL_SHAPES[name]
    spec.check_shape(shape)
    workdir = tmp_path_factory.mktemp(f"contract-{name}")
    script = models.render(HARNESS, name, workdir)
    nvargs = {**spec.script_args(options, shape), "out": str(workdir), "N": N, "per_segment": 3}
    if name == "resnet":
        factors = np.concatenate([np.r_[np.ones(ch), np.full(ch, (m - 1) / m)]
                                  for ch, m in _resnet_bn_layers(options, shape)])
        nvargs["state_scale"] = write_csv(workdir / "state_scale.txt", factors)
    lines = runtime.run_dml(runtime.local_command(script, nvargs, heap="2g"), cwd=runtime.dml_dir())
    names = next(line[len("NAMES "):] for line in lines if line.startswith("NAMES ")).split(",")
    out = {p.stem: np.loadtxt(p, delimiter=",", ndmin=2) for p in workdir.glob("*.csv")}
    return Run(name, shape, out, names)


def test_gradients_match_finite_differences(run):
    index, analytic, numeric, segment = run.out["fd"].T
    nseg = len(run.seg)
    assert set(segment.astype(int)) == set(range(1, nseg + 1)), "every tensor is sampled"
    assert np.array_equal(analytic, run.out["grad"][0, index.astype(int) - 1])
    # the sample is not dominated by zeros (dead ReLUs): the check compares real gradients
    assert np.mean(np.abs(analytic) > 1e-6) > 0.6
    # central differences carry ~1e-11 of rounding noise (loss ~1 / h = 1e-5): floor the scale
    scale = np.maximum(np.abs(analytic) + np.abs(numeric), 1e-6)
    rel = np.abs(analytic - numeric) / scale
    worst = int(rel.argmax())
    assert rel.max() < 1e-5, (f"{run.names[int(segment[worst]) - 1]}: index {int(index[worst])}, "
                              f"analytic {analytic[worst]}, numeric {numeric[worst]}")


def test_segments_cover_theta_in_order(run):
    seg = run.seg
    first, last, no_decay, rows, cols = seg.T
    assert first[0] == 1
    assert np.array_equal(first[1:], last[:-1] + 1), "no gaps or overlaps"
    assert np.all(last >= first)
    assert np.array_equal(rows * cols, last - first + 1)
    npar = last[-1]
    for key in ("theta11", "theta12", "theta", "grad", "grad_varsize"):
        assert run.out[key].shape == (1, npar), key
    assert set(no_decay) <= {0, 1}
    assert len(run.names) == len(seg)
    assert len(set(run.names)) == len(run.names), "tensor names are unique"


def test_no_decay_exactly_on_biases_and_norms(run):
    for (_, _, no_decay, rows, cols), name in zip(run.seg, run.names):
        assert no_decay == bool(NO_DECAY.search(name)), name
        if no_decay:
            assert rows == 1 or cols == 1, f"{name} is a vector"


def test_init_is_seeded(run):
    out = run.out
    assert np.array_equal(out["theta11"], out["theta11b"])
    assert np.array_equal(out["state11"], out["state11b"])
    assert np.all(np.isfinite(out["theta11"]))
    for row, name in enumerate(run.names):
        if not run.seg[row, 2]:  # weights are random; biases and BN scales are constants
            assert not np.array_equal(run.tensor("theta11", row), run.tensor("theta12", row)), name


def _init_std(run: Run, row: int) -> float | None:
    """The documented init std of weight tensor ``row``, None for the no_decay tensors.

    He normal, std sqrt(2/fan_in), except the output layer's weight (the last weight):
    sqrt(1/fan_in). fan_in: a conv weight (F x Cin*k*k) has it as columns, an affine
    weight (fan_in x fan_out) as rows.
    """
    _, _, no_decay, rows, cols = run.seg[row]
    if no_decay:
        return None
    conv = re.search(r"(^|\.)conv\d*\.weight$|downsample\.0\.weight$", run.names[row])
    output = row == len(run.seg) - 2
    return float(np.sqrt((1 if output else 2) / (cols if conv else rows)))


def test_init_scales_and_constants(run):
    if run.name not in INIT_DOCUMENTED:
        pytest.skip(f"add {run.name} to INIT_DOCUMENTED if its init follows _init_std")
    z = []
    for row, name in enumerate(run.names):
        values = run.tensor("theta11", row)
        std = _init_std(run, row)
        if std is None:
            expected = 1.0 if BN_WEIGHT.search(name) else 0.0
            assert np.all(values == expected), name
            continue
        if values.size >= 100:  # enough values for a per-tensor estimate within ~15%
            assert 0.8 < values.std() / std < 1.2, name
        z.append(values.ravel() / std)
    z = np.concatenate(z)
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1


def test_state_layout_at_init(run):
    state = run.out["state11"]
    channels = run.bn_channels
    if not channels:
        assert np.array_equal(state, [[0.0]]), "a model without batch norm has a 1 x 1 zero state"
        return
    # per BN layer in theta order: running mean (zeros), running variance (ones)
    expected = np.concatenate([np.r_[np.zeros(ch), np.ones(ch)] for ch in channels])
    assert np.array_equal(state[0], expected)


def test_predict_shape_and_chunking(run):
    whole, chunked = run.out["scores_whole"], run.out["scores_chunked"]
    assert whole.shape == (N, run.shape.classes)
    assert np.all(np.isfinite(whole))
    np.testing.assert_allclose(chunked, whole, rtol=1e-10, atol=1e-12)


def test_varsize_twin_matches_gradients(run):
    for key in ("loss", "grad", "stats"):
        np.testing.assert_allclose(run.out[f"{key}_varsize"], run.out[key], rtol=1e-12, atol=0)


def test_state_update_and_inference_mode(run):
    out = run.out
    loss = float(out["loss"][0, 0])
    loss_init_state = _mean_xent(out["scores_whole"], out["Y"])
    if not run.bn_channels:
        for key in ("state11", "stats", "state_next"):
            assert np.array_equal(out[key], [[0.0]]), key
        # no state: inference mode is training mode
        assert loss_init_state == pytest.approx(loss, rel=1e-10)
        return
    state, stats = out["state11"], out["stats"]
    assert stats.shape == state.shape
    assert np.all(np.isfinite(stats))
    # PyTorch's running statistics: momentum 0.1
    np.testing.assert_allclose(out["state_next"], 0.9 * state + 0.1 * stats, rtol=1e-12, atol=1e-15)
    # inference mode normalizes with the state: away from the training-mode loss with the
    # init state, closer with the batch's own statistics (not equal: stats hold the
    # unbiased variance; see test_resnet_inference_with_the_batch_statistics)
    gap_init = abs(loss_init_state - loss)
    assert gap_init > 1e-3 * loss
    assert abs(_mean_xent(out["scores_stats"], out["Y"]) - loss) < gap_init


def test_resnet_inference_with_the_batch_statistics(run):
    """State = the batch's mean and biased variance: inference mode is training mode exactly."""
    if run.name != "resnet":
        pytest.skip("resnet's documented stats layout only")
    loss = float(run.out["loss"][0, 0])
    assert _mean_xent(run.out["scores_scaled"], run.out["Y"]) == pytest.approx(loss, rel=1e-10)


def test_resnet_stem_statistics(run):
    """The stem BN's stats against numpy: per-channel mean and unbiased variance of conv1(X)."""
    if run.name != "resnet":
        pytest.skip("resnet's stem only")
    C, H, W = run.shape.channels, run.shape.height, run.shape.width
    X = run.out["X"].reshape(N, C, H, W)
    Wc = run.tensor("theta", 0)  # conv1.weight: c x C*3*3
    c = Wc.shape[0]
    Wc = Wc.reshape(c, C, 3, 3)
    Xp = np.pad(X, ((0, 0), (0, 0), (1, 1), (1, 1)))
    z = np.zeros((N, c, H, W))
    for di in range(3):
        for dj in range(3):
            z += np.einsum("nchw,fc->nfhw", Xp[:, :, di:di + H, dj:dj + W], Wc[:, :, di, dj])
    mean = z.mean(axis=(0, 2, 3))
    var = z.transpose(1, 0, 2, 3).reshape(c, -1).var(axis=1, ddof=1)
    np.testing.assert_allclose(run.out["stats"][0, :c], mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(run.out["stats"][0, c:2 * c], var, rtol=1e-10)
