"""The output folder of one training run, replaced as a whole only when the new run is complete.

A run writes its result files (``RESULT_ENTRIES``: metrics.json, steps.csv, systemds.log,
model/) into a hidden folder beside the output, ``.<name>.partial-<host>-<pid>``. Only
when all of them are written does ``commit`` swap it in: the old output folder is renamed
aside (``.<name>.old-<host>-<pid>``), the new one renamed to the output's name, and the old
one deleted. Until then the output folder keeps the earlier run's files untouched, so a
failed, interrupted or killed run never destroys an earlier result nor leaves a mix of old
and new files.

The checkpoints of an unfinished run are no result: dml/train.dml writes them to
``<output>/checkpoint/`` while it runs, where ``--resume`` and a resumed sweep cell find
them after an interruption. They go with the old folder at the swap.

A run that failed in SystemDS keeps its log as ``<output>/systemds-failed.log`` (the error
message names it); the next finished run removes it.

Left-overs of a killed run (a partial folder; an old folder renamed aside just before the
kill) are recognised by their process id on the next start in the same place: a partial
folder is deleted, an old folder is renamed back if the output is missing, else deleted.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
from pathlib import Path
from typing import Iterator

from .errors import UserError
from .fsutil import (PROBE_PREFIX, FileSystemError, fsync_folder, pid_alive, prepare_output_folder, probe,
                     translate_os_errors)

RESULT_ENTRIES = ("metrics.json", "steps.csv", "systemds.log", "model")
FAILED_LOG = "systemds-failed.log"
# What else a run folder may hold: the checkpoints of an unfinished run, the log of a failed
# one, `evaluate`'s default output, and the note of a run a sweep adopted from elsewhere.
# All of them describe the folder's old run and are replaced with it.
KNOWN_ENTRIES = RESULT_ENTRIES + ("checkpoint", FAILED_LOG, "evaluation.json", "reused_from.txt")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done (the two renames of a swap belong together)."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError, OSError):  # not the main thread, or no pthreads
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class RunFolder:
    """``output`` (a run's folder) and the hidden folder its next version is written to."""

    def __init__(self, output: str | os.PathLike):
        self.output = Path(output)
        self.host = socket.gethostname()
        tag = f"{self.host}-{os.getpid()}"
        self.partial = self.output.with_name(f".{self.output.name}.partial-{tag}") if self.output.name else None
        self.aside = self.output.with_name(f".{self.output.name}.old-{tag}") if self.output.name else None
        self.existed = False

    def prepare(self) -> Path:
        """Check the output, tidy a killed run's left-overs, create the partial folder (proving the
        place writable); return the partial folder. Raises a one-line UserError before any work."""
        out = self.output
        resolved = out.resolve()
        cwd = Path.cwd().resolve()
        if not out.name or resolved == cwd or resolved in cwd.parents:
            raise UserError(f"output folder {out} is the working folder or holds it: name a folder for the "
                            f"run, e.g. runs/my-run")
        if out.exists() and not out.is_dir():
            raise FileSystemError(f"output folder {out} is an existing file, not a folder: choose another "
                                  f"path, or move that file away")
        self._recover()
        if out.is_dir():
            foreign = sorted(p.name for p in out.iterdir()
                             if p.name not in KNOWN_ENTRIES and not p.name.startswith(PROBE_PREFIX))
            if foreign:
                raise UserError(f"output folder {out} holds files that are not a training run's "
                                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): a new run "
                                f"replaces the whole folder, so choose a new or empty folder, or move them away")
        prepare_output_folder(out.parent, f"the folder of {out.name}")
        self.existed = out.is_dir()
        with translate_os_errors(out):
            if self.existed:
                probe(out)  # checkpoints are written there while the run goes on
            if self.partial.exists():
                shutil.rmtree(self.partial)
            self.partial.mkdir()
        return self.partial

    def _recover(self) -> None:
        """Delete the partial folders of killed runs here (this host), and restore or delete an old
        folder that such a run had renamed aside."""
        parent = self.output.parent
        if not parent.is_dir():
            return
        for kind in ("old", "partial"):
            for path in sorted(parent.glob(f".{glob_escape(self.output.name)}.{kind}-*")):
                host, _, pid = path.name.rsplit(f".{kind}-", 1)[1].rpartition("-")
                if host != self.host or not pid.isdigit() or pid_alive(int(pid)):
                    continue
                if kind == "old" and not self.output.exists():
                    path.rename(self.output)  # killed between the two renames of a swap
                else:
                    shutil.rmtree(path, ignore_errors=True)

    def commit(self) -> None:
        """Swap the partial folder in as the output; the old output (with the checkpoints) is deleted."""
        with translate_os_errors(self.output), signals_deferred():
            fsync_folder(self.partial)
            if self.output.exists():
                os.rename(self.output, self.aside)
                try:
                    os.rename(self.partial, self.output)
                except OSError:
                    os.rename(self.aside, self.output)
                    raise
                fsync_folder(self.output.parent)
                shutil.rmtree(self.aside, ignore_errors=True)
            else:
                os.rename(self.partial, self.output)
                fsync_folder(self.output.parent)

    def keep_failed_log(self, log: Path) -> Path | None:
        """Move a failed run's log to ``output/systemds-failed.log``; its new path (None if there is none)."""
        if not log.is_file():
            return None
        with contextlib.suppress(OSError):
            self.output.mkdir(parents=True, exist_ok=True)
            target = self.output / FAILED_LOG
            os.replace(log, target)
            return target
        return None

    def discard(self) -> None:
        """Remove the partial folder; the output keeps the earlier run (and resumable checkpoints)."""
        if self.partial is not None:
            shutil.rmtree(self.partial, ignore_errors=True)


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters taken literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
