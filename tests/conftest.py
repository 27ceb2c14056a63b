"""Shared fixtures: the MNIST copy the tests use, an isolated cache, and a DML runner."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lars_systemml import runtime
from lars_systemml import standalone as standalone_cluster

REPO = Path(__file__).resolve().parent.parent
TESTS_DML = Path(__file__).resolve().parent / "dml"
# Every registered model's options for small, fast test runs (--model-option strings).
SMALL_MODEL_OPTIONS = {"lenet5": "", "mlp": "width=16,depth=2", "resnet": "channels=2,blocks=2"}
# Spark settings of the standalone-cluster tests: small JVMs, no web UI
SMALL_JVM = {"driver_memory": "1g", "executor_memory": "1g"}
QUIET = {"spark.ui.enabled": "false"}


def _data_dir(env: str, shared_name: str, label: str) -> Path:
    """$env if set to a folder with the IDX files, else ../shared/data/<shared_name>; skip if neither."""
    for c in [os.environ.get(env), REPO.parent / "shared" / "data" / shared_name]:
        if c and (Path(c) / "train-labels-idx1-ubyte.gz").is_file():
            return Path(c)
    pytest.skip(f"no {label} copy: set {env} to a folder with the IDX files")


def _mnist_dir() -> Path:
    return _data_dir("LARS_SYSTEMML_DATA_DIR", "mnist", "MNIST")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return _mnist_dir()


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    return _data_dir("LARS_SYSTEMML_FASHION_DIR", "fashion-mnist", "Fashion-MNIST")


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Prepared matrices go to a per-session cache, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("LARS_SYSTEMML_CACHE")
    os.environ["LARS_SYSTEMML_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("LARS_SYSTEMML_CACHE", None)
    else:
        os.environ["LARS_SYSTEMML_CACHE"] = old


def cmdline(pid: int) -> str:
    """The process's command line ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_training_jvm(cmdline: str) -> bool:
    """Whether a process command line is a SystemDS run of the driver's own script: not the
    class-data-sharing warm-up (cds.py), which runs DMLScript too, once per cache."""
    return "org.apache.sysds.api.DMLScript" in cmdline and "cds_warmup.dml" not in cmdline


def run_test_dml(script: str, **nvargs) -> list[str]:
    """Run tests/dml/<script> in the embedded SystemDS; returns its output lines."""
    cmd = runtime.local_command(TESTS_DML / script, nvargs, heap="2g")
    return runtime.run_dml(cmd, cwd=runtime.dml_dir())


def write_csv(path: Path, matrix) -> str:
    np.savetxt(path, np.atleast_2d(np.asarray(matrix, dtype=float)), delimiter=",", fmt="%.17g")
    return str(path)


@pytest.fixture
def loopback(monkeypatch):
    """Spark binds to 127.0.0.1 only (the tests never reach another address)."""
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """A Spark standalone master and one worker (2 cores, 2 GiB) on 127.0.0.1, free ports,
    temporary folders (lars_systemml/standalone.py); stopped at the end even when a test fails."""
    try:
        with standalone_cluster.running(tmp_path_factory.mktemp("standalone"), workers=1, cores=2,
                                        memory="2g") as cluster:
            yield cluster
    except standalone_cluster.ClusterError as exc:
        pytest.fail(str(exc))
