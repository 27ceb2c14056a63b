"""Experiment configs, the resumable sweep, and the quick config end to end."""
import csv
import os
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from lars_systemml.cli import main
from lars_systemml.errors import UserError
from lars_systemml.experiment import load_experiment
from lars_systemml.results import RESULT_COLUMNS, append_result, read_results

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


def _is_protocol(path):
    return "search" in tomllib.loads(path.read_text())  # a `tune` config, tested in test_tune.py


@pytest.mark.parametrize("config", [p for p in sorted((REPO / "experiments").glob("*.toml")) if not _is_protocol(p)],
                         ids=lambda p: p.name)
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
    argv = ["sweep", "--config", str(config), "--output", str(out), "--data-dir", str(mnist_dir),
            "--no-progress", "--heap", "2g"]
    assert main(argv) == 0
    rows = _rows(out / "results.csv")
    assert len(rows) == 6 and {r["optimizer"] for r in rows} == {"sgd", "lars"}
    for row in rows:
        assert row["diverged"] == "False" and 0.0 <= float(row["test_accuracy"]) <= 1.0
        assert (out / "runs" / row["run_id"] / "metrics.json").is_file()
    for name in ("test_accuracy.png", "train_accuracy.svg", "generalization_error.png", "summary.md",
                 "config.toml", "commands.txt", "curves_b2048.png"):
        assert (out / name).is_file(), name
    assert (out / "commands.txt").read_text() == shlex.join(["lars-systemml", *argv]) + "\n"
    # max-batch on the same folder reuses the sweep's real rows: grid ends 64 and 2048 are in it
    from lars_systemml.maxbatch import find_max_batch

    def no_training(*args):
        raise AssertionError("max-batch should reuse the sweep's runs")

    by_batch = {int(r["batch_size"]): float(r["test_accuracy"]) for r in rows if r["optimizer"] == "lars"}
    result = find_max_batch(load_experiment(config), "lars", min(by_batch.values()), out, None, no_training,
                            log=lambda line: None)
    assert result.answer == 2048 and [t.reused for t in result.trials] == [1]
    assert result.trials[0].accuracies == [by_batch[2048]]


def test_per_optimizer_grid_and_seeds_for(tmp_path):
    text = TINY.replace('["sgd"]', '["sgd", "lars"]') + """
[grid]
lr = { sgd = [0.1, 0.2], lars = [5.0] }
[[seeds_for]]
optimizers = ["lars"]
batch_sizes = [150, 300]
seeds = [1, 2, 3]
[[seeds_for]]
batch_sizes = [300]
seeds = [7]
"""
    e = load_experiment(write(tmp_path, text))
    ids = {c.run_id for c in e.cells}
    assert {"sgd-b100-s1-lr0.1", "sgd-b100-s1-lr0.2", "lars-b100-s1-lr5.0", "lars-b150-s3-lr5.0",
            "sgd-b300-s7-lr0.2", "lars-b300-s7-lr5.0"} <= ids
    # sgd: 2 lrs x (100, 150: seed 1; 300: seed 7); lars: 100: 1 seed, 150: 3 seeds, 300: seed 7 (last rule wins)
    assert len(e.cells) == 2 * 3 + (1 + 3 + 1)
    assert e.seeds_for("lars", 150) == [1, 2, 3] and e.seeds_for("sgd", 150) == [1]
    # cells for a batch size outside the config's list follow the same rules
    assert [c.run_id for c in e.cells_for("lars", 2048)] == ["lars-b2048-s1-lr5.0"]


@pytest.mark.parametrize("extra, message", [
    ("[grid]\nlr = { lamb = [1.0] }\n", r"unknown key\(s\) lamb in \[grid\] lr"),
    ("[grid]\nlr = { sgd = [] }\n", r"\[grid\] lr must be a non-empty list"),
    ("[[seeds_for]]\nbatch_sizes = [100]\n", "'seeds' must be a non-empty list"),
    ("[[seeds_for]]\nseeds = [1]\nbatch = [100]\n", r"unknown key\(s\) batch in \[\[seeds_for\]\] #1"),
    ("[[seeds_for]]\nseeds = [1]\noptimizers = [\"lamb\"]\n", "'optimizers' must be a list from"),
])
def test_invalid_grid_and_seed_rules(tmp_path, extra, message):
    with pytest.raises(UserError, match=message):
        load_experiment(write(tmp_path, TINY + extra))


