"""Sweeps and tuners that share a results folder (a lock per run), a fatal cause that stops
them at the first run, and the time estimate that only takes other folders as a hint.
All with fake trainers: no JVM."""
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lars_systemml import locks, sweep
from lars_systemml import train as training
from lars_systemml.experiment import load_experiment
from lars_systemml.results import append_result, read_results
from lars_systemml.runtime import FatalError
from lars_systemml.train import RunOptions
from lars_systemml.tune import load_protocol, run_protocol

SWEEP = """
name = "shared"
train_size = 300
test_size = 100
epochs = 1
seeds = [1]
optimizers = ["sgd"]
batch_sizes = [100, 150, 200, 300]
[hyperparameters]
lr = 0.05
"""
PROTOCOL = """
name = "proto"
train_size = 300
test_size = 100
epochs = 2
optimizers = ["sgd"]
batch_sizes = [100]
[search]
trials = 3
sampler_seed = 7
seed = 1
final_seeds = [1, 2]
[search.space]
lr = { log_uniform = [0.001, 1.0] }
"""
TUNE_RUNS = 3 + 1  # three full trials, then the best at seed 2 (seed 1 is its full run)


def metrics(config, accuracy=0.5):
    return {"train_size": 300, "test_size": 100, "train_accuracy": accuracy, "test_accuracy": accuracy,
            "generalization_error": 0.0, "train_loss": 1.0, "test_loss": 1.0, "diverged": False,
            "epochs_run": config.epochs, "steps": 3, "wall_seconds": 2.0, "train_seconds": 1.0,
            "backend": "local", "systemds_version": "3.4.0"}


class FakeTrain:
    """Logs each call (run folder name and pid) to ``calls``, takes ``seconds``, scores by lr."""

    def __init__(self, calls: Path, seconds: float = 0.0, error: Exception | None = None):
        self.calls, self.seconds, self.error = calls, seconds, error

    def __call__(self, config, output, options):
        with open(self.calls, "a") as f:
            f.write(f"{Path(output).name} {os.getpid()}\n")
        if self.error is not None:
            raise self.error
        time.sleep(self.seconds)
        return metrics(config, accuracy=min(0.99, 0.5 + config.lr))

    def runs(self) -> list[str]:
        return [line.split()[0] for line in self.calls.read_text().splitlines()] if self.calls.exists() else []


def experiment(tmp_path, text=SWEEP):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return load_experiment(path)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _sweep_process(exp, out, fake, barrier):
    training.train = fake  # run_sweep imports it from lars_systemml.train when it starts
    barrier.wait()
    sys.exit(sweep.run_sweep(exp, exp.cells, out, RunOptions(progress=False)))


def _tune_process(config, out, fake, barrier):
    barrier.wait()
    sys.exit(run_protocol(load_protocol(config), out, None, train_fn=fake, log=lambda line: None))


def _together(target, args_of, n=2):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=target, args=(*args_of(i), barrier)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    return [p.exitcode for p in procs]


def test_two_sweeps_on_one_folder_split_the_runs(tmp_path):
    exp, out = experiment(tmp_path), tmp_path / "out"
    fake = FakeTrain(tmp_path / "calls", seconds=0.4)
    assert _together(_sweep_process, lambda i: (exp, out, fake)) == [0, 0]
    ids = [r["run_id"] for r in read_results(out / "results.csv")]
    assert sorted(ids) == sorted(c.run_id for c in exp.cells)  # 4 rows, one per run
    assert sorted(fake.runs()) == sorted(ids)  # each run trained once
    pids = {line.split()[1] for line in fake.calls.read_text().splitlines()}
    assert len(pids) == 2  # both processes worked
    assert not list((out / "locks").iterdir())


def test_a_run_finished_meanwhile_by_another_process_is_not_run_again(tmp_path, monkeypatch):
    exp, out = experiment(tmp_path), tmp_path / "out"
    last = exp.cells[0]  # sgd-b100-s1 runs last (largest batch first)
    fake = FakeTrain(tmp_path / "calls")

    def and_another_process_finishes_the_last(config, output, options):
        if not read_results(out / "results.csv"):  # the first run: the other process appends its row
            append_result(out / "results.csv", sweep.result_row(exp, last, metrics(last.config), "other"))
        return fake(config, output, options)

    monkeypatch.setattr(training, "train", and_another_process_finishes_the_last)
    assert sweep.run_sweep(exp, exp.cells, out, RunOptions(progress=False)) == 0
    rows = read_results(out / "results.csv")
    assert sorted(r["run_id"] for r in rows) == sorted(c.run_id for c in exp.cells)
    assert last.run_id not in fake.runs() and len(fake.runs()) == 3


def test_a_stale_lock_is_taken_over_and_another_machines_is_left(tmp_path, monkeypatch, capsys):
    exp, out = experiment(tmp_path), tmp_path / "out"
    stale, foreign = exp.cells[0].run_id, exp.cells[1].run_id
    sweep.lock_path(out, stale).parent.mkdir(parents=True)
    sweep.lock_path(out, stale).write_text(json.dumps({"pid": dead_pid(), "host": locks.host(), "started": "x"}))
    elsewhere = {"pid": 4242, "host": "node-7", "started": "2026-12-02T12:00:00+00:00"}
    sweep.lock_path(out, foreign).write_text(json.dumps(elsewhere))
    fake = FakeTrain(tmp_path / "calls")
    monkeypatch.setattr(training, "train", fake)
    assert sweep.run_sweep(exp, exp.cells, out, RunOptions(progress=False)) == 0
    assert sorted(fake.runs()) == sorted(c.run_id for c in exp.cells if c.run_id != foreign)
    assert len(read_results(out / "results.csv")) == 3
    assert json.loads(sweep.lock_path(out, foreign).read_text()) == elsewhere
    assert not sweep.lock_path(out, stale).exists()
    err = capsys.readouterr().err
    assert (f"1 run(s) are being run by other processes ({foreign}: pid 4242 on node-7 since "
            f"2026-12-02T12:00:00+00:00)") in err and f"delete its lock in {out / 'locks'}/" in err


