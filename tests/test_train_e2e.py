"""End-to-end training runs of dml/train.dml on small real MNIST subsets."""
import json

import pytest

from lars_systemml import runtime
from lars_systemml.cli import main
from lars_systemml.config import TrainConfig
from lars_systemml.errors import DMLError
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


def test_same_seed_same_result(tmp_path, mnist_dir):
    a = run(tmp_path, mnist_dir, "a", optimizer="lars", lr=LARS_LR, epochs=2)
    b = run(tmp_path, mnist_dir, "b", optimizer="lars", lr=LARS_LR, epochs=2)
    assert a["test_loss"] == b["test_loss"] and a["train_accuracy"] == b["train_accuracy"]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    c = run(tmp_path, mnist_dir, "c", optimizer="lars", lr=LARS_LR, epochs=2, seed=7)
    assert c["test_loss"] != a["test_loss"]


@pytest.mark.parametrize("batch, parallel, size", [(100, 3, 600), (400, 3, 600), (4096, 2, 4096)])
def test_parallel_micro_batches_keep_the_math(tmp_path, mnist_dir, batch, parallel, size):
    # B=100 into 3 micro-batches is 34/33/33: weighted averaging must give the full-batch gradient.
    # train.dml computes micro-batches under 2048 rows in one piece and larger ones in a parfor
    # (4096 = 2 x 2048, sizes known at compile time); a short last batch (600 = 400 + 200:
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
