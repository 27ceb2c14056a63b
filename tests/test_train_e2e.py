"""End-to-end training runs of dml/train.dml on small real MNIST subsets."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import cmdline, is_training_jvm
from lars_systemml import runtime
from lars_systemml.cli import main
from lars_systemml.config import TrainConfig
from lars_systemml.errors import DMLError
from lars_systemml.schedules import lr_trace
from lars_systemml.train import RunOptions, train

pytestmark = pytest.mark.slow

# The LARS global lr found by experiments/lars_lr_search.toml (Table 1 otherwise).
LARS_LR = 1.0


def run(tmp_path, mnist_dir, name="run", **changes):
    settings = {"train_size": 600, "test_size": 200, "epochs": 1, "batch_size": 100, **changes}
    return train(TrainConfig(**settings), tmp_path / name,
                 RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g"))


@pytest.mark.parametrize("optimizer, lr, floor", [("sgd", 0.01, 0.90), ("lars", LARS_LR, 0.90)])
def test_reaches_90_percent_on_5k_subset(tmp_path, mnist_dir, optimizer, lr, floor):
    m = run(tmp_path, mnist_dir, optimizer=optimizer, lr=lr, train_size=5000, test_size=1000,
            batch_size=64, epochs=3)
    assert not m["diverged"]
    assert m["test_accuracy"] >= floor, m["test_accuracy"]
    assert m["steps"] == 3 * 79 and m["epochs_run"] == 3
    losses = [h["train_loss"] for h in m["history"]]
    assert losses[-1] < losses[0]


@pytest.fixture(scope="module")
def lars_run(tmp_path_factory, mnist_dir):
    """The metrics of a 2-epoch LARS run at run()'s defaults (seed 42), shared by two tests."""
    return run(tmp_path_factory.mktemp("lars"), mnist_dir, optimizer="lars", lr=LARS_LR, epochs=2)


def test_same_seed_same_result(tmp_path, mnist_dir, lars_run):
    a = lars_run
    b = run(tmp_path, mnist_dir, "b", optimizer="lars", lr=LARS_LR, epochs=2)
    assert a["test_loss"] == b["test_loss"] and a["train_accuracy"] == b["train_accuracy"]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    c = run(tmp_path, mnist_dir, "c", optimizer="lars", lr=LARS_LR, epochs=2, seed=7)
    assert c["test_loss"] != a["test_loss"]


@pytest.mark.parametrize("batch, parallel, size", [(100, 3, 600), (400, 3, 600), (4096, 2, 4096)])
def test_parallel_micro_batches_keep_the_math(tmp_path, mnist_dir, batch, parallel, size):
    # B=100 into 3 micro-batches is 34/33/33: weighted averaging must give the full-batch gradient.
    # train.dml computes micro-batches under 64 rows in one piece and larger ones in a parfor
    # (4096 = 2 x 2048, sizes known at compile time; B=100 in one piece); a short last batch (600 = 400 + 200:
    # 67/67/66) always goes through the parfor.
    one = run(tmp_path, mnist_dir, "p1", optimizer="sgd", lr=0.05, batch_size=batch,
              parallel_batches=1, epochs=2, train_size=size)
    many = run(tmp_path, mnist_dir, f"p{parallel}", optimizer="sgd", lr=0.05, batch_size=batch,
               parallel_batches=parallel, epochs=2, train_size=size)
    assert many["test_loss"] == pytest.approx(one["test_loss"], rel=1e-9)
    assert many["train_loss"] == pytest.approx(one["train_loss"], rel=1e-9)


def test_batch_larger_than_train_set_and_short_last_batch(tmp_path, mnist_dir):
    big = run(tmp_path, mnist_dir, "big", batch_size=5000, epochs=2)
    assert big["steps"] == 2  # one batch of all 600 rows per epoch
    short = run(tmp_path, mnist_dir, "short", batch_size=250, epochs=2, parallel_batches=4)
    assert short["steps"] == 6  # 250 + 250 + 100 per epoch
    tiny = run(tmp_path, mnist_dir, "tiny", batch_size=2, train_size=10, parallel_batches=4)
    assert tiny["steps"] == 5  # micro-batches capped at the batch size
    assert not (big["diverged"] or short["diverged"] or tiny["diverged"])


