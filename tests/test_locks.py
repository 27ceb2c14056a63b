"""Owner records and lock files (lars_systemml/locks.py): exclusive, stale ones taken over,
live and foreign ones respected, and one winner when many processes break a stale lock."""
import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from lars_systemml import locks


def dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_an_owner_record_names_a_live_process_and_a_dead_one():
    mine = locks.owner_record()
    assert mine["pid"] == os.getpid() and mine["host"] == locks.host() and not locks.is_dead(mine)
    assert locks.is_dead({**mine, "pid": dead_pid()})
    if mine["start_tick"] is not None:  # Linux: a reused pid is not the old owner
        assert locks.is_dead({**mine, "start_tick": str(int(mine["start_tick"]) + 1)})
    assert not locks.is_dead({**mine, "pid": dead_pid(), "host": "some-other-machine"})  # cannot tell: alive


def test_a_lock_is_exclusive_and_says_whose_it_is(tmp_path):
    path = tmp_path / "locks" / "run.lock"
    first, second = locks.FileLock(path), locks.FileLock(path)
    assert first.acquire() and first.held
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not second.acquire() and not second.held
    assert second.holder["pid"] == os.getpid() and "since" in locks.describe(second.holder)
    second.release()  # not its lock: nothing happens
    assert path.exists()
    with first:
        pass
    assert not path.exists() and second.acquire()


def test_a_stale_lock_is_taken_over_and_a_foreign_one_is_not(tmp_path):
    path = tmp_path / "run.lock"
    path.write_text(json.dumps({"pid": dead_pid(), "host": locks.host(), "started": "then"}))
    lock = locks.FileLock(path)
    assert lock.acquire() and json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()
    elsewhere = {"pid": 1234, "host": "another-machine", "started": "now"}
    path.write_text(json.dumps(elsewhere))
    lock = locks.FileLock(path)
    assert not lock.acquire() and lock.holder == elsewhere and json.loads(path.read_text()) == elsewhere


def test_an_unreadable_lock_is_stale_only_once_it_is_old(tmp_path):
    path = tmp_path / "run.lock"
    path.write_text("")  # its creator died between creating and writing it, or is writing now
    assert not locks.FileLock(path).acquire()
    old = time.time() - 2 * locks.UNREADABLE_GRACE_S
    os.utime(path, (old, old))
    assert locks.FileLock(path).acquire()


def _contend(path, barrier, log):
    barrier.wait()
    lock = locks.FileLock(path)
    if lock.acquire():
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # hold it while the others try
        lock.release()


def test_many_processes_breaking_one_stale_lock_leave_one_owner(tmp_path):
    path, log = tmp_path / "run.lock", tmp_path / "winners"
    path.write_text(json.dumps({"pid": dead_pid(), "host": locks.host(), "started": "then"}))
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(6)
    procs = [ctx.Process(target=_contend, args=(path, barrier, log)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 6
    assert len(log.read_text().split()) == 1
    assert not path.exists() and not list(tmp_path.glob("*.stale"))


def test_folders_of_dead_owners_are_removed(tmp_path):
    dead, live, unmarked = tmp_path / "x-dead", tmp_path / "x-live", tmp_path / "x-unmarked"
    for folder in (dead, live, unmarked):
        (folder / "scratch").mkdir(parents=True)
    (dead / locks.OWNER_FILE).write_text(json.dumps({"pid": dead_pid(), "host": locks.host()}))
    locks.write_owner(live)
    assert locks.clean_stale_dirs(tmp_path, "x-*") == [dead]
    assert not dead.exists() and live.exists() and unmarked.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="zombies are read from /proc")
def test_a_zombie_is_dead():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 10
    while locks._stat_fields(proc.pid)[0] != "Z" and time.time() < deadline:
        time.sleep(0.02)
    record = {"pid": proc.pid, "host": locks.host(), "start_tick": locks._start_tick(proc.pid)}
    assert locks.is_dead(record)
    proc.wait()
