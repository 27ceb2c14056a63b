"""Experiment configs, the resumable sweep, and the quick config end to end."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lars_systemml.cli import main
from lars_systemml.errors import UserError
from lars_systemml.experiment import load_experiment
from lars_systemml.sweep import RESULT_COLUMNS, append_result, read_results

REPO = Path(__file__).resolve().parent.parent

TINY = """
name = "tiny"
train_size = 300
test_size = 100
epochs = 1
seeds = [1]
optimizers = ["sgd"]
batch_sizes = [100, 150, 300]
[hyperparameters]
lr = 0.05
"""


def write(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("config", sorted((REPO / "experiments").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(config):
    experiment = load_experiment(config)
    assert experiment.cells and experiment.name == config.stem


def test_paper_config_is_the_papers_grid():
    e = load_experiment(REPO / "experiments" / "paper.toml")
    assert sorted({c.config.batch_size for c in e.cells}) == \
        [32, 64, 128, 256, 512, 1024, 2048, 4096, 8000, 16000, 20000, 24000, 28000, 32000]
    c = e.cells[0].config
    assert (c.lr, c.lr_decay, c.weight_decay, c.momentum, c.trust_coef, c.parallel_batches) == \
        (0.01, 0.0001, 0.0001, 0.9, 0.001, 4)
    assert c.train_size is None and len(e.cells) == 28


@pytest.mark.parametrize("text, message", [
    ("typo = 1\n" + TINY, r"unknown key\(s\) typo in the top level"),
    ("momentum = 0.5\n" + TINY, r"unknown key\(s\) momentum in the top level"),
    (TINY.replace("lr = 0.05", "lr = 0.05\nlearning_rate = 1"), r"unknown key\(s\) learning_rate in \[hyperparameters\]"),
    (TINY + "[overrides.lamb]\nlr = 1\n", r"unknown key\(s\) lamb in \[overrides\]"),
    (TINY.replace('["sgd"]', '["adam"]'), "'optimizers' must be a non-empty list"),
    (TINY.replace("[100, 150, 300]", "[100, 100]"), "'batch_sizes' has duplicates"),
    (TINY.replace("lr = 0.05", "lr = -1.0"), "sgd batch 100: lr must be > 0"),
    (TINY.replace('name = "tiny"', ""), "'name' \\(a string\\) is required"),
    (TINY.replace("epochs = 1", ""), "'epochs' is required"),
    ("name = [", "not valid TOML"),
], ids=lambda v: v if "\n" not in v else None)
def test_invalid_configs(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        load_experiment(write(tmp_path, text))


def test_grid_and_overrides_and_filters(tmp_path):
    text = TINY.replace('["sgd"]', '["sgd", "lars"]') + "[overrides.lars]\nlr = 2.0\n[grid]\nmomentum = [0.5, 0.9]\n"
    e = load_experiment(write(tmp_path, text))
    assert len(e.cells) == 2 * 3 * 2
    lars = [c for c in e.cells if c.config.optimizer == "lars"]
    assert {c.config.lr for c in lars} == {2.0} and "lars-b100-s1-momentum0.5" in {c.run_id for c in lars}
    assert len(e.filtered(["optimizer=lars", "batch_size=100,300"])) == 4
    with pytest.raises(UserError, match="bad filter"):
        e.filtered(["nosuchfield=1"])


def test_partial_last_line_is_ignored_and_repaired(tmp_path):
    path = tmp_path / "results.csv"
    append_result(path, {"run_id": "a"})
    with open(path, "a") as f:
        f.write("tiny,b,half-written")  # a kill in the middle of a write
    assert [r["run_id"] for r in read_results(path)] == ["a"]
    append_result(path, {"run_id": "c"})
    assert [r["run_id"] for r in read_results(path)] == ["a", "c"]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_duplicates(tmp_path, mnist_dir):
    config = write(tmp_path, TINY)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lars_systemml", "sweep", "--config", str(config), "--output", str(out),
           "--data-dir", str(mnist_dir), "--no-progress", "--heap", "1g"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = out / "results.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (results.is_file() and len(_rows(results)) >= 1):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its JVM, mid-way
    proc.wait()
    first = _rows(results)
    assert 1 <= len(first) < 3, "the kill should land mid-sweep"

    assert subprocess.run(cmd, capture_output=True, timeout=600).returncode == 0
    rows = _rows(results)
    assert sorted(r["run_id"] for r in rows) == ["sgd-b100-s1", "sgd-b150-s1", "sgd-b300-s1"]
    assert rows[: len(first)] == first  # finished rows untouched
    assert list(rows[0].keys()) == RESULT_COLUMNS
    # a third run has nothing left to do
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert "0 to run" in again.stderr and len(_rows(results)) == 3


@pytest.mark.slow
def test_quick_config_end_to_end(tmp_path, mnist_dir, capsys):
    # the README's main job, on an even smaller subset so that it fits the test budget
    text = (REPO / "experiments" / "quick.toml").read_text()
    text = text.replace("train_size = 5000", "train_size = 500").replace("test_size = 1000", "test_size = 200")
    text = text.replace("epochs = 3", "epochs = 1")
    config = write(tmp_path, text, "quick.toml")
    out = tmp_path / "quick"
    assert main(["sweep", "--config", str(config), "--output", str(out), "--data-dir", str(mnist_dir),
                 "--no-progress", "--heap", "2g"]) == 0
    rows = _rows(out / "results.csv")
    assert len(rows) == 6 and {r["optimizer"] for r in rows} == {"sgd", "lars"}
    for row in rows:
        assert row["diverged"] == "False" and 0.0 <= float(row["test_accuracy"]) <= 1.0
        assert (out / "runs" / row["run_id"] / "metrics.json").is_file()
    for name in ("test_accuracy.png", "train_accuracy.svg", "generalization_error.png", "summary.md",
                 "config.toml", "commands.txt"):
        assert (out / name).is_file(), name
