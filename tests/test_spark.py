"""The Spark backend: spark-submit on local[2] and on a real standalone cluster
(master + worker on 127.0.0.1), checked against the local runner; and its
one-line errors.

Tolerance for "same accuracy as local": losses equal to 1e-9 relative and
accuracies to one image. The Spark run computes the same micro-batch
gradients in the same order, so on this machine the numbers were identical;
SystemDS 3.4.0's wrong conv1 gradient with opt=NONE (see dml/train.dml)
shifted the test loss by ~1e-4 after one step, which these bounds catch.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from conftest import QUIET, SMALL_JVM, SMALL_MODEL_OPTIONS
from lars_systemml import runtime, spark
from lars_systemml import standalone as standalone_cluster
from lars_systemml.cli import main
from lars_systemml.config import TrainConfig
from lars_systemml.errors import DMLError, UserError
from lars_systemml.train import RunOptions, train

# B=100 in P=3 micro-batches is 34/33/33: both the (base+1)- and the base-row parfor run.
CONFIG = dict(optimizer="sgd", lr=0.05, batch_size=100, parallel_batches=3, epochs=1,
              train_size=600, test_size=200)
pytestmark = pytest.mark.usefixtures("loopback")
free_port = standalone_cluster.free_port


def remote_parfor_jobs(config: TrainConfig, n: int) -> int:
    """How many remote parfors train.dml runs: one per batch, two when its micro-batches differ in size."""
    jobs = 0
    for _ in range(config.epochs):
        for beg in range(0, n, config.batch_size):
            nb = min(config.batch_size, n - beg)
            pe = min(config.parallel_batches, nb)
            jobs += 1 + (nb % pe > 0)
    return jobs


def esp_count(log: Path) -> int:
    """Executions of ParFor-ESP (the remote Spark parfor) in a SystemDS -stats log."""
    counts = [int(m.group(1)) for m in re.finditer(r"ParFor-ESP\s+[\d.]+\s+(\d+)", log.read_text())]
    assert counts, f"no ParFor-ESP line in {log}"
    return counts[0]


# ---------------------------------------------------------------- a real standalone cluster


@pytest.fixture(scope="module")
def local_reference(mnist_dir, tmp_path_factory):
    """The local runner's result for CONFIG (the baseline of the Spark runs)."""
    out = tmp_path_factory.mktemp("local")
    return train(TrainConfig(**CONFIG), out, RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g"))


def assert_same_result(got: dict, want: dict) -> None:
    assert got["steps"] == want["steps"] and got["epochs_run"] == want["epochs_run"]
    assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-9)
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-9)
    assert abs(got["test_accuracy"] - want["test_accuracy"]) <= 1 / want["test_size"] + 1e-12
    assert abs(got["train_accuracy"] - want["train_accuracy"]) <= 1 / want["train_size"] + 1e-12


@pytest.mark.spark
def test_standalone_cluster_trains_on_executors_like_local(standalone, local_reference, mnist_dir, tmp_path):
    config = TrainConfig(**CONFIG)
    out = tmp_path / "spark-run"
    options = RunOptions(data_dir=str(mnist_dir), progress=False, stats=True,
                         spark=spark.SparkOptions(standalone.url, conf=QUIET, **SMALL_JVM))
    m = train(config, out, options)
    assert m["backend"] == "spark" and m["spark_master"] == standalone.url
    assert_same_result(m, local_reference)

    # the driver ran every micro-batch parfor as a remote Spark parfor (ParFor-ESP) ...
    jobs = remote_parfor_jobs(config, m["train_size"])
    assert esp_count(out / "systemds.log") == jobs
    # ... the master saw the application finish ...
    apps = [a for a in standalone.state()["completedapps"] if a["name"] == f"lars-systemml {out.name}"]
    assert len(apps) == 1 and apps[0]["state"] == "FINISHED"
    # ... and the worker's executor ran the tasks: one stage per remote parfor, each with tasks
    # (SystemDS packs a parfor's micro-batches into as many tasks as the executors have cores)
    executor_logs = list(standalone.work_dir.glob(f"{apps[0]['id']}/*/stderr"))
    assert executor_logs, "no executor log under the worker's folder"
    finished = [hit.group(1) for p in executor_logs
                for hit in re.finditer(r"Finished task \S+ in stage (\d+)\.", p.read_text())]
    assert len(set(finished)) == jobs and len(finished) >= jobs
    assert json.loads((out / "metrics.json").read_text())["backend"] == "spark"


