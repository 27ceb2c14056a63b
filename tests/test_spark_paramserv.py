"""The paramserv Spark mode (``--spark-mode paramserv --workers K``, docs/spark.md).

SystemDS's ``paramserv(mode=REMOTE_SPARK, utype=BSP, freq=BATCH)`` partitions the training
set onto K workers (Spark tasks) and every step each worker computes the gradient of its
B/K rows; the driver applies the optimizer to their size-weighted mean. Every epoch the
training set is reshuffled with the local run's seeded permutation and cut into K contiguous
partitions, so each worker gets a random 1/K of the rows, another one every epoch; the
batches are drawn as the local run's are but are not the same (docs/spark.md), so results
agree with local runs exactly only when a batch is the whole training set (the mean gradient
then does not depend on the split), and statistically otherwise.

The Spark tests use a real standalone master and worker on 127.0.0.1 (tests/test_spark.py's
fixture) or ``local[2]``, a few hundred images, and small models.
"""
from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import QUIET, SMALL_JVM
from lars_systemml import spark
from lars_systemml.cli import main
from lars_systemml.config import TrainConfig
from lars_systemml.errors import UserError
from lars_systemml.results import read_results
from lars_systemml.train import RunOptions, train

pytestmark = pytest.mark.usefixtures("loopback")

MLP = dict(model="mlp", model_options="width=32,depth=2")


def paramserv(master: str, workers: int = 2, **kw) -> spark.SparkOptions:
    return spark.SparkOptions(master, conf=QUIET, mode="paramserv", workers=workers, **{**SMALL_JVM, **kw})


def ps_workers(log: Path) -> int:
    """paramserv's worker count from a SystemDS -stats log (summed over the epochs' calls)."""
    found = re.search(r"Paramserv total num workers:\s+(\d+)", log.read_text())
    assert found, f"no paramserv statistics in {log}"
    return int(found.group(1))


# ---------------------------------------------------------------- errors before any JVM starts


