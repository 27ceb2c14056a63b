"""File-system safety: output folders probed before work starts, atomic writes, one-line errors.

- ``prepare_output_folder``: create a folder and prove it writable (write, fsync and
  remove a probe file), so a read-only, full or mistyped output fails before any training.
- ``write_text_atomically`` / ``write_json_atomically`` / ``atomic_path``: a file is
  written under a temporary name beside it, fsync'ed and renamed over the target
  (``os.replace``), so a reader sees the old file or the new one, never half of one, and
  a failed write (a full disk) leaves the old file as it was.
- ``FileSystemError``: an OSError as a one-line error (a ``runtime.FatalError``) naming the path and the fix
  (``describe``); ``translate_os_errors`` turns the OSErrors of a block into it.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from .runtime import FatalError

PROBE_BYTES = 4096  # one file-system block: a full disk refuses it
PROBE_PREFIX = ".lars-systemml-probe-"


class FileSystemError(FatalError):
    """An output that cannot be written: not a folder, read-only, no permission, disk full.

    Every later run into the same place would fail the same way, so it is a FatalError:
    ``sweep`` and ``tune`` stop at the first run that raises it.
    """


def describe(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """A one-line message for ``exc``: what went wrong with which path, and the fix."""
    exc = first_cause(exc)
    where = str(path if path is not None else (exc.filename if exc.filename is not None else "the output"))
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device holding {where} ({exc.strerror}): free some space or "
                f"choose an output folder on another disk")
    if code == errno.EROFS:
        return f"{where} is on a read-only file system: choose an output folder on a writable disk"
    if code in (errno.EACCES, errno.EPERM):
        return (f"permission denied for {where}: choose an output folder you can write to, or fix "
                f"its permissions")
    if code in (errno.EEXIST, errno.ENOTDIR):
        return (f"{where} is (or lies under) an existing file, not a folder: choose another output "
                f"folder, or move that file away")
    if code == errno.EISDIR:
        return f"{where} is a folder: name a file there instead"
    if code == errno.ENOENT:
        return f"{where} does not exist: check the path"
    if code == errno.ENAMETOOLONG:
        return f"{where}: the name is too long for the file system: choose a shorter path"
    return f"file-system error on {where} ({exc.strerror or exc}): check that path and its disk"


def first_cause(exc: OSError) -> OSError:
    """The OSError behind ``exc``: shutil.copytree gathers its files' errors into one
    shutil.Error (no errno, a list of (source, target, message)); the first of them."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        _source, target, message = exc.args[0][0]
        found = re.match(r"\[Errno (\d+)\] ([^:]+)", str(message))
        if found:
            return OSError(int(found.group(1)), found.group(2), target)
    return exc


def error_from(exc: OSError, path: str | os.PathLike | None = None) -> FileSystemError:
    return FileSystemError(describe(exc, path))


@contextlib.contextmanager
def translate_os_errors(path: str | os.PathLike | None = None) -> Iterator[None]:
    """Raise the OSErrors of the block as FileSystemError (naming ``path`` if the error names none)."""
    try:
        yield
    except FileSystemError:
        raise
    except OSError as exc:
        cause = first_cause(exc)
        raise error_from(cause, cause.filename if cause.filename is not None else path) from exc


def prepare_output_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` (and its parents) and prove it writable; return it as a Path.

    Writes ``PROBE_BYTES`` to a probe file, fsyncs and removes it: an existing file in the
    way, a read-only file system, missing permissions or a full disk raise FileSystemError
    here, before any work, instead of after hours of training.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileSystemError(f"{what} {folder} is an existing file, not a folder: choose another "
                              f"path, or move that file away")
    with translate_os_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
        probe(folder)
    return folder


def probe(folder: Path) -> None:
    """Write, fsync and remove a probe file in ``folder`` (OSError naming ``folder`` if it cannot
    be written: the probe file is ours, the folder is what the user chose and can fix)."""
    path = folder / f"{PROBE_PREFIX}{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder)) from exc
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path`` for its next version, with the same suffix (file formats
    are often told by it), unique to this process."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, fsync it and rename it
    over ``path``. When the block fails, the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_folder(path.parent)


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` by write, fsync and rename: never a half-written file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    return path


def write_json_atomically(path: str | os.PathLike, value) -> Path:
    """Write ``value`` as indented JSON to ``path`` atomically (write_text_atomically)."""
    return write_text_atomically(path, json.dumps(value, indent=2) + "\n")


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
