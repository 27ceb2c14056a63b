"""Who owns what: owner records of processes, lock files built on them, and stale folders.

An owner record names a process: its pid, host, start time, and (Linux) the kernel's
start tick of the pid, so that a reused pid is not taken for the old owner. A record
on this host whose process is gone is *dead*; one on another host can not be checked
and counts as alive.

``FileLock``: an exclusive lock file, created atomically (``O_CREAT | O_EXCL``, which
also holds on NFS v3+), that holds its owner's record. A lock whose owner is dead on
this host is stale and taken over; a live one, or one held on another machine, is
someone else's. This is how several ``sweep`` or ``tune`` processes, on one machine or
on several that share the results folder, split the runs between them (one lock per
run in ``<output>/locks/``).

``clean_stale_dirs``: removes folders (e.g. a killed run's temporary folder) whose
owner record names a dead process of this host.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

OWNER_FILE = "owner.json"
# A lock file without a readable record (its creator died between creating and writing
# it, a matter of microseconds) is stale once it is this old.
UNREADABLE_GRACE_S = 60.0


def host() -> str:
    return socket.gethostname()


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (field 3 on: state, ppid, ...), None without it."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _start_tick(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (stat field 22), None without /proc."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def owner_record() -> dict:
    """This process's owner record."""
    return {"pid": os.getpid(), "host": host(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "start_tick": _start_tick(os.getpid())}


def is_dead(record: dict) -> bool:
    """True if the record's process is known to be gone: it is of this host, and its pid
    does not exist, is a zombie, or now belongs to a process started at another time."""
    if record.get("host") != host():
        return False  # another machine's process: cannot tell, so it is alive
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, another user's
    fields = _stat_fields(pid)
    if fields is None:
        return False  # no /proc (not Linux): the pid exists, that is all we know
    if fields[0] in ("Z", "X"):
        return True
    tick = record.get("start_tick")
    return tick is not None and len(fields) > 19 and fields[19] != tick


def describe(record: dict | None) -> str:
    """'pid 123 on host since 2026-12-02T13:00:00+00:00', for messages."""
    if not record:
        return "an unknown process"
    return f"pid {record.get('pid')} on {record.get('host')} since {record.get('started')}"


def _parse(raw: bytes) -> dict | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "pid" in record and "host" in record else None


class FileLock:
    """An exclusive lock file holding its owner's record (see the module docstring).

    ``acquire()`` returns True when this process holds the lock, else False with
    ``holder`` set to the other owner's record. Use as ``with lock:`` after a successful
    acquire; ``release()`` removes the file only while it is still this process's.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.holder: dict | None = None
        self._mine: bytes | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (acquired and not released)."""
        return self._mine is not None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a lock released or broken meanwhile: try again
            mine = json.dumps(owner_record()).encode()
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                seen = self._read()
                if seen is None:
                    continue  # released between our open and read
                record = _parse(seen)
                if record is not None and not is_dead(record):
                    self.holder = record
                    return False
                if record is None and not self._old():
                    self.holder = None  # being written right now, or garbled but recent
                    return False
                self._break(seen)
                continue
            try:
                os.write(fd, mine)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._mine = mine
            self.holder = None
            return True
        self.holder = _parse(self._read() or b"")
        return False

    def release(self) -> None:
        if self._mine is not None and self._read() == self._mine:
            self.path.unlink(missing_ok=True)
        self._mine = None

    def __enter__(self) -> "FileLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def _old(self) -> bool:
        try:
            return time.time() - self.path.stat().st_mtime > UNREADABLE_GRACE_S
        except FileNotFoundError:
            return True

    def _break(self, seen: bytes) -> None:
        """Remove the stale lock whose content is ``seen``, and only that one.

        It is moved aside first (one rename wins among processes that break it at once);
        if what was moved is not what was judged stale, another process had taken the
        lock over in between: its lock is put back (a hard link does not overwrite).
        """
        aside = self.path.with_name(f"{self.path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if aside.read_bytes() != seen:
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass  # a third process locked it meanwhile: it holds it now
                except OSError:  # a file system without hard links
                    if not self.path.exists():
                        os.rename(aside, self.path)
        finally:
            aside.unlink(missing_ok=True)


def write_owner(folder: Path) -> None:
    """Mark ``folder`` as this process's (see clean_stale_dirs)."""
    (Path(folder) / OWNER_FILE).write_text(json.dumps(owner_record()))


def clean_stale_dirs(root: Path, pattern: str) -> list[Path]:
    """Remove the folders ``root/pattern`` whose owner.json names a dead process of this host.

    Folders without an owner record, of another user, or of a live process stay.
    Returns the folders removed.
    """
    removed = []
    try:
        candidates = sorted(Path(root).glob(pattern))
    except OSError:
        return removed
    for folder in candidates:
        try:
            if not folder.is_dir() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue
            record = _parse((folder / OWNER_FILE).read_bytes())
        except OSError:
            continue
        if record is not None and is_dead(record):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
