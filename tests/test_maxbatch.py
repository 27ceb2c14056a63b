"""The max-batch finder: the log2 grid, bisection with a fake trainer, reuse of
results.csv rows written by the sweep, and the CLI."""
import json
import shlex

import pytest

from lars_systemml.cli import main
from lars_systemml.errors import UserError
from lars_systemml.experiment import load_experiment
from lars_systemml.maxbatch import batch_grid, find_max_batch, report
from lars_systemml.results import append_result, read_results
from lars_systemml.sweep import result_row

CONFIG = """
name = "mb"
train_size = 300
test_size = 100
epochs = 2
seeds = [1]
optimizers = ["sgd", "lars"]
batch_sizes = [1024, 4096, 32000]
[hyperparameters]
lr = 0.05
[[seeds_for]]
optimizers = ["lars"]
batch_sizes = [4096, 8192]
seeds = [1, 2, 3]
"""


class FakeTrainer:
    """Test accuracy falls with the batch size (seed-dependent wiggle); records every call."""

    def __init__(self, accuracy):
        self.accuracy = accuracy
        self.calls = []

    def __call__(self, config, output, options):
        self.calls.append((config.optimizer, config.batch_size, config.seed))
        acc = self.accuracy(config.batch_size, config.seed)
        return {"train_size": 300, "test_size": 100, "train_accuracy": acc, "test_accuracy": acc,
                "generalization_error": 0.0, "train_loss": 0.1, "test_loss": 0.1, "diverged": False,
                "epochs_run": config.epochs, "steps": 2, "wall_seconds": 1.0, "train_seconds": 1.0,
                "backend": "fake", "systemds_version": "fake"}


def steps_down(threshold_batch):
    """0.99 up to threshold_batch, 0.90 above; the seeds differ by +-0.005."""
    return lambda b, seed: (0.99 if b <= threshold_batch else 0.90) + 0.005 * (seed - 2)


@pytest.fixture
def experiment(tmp_path):
    path = tmp_path / "mb.toml"
    path.write_text(CONFIG)
    return load_experiment(path)


def test_batch_grid():
    assert batch_grid(1024, 32000) == [1024, 2048, 4096, 8192, 16384, 32000]
    assert batch_grid(1024, 32768) == [1024, 2048, 4096, 8192, 16384, 32768]
    assert batch_grid(500, 500) == [500]
    with pytest.raises(UserError):
        batch_grid(0, 10)


@pytest.mark.parametrize("threshold, answer", [
    (1024, 1024), (2048, 2048), (4096, 4096), (8192, 8192), (16384, 16384), (32000, 32000), (512, None)])
def test_bisection_finds_the_largest_passing_size(tmp_path, experiment, threshold, answer):
    fake = FakeTrainer(steps_down(threshold))
    result = find_max_batch(experiment, "sgd", 0.95, tmp_path / "out", None, fake, log=lambda s: None)
    assert result.answer == answer
    tried = [t.batch_size for t in result.trials]
    assert tried[0] == 32000 and len(tried) <= 2 + 3 and len(set(tried)) == len(tried)
    if answer not in (None, 32000):
        # the evidence brackets the answer: it passed and the next grid size failed
        grid = result.grid
        nxt = grid[grid.index(answer) + 1]
        assert {answer, nxt} <= set(tried)
        assert [t.passed for t in result.trials if t.batch_size in (answer, nxt)] == \
            [True, False] if tried.index(answer) < tried.index(nxt) else [False, True]
    rows = read_results(tmp_path / "out" / "results.csv")
    assert [int(r["batch_size"]) for r in rows] == tried  # every new run is recorded