def test_divergence_is_recorded_not_crashed(tmp_path, mnist_dir):
    m = run(tmp_path, mnist_dir, optimizer="sgd", lr=500.0, epochs=3)
    assert m["diverged"] is True
    assert m["epochs_run"] <= 3
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["diverged"] is True


def test_dml_failure_is_an_error_despite_exit_status_0(tmp_path):
    script = tmp_path / "fail.dml"
    script.write_text('x = 1\nif (x == 1) { stop("boom from DML") }\n')
    with pytest.raises(DMLError, match="boom from DML"):
        runtime.run_dml(runtime.local_command(script, {}, heap="1g"), cwd=tmp_path)
    script.write_text("x = = 1\n")
    with pytest.raises(DMLError, match="fail.dml"):
        runtime.run_dml(runtime.local_command(script, {}, heap="1g"), cwd=tmp_path)


def test_cli_train_writes_metrics(tmp_path, mnist_dir, capsys):
    out = tmp_path / "cli"
    code = main(["train", "--optimizer", "lars", "--lr", str(LARS_LR), "--batch-size", "200",
                 "--epochs", "1", "--train-size", "600", "--test-size", "200", "--heap", "2g",
                 "--data-dir", str(mnist_dir), "--no-progress", "--output", str(out)])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ["optimizer", "hyperparameters", "batch_size", "parallel_batches", "epochs", "train_size",
                "test_size", "seed", "train_accuracy", "test_accuracy", "generalization_error",
                "train_loss", "test_loss", "diverged", "wall_seconds", "history"]:
        assert key in m
    assert m["generalization_error"] == pytest.approx(m["train_accuracy"] - m["test_accuracy"])
    assert m["hyperparameters"]["trust_coef"] == 0.001
    assert "test_acc=" in capsys.readouterr().out