def test_config_hash_of_default_runs_is_unchanged_since_v01():
    # hashes that v0.1 (commit 7fdc5d4) wrote into results.csv: a sweep started then resumes
    e = load_experiment(REPO / "experiments" / "paper.toml")
    assert (e.cells[0].run_id, e.cells[0].config_hash) == ("sgd-b32-s42", "38dce81a415f")
    from lars_systemml.config import TrainConfig
    from lars_systemml.experiment import Cell

    assert Cell("x", TrainConfig()).config_hash == "d5fc07170195"
    assert Cell("x", TrainConfig(schedule="constant")).config_hash != "d5fc07170195"


def test_config_hash_sees_the_scaled_lr_not_the_rule():
    # a scaled cell at its base batch is the unscaled run: reused, not run again
    from lars_systemml.config import TrainConfig
    from lars_systemml.experiment import Cell

    def cell(**kw):
        return Cell("x", TrainConfig(optimizer="lamb", schedule="warmup_poly", **kw))

    assert cell(batch_size=32000, lr=0.05, lr_scaling="sqrt", base_batch=32000).config_hash == \
        cell(batch_size=32000, lr=0.05).config_hash
    scaled = cell(batch_size=8000, lr=0.05, lr_scaling="sqrt", base_batch=32000)
    assert scaled.config_hash != cell(batch_size=8000, lr=0.05).config_hash
    assert scaled.config_hash == cell(batch_size=8000, lr=0.025).config_hash
    assert scaled.config_hash != cell(batch_size=8000, lr=0.05, lr_scaling="sqrt", base_batch=16000).config_hash