def test_seeds_are_averaged_and_runs_reused(tmp_path, experiment):
    out = tmp_path / "out"
    # seed 2 alone would fail the target: only the mean over seeds passes at 4096
    fake = FakeTrainer(lambda b, seed: {1: 0.985, 2: 0.97, 3: 0.99}[seed] if b <= 4096 else 0.5)
    lines = []
    result = find_max_batch(experiment, "lars", 0.98, out, None, fake, log=lines.append)
    # lars at 4096 and 8192 has 3 seeds ([[seeds_for]]), elsewhere 1
    assert sorted(set(fake.calls)) == sorted(fake.calls)
    assert [c for c in fake.calls if c[1] == 4096] == [("lars", 4096, s) for s in (1, 2, 3)]
    four = next(t for t in result.trials if t.batch_size == 4096)
    assert four.accuracy == pytest.approx((0.985 + 0.97 + 0.99) / 3) and four.passed
    assert result.answer == 4096
    # a second search reuses every run: the trainer is never called
    again = FakeTrainer(lambda b, s: pytest.fail("should reuse"))
    second = find_max_batch(experiment, "lars", 0.98, out, None, again, log=lines.append)
    assert second.answer == 4096 and not again.calls
    assert all(t.reused and not t.new for t in second.trials)
    text = report(second)
    assert "answer: 4096; the next grid size 8192 fails" in text and "reused" in text


def test_rows_from_a_sweep_are_reused_and_a_changed_config_is_refused(tmp_path, experiment):
    out = tmp_path / "out"
    out.mkdir()
    fake = FakeTrainer(steps_down(8192))
    # rows as `lars-systemml sweep` writes them for the config's own batch sizes
    for cell in experiment.cells:
        if cell.config.optimizer == "sgd":
            append_result(out / "results.csv", result_row(experiment, cell, fake(cell.config, None, None), "abc"))
    fake.calls.clear()
    result = find_max_batch(experiment, "sgd", 0.95, out, None, fake, log=lambda s: None)
    assert result.answer == 8192
    assert {b for _, b, _ in fake.calls} == {8192, 16384}  # 1024, 4096 and 32000 came from the sweep
    reused = {t.batch_size for t in result.trials if t.reused}
    assert reused == {32000, 1024, 4096} & {t.batch_size for t in result.trials}

    changed = load_experiment_text(tmp_path, CONFIG.replace("lr = 0.05", "lr = 0.07"))
    with pytest.raises(UserError, match="different config"):
        find_max_batch(changed, "sgd", 0.95, out, None, fake, log=lambda s: None)


def load_experiment_text(tmp_path, text):
    path = tmp_path / "other.toml"
    path.write_text(text)
    return load_experiment(path)


def test_bad_requests(tmp_path, experiment):
    with pytest.raises(UserError, match="no optimizer 'lamb'"):
        find_max_batch(experiment, "lamb", 0.9, tmp_path, None, FakeTrainer(steps_down(1)))
    with pytest.raises(UserError, match="target must be"):
        find_max_batch(experiment, "sgd", 98.0, tmp_path, None, FakeTrainer(steps_down(1)))
    grid = load_experiment_text(tmp_path, CONFIG + "[grid]\nlr = [0.1, 0.2]\n")
    with pytest.raises(UserError, match="has a \\[grid\\]"):
        find_max_batch(grid, "sgd", 0.9, tmp_path / "g", None, FakeTrainer(steps_down(1)))


def test_cli_prints_answer_and_evidence(tmp_path, monkeypatch, capsys):
    config = tmp_path / "mb.toml"
    config.write_text(CONFIG)
    fake = FakeTrainer(steps_down(2048))
    monkeypatch.setattr("lars_systemml.train.train", fake)
    out = tmp_path / "out"
    argv = ["max-batch", "--optimizer", "sgd", "--target", "0.95", "--config", str(config),
            "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "answer: 2048; the next grid size 4096 fails" in text
    assert "batch  32000: mean test accuracy 89.50% < target (seeds: 0.8950; 1 new)" in text
    saved = json.loads((out / "max_batch-sgd-0.95.json").read_text())
    assert saved["answer"] == 2048 and saved["grid"] == [1024, 2048, 4096, 8192, 16384, 32000]
    assert [t["batch_size"] for t in saved["trials"]] == [b for _, b, _ in fake.calls]
    # the evidence says how it was made, like a sweep's folder
    assert (out / "commands.txt").read_text().splitlines() == [shlex.join(["lars-systemml", *argv])]
