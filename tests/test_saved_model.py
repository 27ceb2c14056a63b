"""Saved models: train -> model/ -> evaluate, predict, export; and resumable runs."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, SMALL_MODEL_OPTIONS
from lars_systemml import data, runtime, saved_model
from lars_systemml.cli import main
from lars_systemml.config import TrainConfig
from lars_systemml.errors import UserError
from lars_systemml.train import RunOptions, train

pytestmark = pytest.mark.slow

TINY = {"train_size": 300, "test_size": 100, "epochs": 1, "batch_size": 100, "seed": 3,
        "optimizer": "lars", "lr": 1.0}


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("lenet") / "run"
    m = train(TrainConfig(**TINY), out, RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g"))
    return out, m


def test_train_saves_the_model(lenet_run):
    out, m = lenet_run
    info = json.loads((out / "model" / "model.json").read_text())
    assert info["model"] == "lenet5" and info["npar"] == 107786 and m["model_dir"] == "model"
    assert [t["name"] for t in info["tensors"]][:2] == ["conv1.weight", "conv1.bias"]
    assert [t["no_decay"] for t in info["tensors"]] == [False, True] * 5
    assert info["shape"] == {"channels": 1, "height": 28, "width": 28, "classes": 10}
    assert info["config"]["optimizer"] == "lars" and info["dataset"]["test_size"] == 100
    assert not (out / "checkpoint").exists()  # removed once the run has finished


def test_evaluate_reproduces_the_runs_test_accuracy(lenet_run, capsys):
    out, m = lenet_run
    assert main(["evaluate", "--model-dir", str(out)]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert result["test_accuracy"] == pytest.approx(m["test_accuracy"], rel=1e-12)
    assert result["test_loss"] == pytest.approx(m["test_loss"], rel=1e-12)
    assert result["test_size"] == 100
    assert "test_acc=" in capsys.readouterr().out


def _numpy_lenet5(weights: dict, x: np.ndarray) -> np.ndarray:
    """An independent LeNet-5 forward pass (logits) for N x 784 images, from the exported weights."""

    def conv_same(a, w, b, cin, size):  # a: N x cin x size x size; w: F x (cin*5*5) row-major (c, kh, kw)
        n, f = a.shape[0], w.shape[0]
        padded = np.pad(a, ((0, 0), (0, 0), (2, 2), (2, 2)))
        cols = np.empty((n, cin, 5, 5, size, size))
        for kh in range(5):
            for kw in range(5):
                cols[:, :, kh, kw] = padded[:, :, kh:kh + size, kw:kw + size]
        out = np.einsum("fk,nkhw->nfhw", w, cols.reshape(n, cin * 25, size, size))
        return out + b.reshape(1, f, 1, 1)

    def pool(a):
        n, c, h, w = a.shape
        return a.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))

    n = x.shape[0]
    a1 = np.maximum(conv_same(x.reshape(n, 1, 28, 28), weights["conv1.weight"], weights["conv1.bias"], 1, 28), 0)
    a2 = np.maximum(conv_same(pool(a1), weights["conv2.weight"], weights["conv2.bias"], 6, 14), 0)
    h = pool(a2).reshape(n, -1)
    h = np.maximum(h @ weights["fc1.weight"] + weights["fc1.bias"], 0)
    h = np.maximum(h @ weights["fc2.weight"] + weights["fc2.bias"], 0)
    return h @ weights["fc3.weight"] + weights["fc3.bias"]


def test_predict_and_export_agree_with_an_independent_forward_pass(lenet_run, mnist_dir, tmp_path):
    out, m = lenet_run
    test = data.load_matrices("mnist", str(mnist_dir), 300, 100, "stratified")
    images = (test.xt * 255).round().astype(np.uint8)  # as a user would have them: raw pixels
    np.save(tmp_path / "x.npy", images.reshape(-1, 28, 28))
    assert main(["predict", "--model-dir", str(out), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "p.csv")]) == 0
    table = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    probs, predicted = table[:, :10], table[:, 10].astype(int)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    assert np.array_equal(predicted, probs.argmax(axis=1))
    assert np.mean(predicted == test.yt.argmax(axis=1)) == pytest.approx(m["test_accuracy"], abs=1e-12)

    assert main(["export", "--model-dir", str(out), "--output", str(tmp_path / "w.npz")]) == 0
    weights = dict(np.load(tmp_path / "w.npz"))
    assert weights["conv1.weight"].shape == (6, 25) and weights["fc3.weight"].shape == (84, 10)
    logits = _numpy_lenet5(weights, test.xt)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), probs, rtol=1e-9, atol=1e-12)


def test_missing_model_is_a_one_line_error(tmp_path, capsys):
    assert main(["evaluate", "--model-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no saved model in") and "\n" not in err
    with pytest.raises(UserError, match="no saved model"):
        saved_model.load(tmp_path / "nothing")


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, mnist_dir, monkeypatch):
    # a relative --output, as users type it: the checkpoints must still land in it, not under
    # SystemDS's working directory dml/
    monkeypatch.chdir(tmp_path)
    args = ["train", "--optimizer", "lamb", "--lr", "0.01", "--batch-size", "100", "--epochs", "4",
            "--train-size", "400", "--test-size", "100", "--seed", "9", "--data-dir", str(mnist_dir),
            "--heap", "2g", "--no-progress"]
    whole = train(TrainConfig(optimizer="lamb", lr=0.01, batch_size=100, epochs=4, train_size=400,
                              test_size=100, seed=9),
                  tmp_path / "whole", RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g"))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "lars_systemml", *args, "--output", "killed"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONUNBUFFERED": "1",
                                 "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    latest = out / "checkpoint" / "latest.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and json.loads(latest.read_text())["epoch"] >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 130 and not (out / "metrics.json").exists()
    stopped_at = json.loads(latest.read_text())["epoch"]
    assert 2 <= stopped_at < 4

    assert not (runtime.dml_dir() / "killed").exists()
    assert main([*args, "--output", "killed", "--resume"]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["resumed_from_epoch"] == stopped_at
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "steps", "epochs_run"):
        assert resumed[key] == pytest.approx(whole[key], rel=1e-12, abs=0), key
    assert len(resumed["history"]) == 4
    for a, b in zip(resumed["history"], whole["history"]):
        for key in ("train_loss", "test_loss", "test_accuracy", "lr", "steps"):
            assert a[key] == pytest.approx(b[key], rel=1e-12, abs=0), (a["epoch"], key)
    trace = np.loadtxt(out / "steps.csv", delimiter=",", skiprows=1)
    whole_trace = np.loadtxt(tmp_path / "whole" / "steps.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(trace, whole_trace, rtol=1e-12, atol=0)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, mnist_dir, capsys):
    out = tmp_path / "run"
    base = ["train", "--batch-size", "100", "--epochs", "2", "--train-size", "200", "--test-size", "100",
            "--data-dir", str(mnist_dir), "--heap", "2g", "--no-progress", "--output", str(out)]
    # a checkpoint of a 2-epoch sgd run, as if it had been interrupted after epoch 1
    from lars_systemml.checkpoint import Checkpoints

    config = TrainConfig(batch_size=100, epochs=2, train_size=200, test_size=100).validate()
    prepared = data.prepare("mnist", str(mnist_dir), 200, 100, "stratified")
    from lars_systemml.train import run_record

    Checkpoints(out).start(run_record(config, prepared), keep=False)
    (out / "checkpoint" / "epoch-1").mkdir()
    Checkpoints(out).commit(1, "epoch-1", {})
    assert main([*base, "--optimizer", "lars", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "is of another run (differs in config)" in err



def test_sweep_resumes_an_interrupted_cell_from_its_checkpoint(tmp_path, mnist_dir, monkeypatch):
    from lars_systemml.checkpoint import Checkpoints
    from lars_systemml.experiment import load_experiment
    from lars_systemml.sweep import run_sweep

    config = tmp_path / "exp.toml"
    config.write_text('name = "tiny"\ntrain_size = 200\ntest_size = 100\nepochs = 3\nseeds = [1]\n'
                      'optimizers = ["sgd"]\nbatch_sizes = [100]\n')
    experiment = load_experiment(config)
    output = tmp_path / "results"
    options = RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g")
    commit = Checkpoints.commit

    def commit_then_die(self, epoch, folder, seconds):  # the machine goes down after epoch 1's checkpoint
        commit(self, epoch, folder, seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoints, "commit", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(experiment, experiment.cells, output, options)
    assert not (output / "results.csv").exists()
    monkeypatch.setattr(Checkpoints, "commit", commit)
    assert run_sweep(experiment, experiment.cells, output, options) == 0
    m = json.loads((output / "runs" / "sgd-b100-s1" / "metrics.json").read_text())
    assert m["resumed_from_epoch"] == 1 and m["epochs_run"] == 3 and m["steps"] == 6
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3]


# Every registered model: save -> evaluate reproduces the run's test metrics, predict agrees with
# it, and a run killed after a checkpoint resumes to the uninterrupted result.
SMALL_RUNS = {name: {"model": name, "model_options": options} for name, options in SMALL_MODEL_OPTIONS.items()}


def test_every_model_has_a_small_run():
    from lars_systemml.models import MODELS

    assert set(SMALL_RUNS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(SMALL_RUNS))
def test_every_model_saves_predicts_and_resumes(tmp_path, mnist_dir, monkeypatch, name):
    from lars_systemml.checkpoint import Checkpoints

    config = TrainConfig(optimizer="lamb", lr=0.01, batch_size=100, epochs=2, train_size=200, test_size=100,
                         seed=4, **SMALL_RUNS[name])
    options = RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g")
    whole = train(config, tmp_path / "whole", options)

    model = saved_model.load(tmp_path / "whole")
    prepared = data.prepare("mnist", str(mnist_dir), 200, 100, "stratified")
    again = saved_model.evaluate(model, prepared, heap="2g")
    assert again["test_accuracy"] == pytest.approx(whole["test_accuracy"], abs=1e-12)
    assert again["test_loss"] == pytest.approx(whole["test_loss"], rel=1e-12)
    test = data.load_matrices("mnist", str(mnist_dir), 200, 100, "stratified")
    probs = saved_model.predict(model, test.xt, heap="2g")
    assert np.mean(probs.argmax(axis=1) == test.yt.argmax(axis=1)) == pytest.approx(whole["test_accuracy"], abs=1e-12)

    commit = Checkpoints.commit

    def commit_then_die(self, epoch, folder, seconds):  # killed right after epoch 1's checkpoint
        commit(self, epoch, folder, seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoints, "commit", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "killed", options)
    monkeypatch.setattr(Checkpoints, "commit", commit)
    resumed = train(config, tmp_path / "killed", RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g",
                                                            resume=True))
    assert resumed["resumed_from_epoch"] == 1
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "steps"):
        assert resumed[key] == pytest.approx(whole[key], rel=1e-12, abs=0), key