def test_v01_results_are_read_and_upgraded_on_append(tmp_path):
    from lars_systemml.config import TrainConfig
    from lars_systemml.results import V1_COLUMNS

    path = tmp_path / "results.csv"
    old = {**TrainConfig().as_dict(), "run_id": "a", "config_hash": "h", "test_accuracy": 0.9}
    with open(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=V1_COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerow(old)
    rows = read_results(path)
    assert list(rows[0]) == RESULT_COLUMNS
    assert (rows[0]["schedule"], rows[0]["lr_scaling"], rows[0]["warmup_epochs"], rows[0]["base_batch"]) == \
        ("inverse_time", "none", "0.0", "")
    append_result(path, {**TrainConfig(schedule="constant").as_dict(), "run_id": "b"})
    assert path.read_text().splitlines()[0].split(",") == RESULT_COLUMNS
    rows = read_results(path)
    assert [(r["run_id"], r["schedule"], r["test_accuracy"]) for r in rows] == \
        [("a", "inverse_time", "0.9"), ("b", "constant", "")]


def test_tuned_configs_are_one_recipe():
    tuned = load_experiment(REPO / "experiments" / "tuned.toml")
    fashion = load_experiment(REPO / "experiments" / "tuned_fashion.toml")
    assert tuned.optimizers == fashion.optimizers == ["sgd", "lars", "lamb"]
    assert tuned.batch_sizes == [1024, 4096, 8192, 16384, 32000]
    assert fashion.batch_sizes[0] == 1024 and fashion.batch_sizes[-1] == 32000
    for e in (tuned, fashion):
        configs = [c.config for c in e.cells]
        assert len({c.epochs for c in configs}) == 1 and configs[0].epochs <= 30  # one budget
        assert all(c.schedule == "warmup_poly" and c.warmup_epochs > 0 for c in configs)
        # one searched lr and lr rule per optimizer for every batch size (measured: "none" for
        # SGD and LARS, sqrt from 32000 for LAMB) and one searched decay power per optimizer
        for opt in e.optimizers:
            mine = [c for c in configs if c.optimizer == opt]
            assert len({(c.lr, c.lr_scaling, c.base_batch, c.poly_power) for c in mine}) == 1
            rule = "sqrt" if opt == "lamb" else "none"
            assert {c.lr_scaling for c in mine} == {rule}
            peaks = {c.batch_size: c.peak_lr() for c in mine}
            assert peaks[32000] == mine[0].lr and (rule == "none") == (len(set(peaks.values())) == 1)
        assert {c.dataset for c in configs} == {"mnist" if e is tuned else "fashion-mnist"}
        assert all(c.train_size is None and c.test_size is None for c in configs)  # full data
    # 3 seeds where the targets are (LARS, LAMB at 8192, 16384, 32000), 1 elsewhere
    for opt in tuned.optimizers:
        for batch in tuned.batch_sizes:
            target = opt in ("lars", "lamb") and batch >= 8192
            assert tuned.seeds_for(opt, batch) == ([1, 2, 3] if target else [1])
    # Fashion-MNIST runs the same recipe: equal settings but for the data set
    for opt in tuned.optimizers:
        a = tuned.cells_for(opt, 32000)[0].config
        b = fashion.cells_for(opt, 32000)[0].config
        assert {k for k, v in a.as_dict().items() if getattr(b, k) != v} == {"dataset"}


def _finished_row(experiment, cell, test_accuracy):
    from lars_systemml.sweep import result_row

    metrics = {"train_size": 300, "test_size": 100, "train_accuracy": 0.5, "test_accuracy": test_accuracy,
               "generalization_error": 0.5 - test_accuracy, "train_loss": 1.0, "test_loss": 1.1,
               "diverged": False, "epochs_run": 1, "steps": 3, "wall_seconds": 9.0, "train_seconds": 5.0,
               "backend": "local", "systemds_version": "3.4.0"}
    return result_row(experiment, cell, metrics, "abc123")


def test_sweep_reuses_identical_runs_of_another_folder(tmp_path, capsys):
    from lars_systemml.sweep import run_sweep
    from lars_systemml.train import RunOptions

    # an "LR search" that ran lr 0.05 and 0.1 at batch 150
    search = load_experiment(write(tmp_path, TINY.replace("lr = 0.05", "").replace("[100, 150, 300]", "[150]")
                                   + '[grid]\nlr = [0.05, 0.1]\n', "search.toml"))
    src = tmp_path / "search"
    src.mkdir()
    for cell, acc in zip(search.cells, [0.81, 0.62]):
        append_result(src / "results.csv", _finished_row(search, cell, acc))
        (src / "runs" / cell.run_id).mkdir(parents=True)
        (src / "runs" / cell.run_id / "metrics.json").write_text('{"test_accuracy": %s}' % acc)

    tiny = load_experiment(write(tmp_path, TINY))
    out = tmp_path / "out"
    cell = tiny.filtered(["batch_size=150"])
    assert run_sweep(tiny, cell, out, RunOptions(progress=False), reuse=[src]) == 0
    [row] = read_results(out / "results.csv")
    # the lr-0.05 run (same config hash), under this sweep's name and id, with its provenance
    assert (row["config_name"], row["run_id"], row["test_accuracy"]) == ("tiny", "sgd-b150-s1", "0.81")
    assert row["config_hash"] == cell[0].config_hash and row["git_commit"] == "abc123"
    copied = out / "runs" / "sgd-b150-s1"
    assert (copied / "metrics.json").read_text() == '{"test_accuracy": 0.81}'
    assert (copied / "reused_from.txt").read_text().strip().endswith("sgd-b150-s1-lr0.05")
    assert "reused" in capsys.readouterr().err
    # now done: a second sweep has nothing to run or reuse
    assert run_sweep(tiny, cell, out, RunOptions(progress=False), reuse=[src], dry_run=True) == 0
    assert "1 done, 0 to run" in capsys.readouterr().err
    # the cells with no identical run elsewhere stay to run
    run_sweep(tiny, tiny.cells, tmp_path / "plan", RunOptions(progress=False), reuse=[src], dry_run=True)
    captured = capsys.readouterr()
    assert "1 to reuse, 2 to run" in captured.err
    assert "sgd-b150-s1                  reuse" in captured.out and "sgd-b100-s1 " in captured.out


def test_paramserv_runs_are_not_mixed_with_local_ones(tmp_path, capsys):
    """paramserv with K workers computes other steps than a local run of the same config:
    the same --output refuses the other mode, and --reuse adopts runs of the same mode only.
    (Local runs and the Spark parfor mode run the same steps and mix.)"""
    from lars_systemml.spark import SparkOptions
    from lars_systemml.sweep import run_sweep
    from lars_systemml.train import RunOptions

    def options(workers=None):
        spark = SparkOptions("spark://127.0.0.1:7077", mode="paramserv", workers=workers) if workers else None
        return RunOptions(progress=False, spark=spark)

    tiny = load_experiment(write(tmp_path, TINY))
    out = tmp_path / "out"
    out.mkdir()
    append_result(out / "results.csv", {**_finished_row(tiny, tiny.cells[0], 0.7), "backend": "spark",
                                        "spark_mode": "paramserv", "workers": 2})
    with pytest.raises(UserError, match=r"results.csv has run sgd-b100-s1 in the paramserv K=2 mode, and this one "
                                        r"runs locally or in the Spark parfor mode: use another --output"):
        run_sweep(tiny, tiny.cells, out, options(), dry_run=True)
    with pytest.raises(UserError, match=r"in the paramserv K=2 mode, and this one runs in the paramserv K=4 mode"):
        run_sweep(tiny, tiny.cells, out, options(4), dry_run=True)
    assert run_sweep(tiny, tiny.cells, out, options(2), dry_run=True) == 0
    assert "3 runs, 1 done, 2 to run" in capsys.readouterr().err
    # --reuse: the paramserv run is adopted by a paramserv sweep of the same K only
    for workers, plan in ((None, "0 done, 3 to run"), (4, "0 done, 3 to run"), (2, "0 done, 1 to reuse, 2 to run")):
        run_sweep(tiny, tiny.cells, tmp_path / f"plan{workers}", options(workers), reuse=[out], dry_run=True)
        assert plan in capsys.readouterr().err
    # a local run of the parfor mode and a local one mix
    parfor = tmp_path / "parfor"
    parfor.mkdir()
    append_result(parfor / "results.csv", {**_finished_row(tiny, tiny.cells[0], 0.7), "backend": "spark",
                                           "spark_mode": "parfor"})
    assert run_sweep(tiny, tiny.cells, parfor, options(), dry_run=True) == 0
    assert "3 runs, 1 done, 2 to run" in capsys.readouterr().err


def test_reuse_of_a_folder_without_results_is_an_error(tmp_path):
    from lars_systemml.sweep import run_sweep
    from lars_systemml.train import RunOptions

    tiny = load_experiment(write(tmp_path, TINY))
    with pytest.raises(UserError, match="no results.csv"):
        run_sweep(tiny, tiny.cells, tmp_path / "out", RunOptions(progress=False), reuse=[tmp_path / "nope"],
                  dry_run=True)


def test_dry_run_estimate_is_calibrated_by_finished_runs(tmp_path, capsys):
    from lars_systemml.sweep import machine_factor, model_seconds, run_sweep
    from lars_systemml.train import RunOptions

    assert machine_factor([]) is None
    tiny = load_experiment(write(tmp_path, TINY))
    out = tmp_path / "out"
    out.mkdir()
    done = tiny.cells[0]  # sgd-b100-s1: 300 images, 1 epoch
    row = _finished_row(tiny, done, 0.5)
    row["wall_seconds"] = 3 * model_seconds(100, 1, 300)  # a machine 3x slower than the model
    append_result(out / "results.csv", row)
    assert machine_factor(read_results(out / "results.csv")) == pytest.approx(3.0)
    run_sweep(tiny, tiny.cells, out, RunOptions(progress=False), dry_run=True)
    captured = capsys.readouterr()
    assert "cost model x3.00" in captured.err
    expected = 3 * model_seconds(150, 1, 300) / 60
    assert "sgd-b150-s1" in captured.out and f"~{expected:.1f} min" in captured.out


def test_a_new_results_folder_borrows_the_calibration_of_its_siblings(tmp_path, capsys):
    from lars_systemml.sweep import model_seconds, run_sweep
    from lars_systemml.train import RunOptions

    tiny = load_experiment(write(tmp_path, TINY))
    results = tmp_path / "results"
    (results / "older").mkdir(parents=True)
    row = _finished_row(tiny, tiny.cells[0], 0.5)
    row["wall_seconds"] = 2 * model_seconds(100, 1, 300)  # a machine 2x slower than the model
    append_result(results / "older" / "results.csv", row)
    on_spark = {**_finished_row(tiny, tiny.cells[1], 0.5), "backend": "spark"}  # not this machine's time
    append_result(results / "older" / "results.csv", on_spark)
    run_sweep(tiny, tiny.cells, results / "new", RunOptions(progress=False), dry_run=True)
    assert f"cost model x2.00, from 1 finished runs in {results}/" in capsys.readouterr().err
    # nothing finished anywhere near: the bare model, said as such
    run_sweep(tiny, tiny.cells, tmp_path / "alone" / "new", RunOptions(progress=False), dry_run=True)
    assert "cost model x" not in capsys.readouterr().err
    assert not (results / "new").exists() and not (tmp_path / "alone").exists()  # a dry run writes nothing


def test_results_of_a_version_without_the_newest_fields_are_read_and_upgraded(tmp_path):
    # v0.2 wrote every column but standardize; its runs used raw [0, 1] pixels
    tiny = load_experiment(write(tmp_path, TINY))
    path = tmp_path / "results.csv"
    older = [c for c in RESULT_COLUMNS if c != "standardize"]
    row = _finished_row(tiny, tiny.cells[0], 0.5)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=older, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerow(row)
    [read] = read_results(path)
    assert read["standardize"] == "False" and read["config_hash"] == tiny.cells[0].config_hash
    append_result(path, _finished_row(tiny, tiny.cells[1], 0.6))
    assert next(csv.reader(open(path))) == RESULT_COLUMNS
    assert [r["run_id"] for r in read_results(path)] == ["sgd-b100-s1", "sgd-b150-s1"]
    # a header with an unknown column is still refused
    path.write_text("config_name,what\ntiny,1\n")
    with pytest.raises(UserError, match="other columns"):
        read_results(path)


def test_results_written_before_the_tuning_columns_are_read_and_upgraded(tmp_path):
    # every file before the tuner lacks stage and trial: read with them empty, upgraded on append
    tiny = load_experiment(write(tmp_path, TINY))
    path = tmp_path / "results.csv"
    older = [c for c in RESULT_COLUMNS if c not in ("stage", "trial")]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=older, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerow(_finished_row(tiny, tiny.cells[0], 0.5))
    [read] = read_results(path)
    assert (read["stage"], read["trial"], read["test_accuracy"]) == ("", "", "0.5")
    append_result(path, {**_finished_row(tiny, tiny.cells[1], 0.6), "stage": "screen", "trial": 2})
    assert next(csv.reader(open(path))) == RESULT_COLUMNS
    assert [(r["run_id"], r["stage"], r["trial"]) for r in read_results(path)] == \
        [("sgd-b100-s1", "", ""), ("sgd-b150-s1", "screen", "2")]


def test_an_adopted_run_takes_its_role_here_not_its_origins(tmp_path):
    # a tuning run's stage and trial describe it in its protocol, not in the sweep adopting it
    from lars_systemml.sweep import adopt

    tiny = load_experiment(write(tmp_path, TINY))
    cell = tiny.cells[0]
    origin = {**_finished_row(tiny, cell, 0.7), "run_id": "sgd-b100-s1-t03", "stage": "full", "trial": 3}
    (tmp_path / "out").mkdir()
    adopt(tiny, cell, tmp_path / "elsewhere", origin, tmp_path / "out")
    adopt(tiny, tiny.cells[1], tmp_path / "elsewhere", origin, tmp_path / "out", {"stage": "final", "trial": 1})
    rows = read_results(tmp_path / "out" / "results.csv")
    assert [(r["run_id"], r["stage"], r["trial"], r["test_accuracy"]) for r in rows] == \
        [("sgd-b100-s1", "", "", "0.7"), ("sgd-b150-s1", "final", "1", "0.7")]