def test_a_fatal_cause_stops_the_sweep_at_the_first_run(tmp_path, monkeypatch):
    exp, out = experiment(tmp_path), tmp_path / "out"
    fake = FakeTrain(tmp_path / "calls", error=FatalError("Java not found: install Java 17"))
    monkeypatch.setattr(training, "train", fake)
    with pytest.raises(FatalError) as error:
        sweep.run_sweep(exp, exp.cells, out, RunOptions(progress=False))
    assert len(fake.runs()) == 1
    assert str(error.value) == (f"Java not found: install Java 17 (the sweep stopped at {fake.runs()[0]}: "
                                f"its other 3 run(s) would fail the same way)")
    assert not list((out / "locks").iterdir())


def test_an_ordinary_failure_fails_its_run_only(tmp_path, monkeypatch):
    from lars_systemml.errors import DMLError

    exp, out = experiment(tmp_path), tmp_path / "out"
    fake = FakeTrain(tmp_path / "calls", error=DMLError("SystemDS failed: out of memory"))
    monkeypatch.setattr(training, "train", fake)
    assert sweep.run_sweep(exp, exp.cells, out, RunOptions(progress=False)) == 4 and len(fake.runs()) == 4


def test_two_tuners_on_one_folder_run_each_run_once(tmp_path):
    config, out = tmp_path / "proto.toml", tmp_path / "out"
    config.write_text(PROTOCOL)
    fake = FakeTrain(tmp_path / "calls", seconds=0.4)
    assert _together(_tune_process, lambda i: (config, out, fake)) == [0, 0]
    ids = [r["run_id"] for r in read_results(out / "results.csv")]
    assert len(ids) == TUNE_RUNS and len(set(ids)) == TUNE_RUNS
    assert sorted(fake.runs()) == sorted(ids)
    assert {r["stage"] for r in read_results(out / "results.csv")} == {"full", "final"}


def test_a_fatal_cause_stops_the_tuner_at_the_first_run(tmp_path):
    config, out = tmp_path / "proto.toml", tmp_path / "out"
    config.write_text(PROTOCOL)
    fake = FakeTrain(tmp_path / "calls", error=FatalError("cannot download mnist (x: y): pass --data-dir DIR"))
    with pytest.raises(FatalError, match=r"pass --data-dir DIR \(tuning stopped at sgd-b100-s1-t01: "):
        run_protocol(load_protocol(config), out, None, train_fn=fake, log=lambda line: None)
    assert len(fake.runs()) == 1


def test_unreadable_sibling_results_are_only_skipped_by_the_estimate(tmp_path, capsys):
    exp = experiment(tmp_path)
    results = tmp_path / "results"
    for name in ("a-good", "g", "h"):
        (results / name).mkdir(parents=True)
    good = exp.cells[0]
    row = sweep.result_row(exp, good, metrics(good.config), "abc")
    row["wall_seconds"] = 2 * sweep.model_seconds(good.config.batch_size, 1, 300)  # a 2x slower machine
    append_result(results / "a-good" / "results.csv", row)
    (results / "g" / "results.csv").write_text("config_name,what\nx,1\n")  # another program's file
    (results / "h" / "results.csv").write_bytes(b"\xff\xfe garbled \x00\n")
    assert sweep.run_sweep(exp, exp.cells, results / "new", RunOptions(progress=False), dry_run=True) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "skipped 2 unreadable results file(s)" in warnings[0]
    assert f"cost model x2.00, from 1 finished runs in {results}/" in err
    # a row whose numbers do not parse is left out of the factor, not an error
    assert sweep.machine_factor([row, {**row, "wall_seconds": "fast", "batch_size": "big"}]) == pytest.approx(2.0)


def test_a_row_records_the_data_checksums_as_one_cell(tmp_path):
    exp = experiment(tmp_path)
    cell = exp.cells[0]
    sums = {"train-images-idx3-ubyte": "aa11", "t10k-labels-idx1-ubyte": "bb22"}
    row = sweep.result_row(exp, cell, {**metrics(cell.config), "data_checksums": sums}, "abc")
    assert row["data_checksums"] == "train-images-idx3-ubyte:aa11 t10k-labels-idx1-ubyte:bb22"


def test_a_row_records_the_spark_mode_and_workers(tmp_path):
    exp = experiment(tmp_path)
    cell = exp.cells[0]
    row = sweep.result_row(exp, cell, {**metrics(cell.config), "backend": "spark", "spark_mode": "paramserv",
                                       "workers": 2}, "abc")
    append_result(tmp_path / "results.csv", row)
    (back,) = read_results(tmp_path / "results.csv")
    assert (back["backend"], back["spark_mode"], str(back["workers"])) == ("spark", "paramserv", "2")
    local = sweep.result_row(exp, cell, {**metrics(cell.config), "spark_mode": None, "workers": None}, "abc")
    assert local["spark_mode"] is None  # written empty