@pytest.mark.spark
def test_local2_master_through_the_cli(local_reference, mnist_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["train", *[f"--{k.replace('_', '-')}={v}" for k, v in CONFIG.items()],
            "--data-dir", str(mnist_dir), "--no-progress", "--stats", "--output", str(out),
            "--backend", "spark", "--spark-master", "local[2]", "--driver-memory", "2g",
            "--spark-conf", "spark.ui.enabled=false"]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["backend"] == "spark" and m["spark_master"] == "local[2]"
    assert_same_result(m, local_reference)
    assert esp_count(out / "systemds.log") == remote_parfor_jobs(TrainConfig(**CONFIG), m["train_size"])
    assert "test_acc=" in capsys.readouterr().out


@pytest.mark.spark
def test_no_executors_fails_the_sweep_cell_and_records_nothing(standalone, mnist_dir, tmp_path, capsys):
    # the worker has 2 GiB: an 8 GiB executor is never granted
    config = tmp_path / "exp.toml"
    config.write_text('name = "tiny"\ntrain_size = 200\ntest_size = 100\nepochs = 1\nseeds = [1]\n'
                      'optimizers = ["sgd"]\nbatch_sizes = [100]\n')
    results = tmp_path / "results"
    started = time.time()
    code = main(["sweep", "--config", str(config), "--output", str(results), "--data-dir", str(mnist_dir),
                 "--no-progress", "--backend", "spark", "--spark-master", standalone.url,
                 "--driver-memory", "1g", "--executor-memory", "8g", "--spark-conf", "spark.ui.enabled=false",
                 "--spark-conf", "spark.starvation.timeout=2s"])
    assert code == 2
    assert time.time() - started < 120
    err = capsys.readouterr().err
    assert "granted this application no executors" in err
    assert not (results / "results.csv").exists()
    assert not list(results.glob("runs/*/metrics.json"))


@pytest.mark.spark
def test_failed_task_is_a_one_line_error(tmp_path):
    script = tmp_path / "fail.dml"
    script.write_text("G = matrix(0, rows=4, cols=1)\n"
                      "parfor (p in 1:4, mode=REMOTE_SPARK, opt=CONSTRAINED) {\n"
                      "  v = 0\n  if (p == 3) {\n    M = matrix(1, rows=2, cols=2)\n    v = as.scalar(M[p, 1])\n  }\n"
                      "  G[p, 1] = p + v\n}\nprint(sum(G))\n")
    sds_config = runtime.SystemDSConfig({"sysds.scratch": str(tmp_path / "scratch")}).write(tmp_path / "c.xml")
    options = spark.SparkOptions("local[2]", conf=QUIET, **SMALL_JVM)
    cmd, env = spark.submit_command(script, {"unused": 1}, sds_config, options, tmp_path)
    with pytest.raises(DMLError) as info:
        spark.run_submit(cmd, tmp_path, env, tmp_path / "log")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("Spark failed: a Spark task failed: Invalid values for matrix indexing")


# ---------------------------------------------------------------- errors before any JVM starts


def test_unreachable_master_is_one_line_error_and_writes_nothing(tmp_path, capsys, monkeypatch):
    started = []
    monkeypatch.setattr("lars_systemml.data.prepare", lambda *a, **k: started.append(1))
    url = f"spark://127.0.0.1:{free_port()}"  # nothing listens there
    code = main(["train", "--train-size", "100", "--output", str(tmp_path / "out"),
                 "--backend", "spark", "--spark-master", url])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot reach the Spark master {url[8:]}")
    assert not started and not (tmp_path / "out" / "metrics.json").exists()


def test_wrong_spark_version_is_named(tmp_path, monkeypatch):
    fake = tmp_path / "spark-4"
    (fake / "jars").mkdir(parents=True)
    (fake / "jars" / "spark-core_2.13-4.0.1.jar").touch()
    (fake / "bin").mkdir()
    (fake / "bin" / "spark-submit").write_text("#!/bin/sh\nexit 0\n")
    (fake / "bin" / "spark-submit").chmod(0o755)
    monkeypatch.setenv("SPARK_HOME", str(fake))
    with pytest.raises(UserError, match=r"Spark 4\.0\.1 \(Scala 2\.13\) in .*needs Spark 3\.5\.x with Scala 2\.12"):
        spark.preflight(spark.SparkOptions("local[2]"))


def test_installed_pyspark_is_accepted(monkeypatch):
    monkeypatch.delenv("SPARK_HOME", raising=False)
    assert spark.check_spark_version().startswith("3.5.")


def test_missing_java_is_one_line_error_for_spark_too(tmp_path, capsys, monkeypatch):
    runtime.java_executable.cache_clear()
    runtime.check_java.cache_clear()
    monkeypatch.setenv(runtime.JAVA_ENV, str(tmp_path / "no-java"))
    try:
        code = main(["train", "--train-size", "100", "--output", str(tmp_path / "out"),
                     "--backend", "spark", "--spark-master", "local[2]"])
    finally:
        runtime.java_executable.cache_clear()
        runtime.check_java.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "install Java 17" in err[0]


def test_yarn_needs_its_configuration_and_a_shared_scratch(tmp_path, monkeypatch):
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("YARN_CONF_DIR", raising=False)
    with pytest.raises(UserError, match="needs HADOOP_CONF_DIR"):
        spark.check_master(spark.SparkOptions("yarn", scratch="hdfs:///tmp/x"))
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))
    with pytest.raises(UserError, match="needs --spark-scratch"):
        spark.check_master(spark.SparkOptions("yarn"))
    port = free_port()
    (tmp_path / "yarn-site.xml").write_text(
        "<configuration><property><name>yarn.resourcemanager.address</name>"
        f"<value>127.0.0.1:{port}</value></property></configuration>")
    with pytest.raises(UserError, match=f"cannot reach the YARN ResourceManager 127.0.0.1:{port}"):
        spark.check_master(spark.SparkOptions("yarn", scratch="hdfs:///tmp/x"))