@pytest.mark.parametrize("argv, message", [
    (["--spark-mode", "paramserv", "--workers", "2"], "--spark-mode needs --backend spark"),
    (["--workers", "2"], "--workers needs --backend spark"),
    (["--backend", "spark", "--spark-master", "local[2]", "--spark-mode", "paramserv"],
     "--spark-mode paramserv needs --workers K"),
    (["--backend", "spark", "--spark-master", "local[2]", "--spark-mode", "paramserv", "--workers", "0"],
     "--workers must be at least 1, got 0"),
    (["--backend", "spark", "--spark-master", "local[2]", "--workers", "2"],
     "--workers needs --spark-mode paramserv"),
    (["--backend", "spark", "--spark-master", "local[2]", "--spark-mode", "paramserv", "--workers", "3"],
     "--workers 3 needs 3 task slots but local[2] has 2"),
    (["--backend", "spark", "--spark-master", "local[4]", "--spark-mode", "paramserv", "--workers", "3",
      "--batch-size", "100"], "--batch-size 100 is not a multiple of --workers 3"),
])
def test_bad_paramserv_flags_are_one_line_errors_before_anything_starts(argv, message, capsys, tmp_path,
                                                                         monkeypatch):
    started = []
    monkeypatch.setattr("lars_systemml.data.prepare", lambda *a, **k: started.append(1))
    monkeypatch.setattr("lars_systemml.runtime.run_dml", lambda *a, **k: started.append(2))
    assert main(["train", "--train-size", "600", "--output", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not started and not (tmp_path / "out").exists()


def test_partitions_must_give_every_worker_the_local_step_count():
    spark.check_partitions(600, 100, 2)  # 300 rows each, 6 steps of 50 = ceil(600/100)
    spark.check_partitions(60000, 1024, 2)  # 30000 each: 59 steps of 512, the last 304 rows
    spark.check_partitions(100, 1000, 4)  # one batch = the whole set: 25 rows each, 1 step
    with pytest.raises(UserError, match=r"take 1/3 steps of 1 rows per epoch, not 3 each"):
        spark.check_partitions(10, 4, 4)  # partitions 3, 3, 3, 1: BSP would wait forever
    with pytest.raises(UserError, match="not a multiple of --workers 3"):
        spark.check_partitions(50, 1000, 3)  # the batch is the whole set, 50 rows


def test_submit_command_fails_a_lost_paramserv_task_instead_of_retrying_it(tmp_path):
    cmd, _ = spark.submit_command(Path("train_paramserv.dml"), {"a": 1}, tmp_path / "c.xml",
                                  paramserv("spark://127.0.0.1:7077"), tmp_path)
    confs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--conf"]
    assert "spark.task.maxFailures=1" in confs
    cmd, _ = spark.submit_command(Path("train.dml"), {"a": 1}, tmp_path / "c.xml",
                                  spark.SparkOptions("spark://127.0.0.1:7077"), tmp_path)
    assert not any(a.startswith("spark.task.maxFailures") for a in cmd)


# ---------------------------------------------------------------- training on a cluster


@pytest.mark.spark
def test_full_batch_paramserv_equals_the_local_run(standalone, mnist_dir, tmp_path):
    # B = N: every step's global batch is the whole set, split 300/300 over two workers, whose
    # size-weighted mean gradient is the full-batch gradient, the local run's. LARS, so that
    # the trust ratios in the aggregation function take part.
    config = TrainConfig(optimizer="lars", lr=1.0, batch_size=600, epochs=3, train_size=600,
                         test_size=200, **MLP)
    local = train(config, tmp_path / "local", RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g"))
    out = tmp_path / "ps"
    m = train(config, out, RunOptions(data_dir=str(mnist_dir), progress=False, stats=True,
                                      spark=paramserv(standalone.url)))
    assert m["backend"] == "spark" and m["spark_mode"] == "paramserv" and m["workers"] == 2
    assert m["steps"] == local["steps"] == 3
    assert m["train_loss"] == pytest.approx(local["train_loss"], rel=1e-9)
    assert m["test_loss"] == pytest.approx(local["test_loss"], rel=1e-9)
    assert m["test_accuracy"] == local["test_accuracy"]
    ps_trace = (out / "steps.csv").read_text().splitlines()
    local_trace = (tmp_path / "local" / "steps.csv").read_text().splitlines()
    assert len(ps_trace) == len(local_trace) == 4
    for a, b in zip(ps_trace[1:], local_trace[1:]):
        assert [float(x) for x in a.split(",")] == pytest.approx([float(x) for x in b.split(",")], rel=1e-9)
    # two paramserv workers per epoch, each a task on the standalone worker's executor
    assert ps_workers(out / "systemds.log") == 2 * config.epochs
    apps = [a for a in standalone.state()["completedapps"] if a["name"] == f"lars-systemml {out.name}"]
    assert len(apps) == 1 and apps[0]["state"] == "FINISHED"
    logs = "".join(p.read_text() for p in standalone.work_dir.glob(f"{apps[0]['id']}/*/stderr"))
    assert len(re.findall(r"Finished task \S+ in stage", logs)) >= 2 * config.epochs


@pytest.mark.spark
def test_paramserv_accuracy_agrees_with_local_statistically(mnist_dir, tmp_path):
    # Batches differ (each worker walks its half of the reshuffled set, locally consecutive
    # batches of it), so the accuracies are two draws. Tolerance: 0.08 absolute on 500 test images. The
    # binomial standard error of one run's accuracy at p ~ 0.8 is sqrt(.8*.2/500) = 0.018, the
    # difference of two independent runs 0.025; training-order noise at 600 images adds about
    # as much again (seed-to-seed spread of local runs), so 0.08 is about 2.3 standard errors
    # of the difference, while a broken aggregation (no step, a wrong weighting or lr, NaN)
    # lands at chance level (0.1) or far below the local run.
    # batch 80: 40 rows per worker and step, so each worker's 300 rows end in a short batch of
    # 20 (padded to 40 with zero rows, paramserv/functions.dml)
    config = TrainConfig(optimizer="sgd", lr=0.1, batch_size=80, epochs=4, train_size=600,
                         test_size=500, seed=7, **MLP)
    local = train(config, tmp_path / "local", RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g"))
    m = train(config, tmp_path / "ps", RunOptions(data_dir=str(mnist_dir), progress=False,
                                                  spark=paramserv("local[2]", driver_memory="2g")))
    assert m["steps"] == local["steps"] == 32
    accuracies = (local["test_accuracy"], m["test_accuracy"])
    assert local["test_accuracy"] > 0.5, f"the local reference did not learn {accuracies}: the comparison means nothing"
    assert not m["diverged"]
    assert abs(m["test_accuracy"] - local["test_accuracy"]) <= 0.08, accuracies


@pytest.mark.spark
def test_paramserv_reshuffles_every_epoch_by_seed_and_epoch(mnist_dir, tmp_path, monkeypatch):
    # At lr 1e-12 the model stays put (to ~1e-11), so a step's batch loss depends only on which
    # rows make up its batch. Each epoch is a permutation of the 600 rows (6 steps of 100, no
    # short batch): the epochs' summed batch losses agree. The per-step losses differ between
    # the epochs only because the workers' partitions are reshuffled: with fixed partitions they
    # would repeat to ~1e-11. Killed after epoch 1's checkpoint and resumed, the run draws epoch 2's
    # permutation again from seed and epoch alone: the same trace as the uninterrupted run.
    from lars_systemml.checkpoint import Checkpoints

    config = TrainConfig(optimizer="sgd", lr=1e-12, momentum=0.0, batch_size=100, epochs=2, train_size=600,
                         test_size=100, seed=5, **MLP)
    options = RunOptions(data_dir=str(mnist_dir), progress=False, spark=paramserv("local[2]", driver_memory="2g"))
    train(config, tmp_path / "whole", options)
    whole = np.loadtxt(tmp_path / "whole" / "steps.csv", delimiter=",", skiprows=1)
    assert whole[:, :2].tolist() == [[s, 1 + (s - 1) // 6] for s in range(1, 13)]
    losses = whole[:, 3].reshape(2, 6)  # [epoch, step]
    assert losses[1].sum() == pytest.approx(losses[0].sum(), rel=1e-7)
    assert np.abs(losses[1] - losses[0]).max() > 1e-5 * losses[0].max(), losses

    commit = Checkpoints.commit

    def commit_then_die(self, epoch, folder, seconds):  # killed right after epoch 1's checkpoint
        commit(self, epoch, folder, seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoints, "commit", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "killed", options)
    monkeypatch.setattr(Checkpoints, "commit", commit)
    resumed = train(config, tmp_path / "killed", dataclasses.replace(options, resume=True))
    assert resumed["resumed_from_epoch"] == 1
    again = np.loadtxt(tmp_path / "killed" / "steps.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(again, whole, rtol=1e-12, atol=0)


@pytest.mark.spark
def test_full_batch_paramserv_lenet5_equals_the_local_run(mnist_dir, tmp_path):
    # LeNet-5 needs the literal-size reshapes that its paramserv_literal_rows add to its backward():
    # without them the workers' gradient differed (step 2's loss 2.3705570728401 against the
    # local 2.3703477495868253), with them it is the local one.
    config = TrainConfig(optimizer="lars", lr=1.0, batch_size=600, epochs=2, train_size=600, test_size=200)
    local = train(config, tmp_path / "local", RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g"))
    m = train(config, tmp_path / "ps", RunOptions(data_dir=str(mnist_dir), progress=False,
                                                  spark=paramserv("local[2]", driver_memory="2g")))
    assert m["steps"] == local["steps"] == 2
    assert m["train_loss"] == pytest.approx(local["train_loss"], rel=1e-9)
    assert m["test_loss"] == pytest.approx(local["test_loss"], rel=1e-9)
    assert m["test_accuracy"] == local["test_accuracy"]


@pytest.mark.spark
def test_a_lost_executor_recovers_or_fails_in_one_line_without_a_row(standalone, mnist_dir,
                                                                        tmp_path, capsys):
    import os
    import signal
    import subprocess

    config = tmp_path / "exp.toml"
    config.write_text('name = "lost"\ntrain_size = 600\ntest_size = 100\nepochs = 20\nseeds = [1]\n'
                      'optimizers = ["sgd"]\nbatch_sizes = [20]\n')
    results = tmp_path / "results"
    killed = []

    def kill_executor_mid_run() -> None:
        # the executor of this test's own standalone worker (its work folder is in the command
        # line's app folder) once the run has passed its first epoch
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            logs = list(results.glob("runs/.*partial*/systemds.log")) + list(results.glob("runs/*/systemds.log"))
            if any("@@epoch 1 " in p.read_text(errors="replace") for p in logs):
                apps = standalone.state()["activeapps"]
                for app in apps:
                    pids = subprocess.run(["pgrep", "-f", f"CoarseGrainedExecutorBackend.*{app['id']}"],
                                          capture_output=True, text=True).stdout.split()
                    for pid in pids:
                        os.kill(int(pid), signal.SIGKILL)
                        killed.append(int(pid))
            time.sleep(0.5)

    watcher = threading.Thread(target=kill_executor_mid_run, daemon=True)
    watcher.start()
    code = main(["sweep", "--config", str(config), "--output", str(results), "--data-dir", str(mnist_dir),
                 "--no-progress", "--backend", "spark", "--spark-master", standalone.url,
                 "--spark-mode", "paramserv", "--workers", "2", "--driver-memory", "1g",
                 "--executor-memory", "1g", "--spark-conf", "spark.ui.enabled=false"])
    watcher.join(timeout=5)
    assert killed, "the run ended before an executor could be killed"
    err = capsys.readouterr()
    if code == 0:
        # Recovered: the executor died between two epochs' paramserv calls (no task running;
        # seen on a loaded machine), the master started a new one and the run completed.
        (row,) = read_results(results / "results.csv")
        assert row["epochs_run"] == "20" and row["diverged"] == "False"  # values as strings
        return
    # Failed: the executor died under a paramserv task (maxFailures=1): one line, no row.
    assert code == 2
    failed = [line for line in (err.out + err.err).splitlines() if "FAILED" in line or line.startswith("error:")]
    assert failed and all("\n" not in line for line in failed)
    assert any("Spark failed" in line for line in failed), failed
    assert not (results / "results.csv").exists()
    assert not list(results.glob("runs/*/metrics.json"))


def replicated_mnist(mnist_dir: Path, folder: Path, copies: int, test_size: int) -> Path:
    """A bring-your-own data set: MNIST's training images ``copies`` times (uint8 .npy)."""
    import numpy as np

    from lars_systemml.data import read_idx

    folder.mkdir(parents=True, exist_ok=True)
    x = read_idx(mnist_dir / "train-images-idx3-ubyte.gz").reshape(-1, 784)
    y = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    np.save(folder / "train_x.npy", np.tile(x, (copies, 1)))
    np.save(folder / "train_y.npy", np.tile(y, copies))
    np.save(folder / "test_x.npy", read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz").reshape(-1, 784)[:test_size])
    np.save(folder / "test_y.npy", read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")[:test_size])
    (folder / "dataset.json").write_text(json.dumps({"channels": 1, "height": 28, "width": 28, "classes": 10,
                                                     "name": f"mnist-x{copies}"}))
    return folder


@pytest.mark.spark
@pytest.mark.slow
def test_paramserv_trains_a_data_set_larger_than_the_driver_heap(standalone, mnist_dir, tmp_path):
    # 120,000 images (MNIST twice) are 120000 x 784 doubles = 753 MB, the driver has a 512 MB
    # heap (Spark's floor is ~450 MB). The epoch's reshuffle (the permutation matrix times [X, Y])
    # runs on Spark (sp_cpmm), and the executors partition its output: the driver's Spark
    # statistics show no parallelize and no collect, only broadcasts (the N x 1 worker indicator,
    # the labels' selection matrix); the permutation matrix (N nonzeros) reaches the cpmm as a
    # file in the scratch folder. SystemDS holds MNIST sparse (~19% nonzeros), so X itself fits
    # this driver's budget: the final training accuracy reads its first 10,000 rows from X's
    # file on the driver here (a Spark job, and its one collect, for a larger X).
    data = replicated_mnist(mnist_dir, tmp_path / "mnist-x2", copies=2, test_size=1000)
    config = TrainConfig(optimizer="lars", lr=1.0, batch_size=2000, epochs=1, dataset=str(data),
                         model="mlp", model_options="width=16,depth=1")
    out = tmp_path / "ps"
    m = train(config, out, RunOptions(progress=False, stats=True,
                                      spark=paramserv(standalone.url, driver_memory="512m",
                                                      executor_memory="2g")))
    assert m["train_size"] == 120000 and 120000 * 784 * 8 > 512 * 2 ** 20
    assert m["steps"] == 60 and not m["diverged"] and m["test_accuracy"] > 0.5
    log = (out / "systemds.log").read_text()
    par, bc, col = map(int, re.search(r"Spark trans counts \(par,bc,col\):\s*(\d+)/(\d+)/(\d+)", log).groups())
    assert par == 0, "the driver parallelized a matrix: the training data went through it"
    assert col <= 1, "the driver collected more than the final accuracy's 10,000-row slice"
    assert re.search(r"^\s*\d+\s+sp_cpmm\s", log, re.M), "the reshuffle did not run on Spark"


def test_literal_rows_name_inputs_of_the_current_model_functions():
    """A model's paramserv_literal_rows patch its functions by their input names: a renamed input
    fails here, not as a DML error on the executors."""
    from lars_systemml import runtime
    from lars_systemml.models import MODELS

    assert MODELS["lenet5"].paramserv_literal_rows  # the one model known to need them
    for model, spec in MODELS.items():
        text = (runtime.dml_dir() / spec.file).read_text()
        patched = spark.with_literal_rows(text, model)
        assert patched.count("rows=$ps_batch") == sum(len(v) for v in spec.paramserv_literal_rows.values())


@pytest.mark.parametrize("name", ["lenet5", "mlp"])
def test_zero_padding_rows_add_nothing_to_a_stateless_models_gradient(name, tmp_path):
    """The paramserv workers pad a short batch with zero rows and zero labels: the padded
    batch's summed loss and gradient must be those of its real rows."""
    import numpy as np

    from conftest import SMALL_MODEL_OPTIONS, TESTS_DML
    from lars_systemml import models, runtime
    from lars_systemml.models import Shape

    script = models.render(TESTS_DML / "padded_gradients.dml", name, tmp_path)
    shape = Shape(1, 28, 28, 10)
    args = {**models.get(name).script_args(SMALL_MODEL_OPTIONS[name], shape), "seed": 3, "real_rows": 5, "padded_rows": 8,
            "out": str(tmp_path / "both.csv")}
    runtime.run_dml(runtime.local_command(script, args, heap="2g"), cwd=runtime.dml_dir())
    real, padded = np.loadtxt(tmp_path / "both.csv", delimiter=",", ndmin=2)
    assert np.any(real[1:] != 0)
    np.testing.assert_allclose(padded, real, rtol=1e-12, atol=1e-15)
