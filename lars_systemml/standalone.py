"""A throw-away Spark standalone cluster on 127.0.0.1: one master and N workers started with
pyspark's ``spark-class`` (pyspark ships no sbin/start-*.sh), free ports, private folders.

Used by the Spark tests (tests/test_spark.py) and the scaling benchmark
(benchmarks/scaling.py). Never binds anything but the loopback address.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import runtime, spark

HOST = "127.0.0.1"
START_TIMEOUT_S = 90


class ClusterError(RuntimeError):
    """The cluster did not come up; the message ends with the tails of the daemons' logs."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A running cluster: ``url`` (spark://...), the master's web UI ``web`` (http://...),
    ``work_dir`` where the workers keep their executors' folders (``<app-id>/<n>/stderr``)."""

    url: str
    web: str
    work_dir: Path
    root: Path
    workers: int

    def state(self) -> dict:
        """The master's /json/ status (status, aliveworkers, activeapps, completedapps, ...)."""
        with urllib.request.urlopen(f"{self.web}/json/", timeout=5) as r:
            return json.load(r)


def _daemon(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    cmd = [str(spark.spark_home() / "bin" / "spark-class"), *args]
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the daemon and its executors
            proc.wait()


@contextlib.contextmanager
def running(root: Path, workers: int = 1, cores: int = 2, memory: str = "2g",
            executor_log: bool = True) -> Iterator[Cluster]:
    """Start a master and ``workers`` workers (each ``cores`` cores, ``memory`` for executors)
    with their logs and folders under ``root``; stop them (and their executors) on exit,
    also after an error. ``executor_log``: executors log each finished task at INFO (the
    evidence that they ran it). Raises ClusterError if the cluster is not up in 90 s."""
    root = Path(root)
    conf_dir = root / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    extra = ("logger.executor.name = org.apache.spark.executor.Executor\nlogger.executor.level = info\n"
             if executor_log else "")
    (conf_dir / "log4j2.properties").write_text(spark.LOG4J2 + extra)
    env = {**os.environ, "SPARK_LOCAL_IP": HOST, "SPARK_CONF_DIR": str(conf_dir),
           "SPARK_LOG_DIR": str(root), "SPARK_HOME": str(spark.spark_home()),
           "JAVA_HOME": str(Path(os.path.realpath(runtime.java_executable())).parent.parent)}
    port, web = free_port(), free_port()
    cluster = Cluster(f"spark://{HOST}:{port}", f"http://{HOST}:{web}", root / "work", root, workers)
    logs = ["master.log"] + [f"worker{i}.log" for i in range(1, workers + 1)]
    procs = []
    try:
        procs.append(_daemon(["org.apache.spark.deploy.master.Master", "--host", HOST,
                              "--port", str(port), "--webui-port", str(web)], root / logs[0], env))
        for log in logs[1:]:
            procs.append(_daemon(["org.apache.spark.deploy.worker.Worker", "--host", HOST,
                                  "--port", str(free_port()), "--webui-port", str(free_port()),
                                  "--cores", str(cores), "--memory", memory,
                                  "--work-dir", str(cluster.work_dir), cluster.url], root / log, env))
        deadline = time.time() + START_TIMEOUT_S
        while True:
            try:
                state = cluster.state()
                if state["status"] == "ALIVE" and state["aliveworkers"] >= workers:
                    break
            except OSError:
                pass
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                tails = "\n".join((root / f).read_text()[-2000:] for f in logs if (root / f).is_file())
                raise ClusterError(f"the standalone cluster did not come up:\n{tails}")
            time.sleep(1)
        yield cluster
    finally:
        for proc in reversed(procs):
            _stop(proc)