def _running(pid: int) -> bool:
    """True while the process exists and is not a zombie (a container's PID 1 may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_sigterm_stops_the_jvm_too(tmp_path, mnist_dir):
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "lars_systemml", "train", "--train-size", "600",
                             "--test-size", "200", "--epochs", "50", "--data-dir", str(mnist_dir),
                             "--heap", "1g", "--no-progress", "--output", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def jvm_children():
        # the training JVM only: `java -version` (the Java check), the data-preparing JVM
        # (PythonDMLScript) and the class-data-sharing warm-up are short-lived children too,
        # and one seen by the wait below may be gone by the next look (a failure on a slow CI machine)
        out = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", r"sysds\.api\.DMLScript"],
                             capture_output=True, text=True)
        pids = [int(p) for p in out.stdout.split()]
        return [p for p in pids if is_training_jvm(cmdline(p))]

    deadline = time.time() + 300
    while not jvm_children() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    jvms = jvm_children()
    if not jvms:
        proc.kill()
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"no JVM within 300 s (driver exit status {proc.returncode}): {err[-2000:]}{out[-500:]}")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    # The JVM is gone as well. One the driver was still starting gets its parent-death SIGKILL
    # when the driver exits and is reaped by init a moment later, so poll.
    alive = jvms
    deadline = time.time() + 30
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _running(pid)]
    assert not alive, f"JVMs still running 30 s after the driver stopped: {alive}"
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_tiny_fashion_mnist_run_finds_its_data_next_to_mnist(tmp_path, mnist_dir, fashion_dir, monkeypatch):
    # only LARS_SYSTEMML_DATA_DIR (the MNIST folder) is set, as on this project's machines
    monkeypatch.setenv("LARS_SYSTEMML_DATA_DIR", str(mnist_dir))
    monkeypatch.delenv("LARS_SYSTEMML_FASHION_DIR", raising=False)
    if fashion_dir.resolve() != (mnist_dir.parent / "fashion-mnist").resolve():
        monkeypatch.setenv("LARS_SYSTEMML_FASHION_DIR", str(fashion_dir))
    config = TrainConfig(dataset="fashion-mnist", train_size=500, test_size=200, epochs=2, batch_size=50,
                         lr=0.05)
    m = train(config, tmp_path / "fashion", RunOptions(progress=False, heap="2g"))
    assert m["dataset"] == "fashion-mnist" and m["data_dir"] == str(fashion_dir)
    assert m["train_size"] == 500 and m["test_size"] == 200 and m["steps"] == 20
    assert not m["diverged"] and m["test_accuracy"] > 0.3  # chance is 0.1


@pytest.mark.parametrize("changes", [
    {},  # the paper's inverse time decay (the default)
    {"optimizer": "lars", "lr": 2.0, "lr_scaling": "sqrt", "base_batch": 25, "schedule": "warmup_poly",
     "warmup_epochs": 0.5},
], ids=["inverse_time", "warmup_poly"])
def test_per_step_lr_is_the_python_schedule(tmp_path, mnist_dir, changes):
    m = run(tmp_path, mnist_dir, epochs=2, **changes)  # 600 images / 100 = 6 steps per epoch
    config = TrainConfig(**{"train_size": 600, "test_size": 200, "epochs": 2, "batch_size": 100, **changes})
    trace = np.loadtxt(tmp_path / "run" / m["step_trace"], delimiter=",", skiprows=1, ndmin=2)
    assert trace[:, 0].tolist() == list(range(1, 13)) and trace[:, 1].tolist() == [1] * 6 + [2] * 6
    np.testing.assert_allclose(trace[:, 2], lr_trace(config, 600), rtol=1e-14, atol=0)
    assert np.all(np.isfinite(trace[:, 3])) and np.all(trace[:, 2] > 0)
    # the history's lr is that of each epoch's last step
    assert [h["lr"] for h in m["history"]] == pytest.approx(trace[[5, 11], 2].tolist(), rel=1e-15)
    if changes:
        assert trace[0, 2] == pytest.approx(2.0 * 2 / 3) and trace[2, 2] == pytest.approx(4.0)


def test_constant_schedule_is_inverse_time_without_decay(tmp_path, mnist_dir):
    a = run(tmp_path, mnist_dir, "a", schedule="constant", lr=0.05)
    b = run(tmp_path, mnist_dir, "b", lr_decay=0.0, lr=0.05)
    c = run(tmp_path, mnist_dir, "c", lr=0.05)
    assert a["test_loss"] == b["test_loss"] and a["history"][0]["lr"] == 0.05
    assert c["test_loss"] != a["test_loss"]  # the decay of the default schedule is applied


def test_standardized_inputs_change_the_run_and_are_recorded(tmp_path, mnist_dir, lars_run):
    raw = lars_run
    std = run(tmp_path, mnist_dir, "std", optimizer="lars", lr=LARS_LR, epochs=2, standardize=True)
    assert std["hyperparameters"]["standardize"] is True and "standardize" not in raw["hyperparameters"]
    assert std["standardize"] is True and raw["standardize"] is False
    assert std["test_loss"] != raw["test_loss"] and not std["diverged"]
    # the same seeded net learns from either input scale (12 LARS steps on 600 images)
    assert std["history"][-1]["train_loss"] < std["history"][0]["train_loss"]


def test_eval_every_skips_test_evaluations_but_not_the_last(tmp_path, mnist_dir):
    every = run(tmp_path, mnist_dir, "every", optimizer="lars", lr=LARS_LR, epochs=3)
    sparse = run(tmp_path, mnist_dir, "sparse", optimizer="lars", lr=LARS_LR, epochs=3, eval_every=2)
    # the training is the same; only epoch 1's test evaluation is skipped (epoch 2: every 2nd, 3: last)
    assert [h["train_loss"] for h in sparse["history"]] == [h["train_loss"] for h in every["history"]]
    assert [h["test_accuracy"] is None for h in sparse["history"]] == [True, False, False]
    assert sparse["history"][1]["test_loss"] == every["history"][1]["test_loss"]
    assert sparse["test_accuracy"] == every["test_accuracy"] and sparse["train_accuracy"] == every["train_accuracy"]
    assert sparse["eval_every"] == 2 and not sparse["diverged"]