@pytest.mark.parametrize("argv, message", [
    (["--spark-master", "local[2]"], "--spark-master needs --backend spark"),
    (["--backend", "spark"], "--backend spark needs --spark-master"),
    (["--backend", "spark", "--spark-master", "mesos://h:5050"], "unsupported Spark master"),
    (["--backend", "spark", "--spark-master", "local[2]", "--spark-conf", "novalue"], "bad --spark-conf"),
])
def test_bad_backend_flags(argv, message, capsys, tmp_path):
    assert main(["train", "--output", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_submit_command_is_an_argument_list_with_the_jvm_flags(tmp_path):
    options = spark.SparkOptions("spark://127.0.0.1:7077", executor_memory="3g",
                                 conf={"spark.executor.extraJavaOptions": "-Dmine=1", "spark.executor.cores": "2"})
    cmd, env = spark.submit_command(Path("train.dml"), {"lr": 0.5, "include_biases": False},
                                    tmp_path / "c.xml", options, tmp_path, heap="5g", stats=True)
    assert cmd[0].endswith("bin/spark-submit")
    assert cmd[cmd.index("--master") + 1] == "spark://127.0.0.1:7077"
    assert cmd[cmd.index("--driver-memory") + 1] == "5g" and cmd[cmd.index("--executor-memory") + 1] == "3g"
    driver = cmd[cmd.index("--driver-java-options") + 1].split()
    assert {"--add-modules=jdk.incubator.vector", "--add-opens=java.base/java.lang.ref=ALL-UNNAMED"} <= set(driver)
    assert f"-Dlog4j2.configurationFile={(tmp_path / 'log4j2.properties').as_uri()}" in driver
    confs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--conf"]
    assert "spark.executor.extraJavaOptions=--add-modules=jdk.incubator.vector -Dmine=1" in confs
    assert "spark.executor.cores=2" in confs and "spark.driver.host=127.0.0.1" in confs
    jar = cmd.index(str(runtime.systemds_jar()))
    assert cmd[jar + 1:jar + 5] == ["-f", "train.dml", "-exec", "hybrid"]
    assert cmd[-3:] == ["-nvargs", "lr=0.5", "include_biases=FALSE"] and "-stats" in cmd
    assert Path(env["JAVA_HOME"], "bin", "java").exists()


# Every registered model trains on the executors as it does locally (small options, Fashion-MNIST
# for mlp/resnet, LARS so that the trust ratios of every tensor take part).
# lenet5 runs on the cluster in the tests above
MODEL_CASES = {name: dict(model=name, model_options=options, dataset="fashion-mnist")
               for name, options in SMALL_MODEL_OPTIONS.items() if name != "lenet5"}


@pytest.mark.spark
@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_every_model_trains_on_the_standalone_cluster_like_local(standalone, mnist_dir, fashion_dir,
                                                                  tmp_path, monkeypatch, name):
    monkeypatch.setenv("LARS_SYSTEMML_FASHION_DIR", str(fashion_dir))
    config = TrainConfig(**{**CONFIG, "optimizer": "lars", "lr": 1.0, "train_size": 300, "test_size": 100,
                            **MODEL_CASES[name]})
    local = train(config, tmp_path / "local", RunOptions(progress=False, heap="2g"))
    out = tmp_path / "spark-run"
    m = train(config, out, RunOptions(progress=False, stats=True,
                                      spark=spark.SparkOptions(standalone.url, conf=QUIET, **SMALL_JVM)))
    assert m["backend"] == "spark" and m["model"] == name and not m["diverged"]
    assert_same_result(m, local)
    assert esp_count(out / "systemds.log") == remote_parfor_jobs(config, m["train_size"])
    assert (out / "model" / "model.json").is_file()
