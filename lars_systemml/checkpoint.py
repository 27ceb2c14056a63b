"""Checkpoints of a training run, for ``train --resume`` and for sweeps that resume a cell.

Layout of ``<run folder>/checkpoint/``::

    run.json         what the run is (config identity, data, model): a resume must match it
    epoch-<e>/       written by dml/train.dml after epoch e: theta, state, s1, s2, counters,
                     history, trace (SystemDS binary)
    latest.json      {"epoch": e, "folder": "epoch-<e>", "seconds": {...}}: the newest
                     complete epoch folder, written (write, fsync, rename) only after
                     train.dml reported that folder finished

A kill at any moment leaves ``latest.json`` naming a complete folder (or none yet); a
folder it does not name is an unfinished write and is ignored and removed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .errors import UserError
from .fsutil import write_json_atomically

LATEST = "latest.json"
RUN = "run.json"


class Checkpoints:
    """The checkpoint folder of one run folder."""

    def __init__(self, run_folder: Path):
        # absolute: SystemDS writes the checkpoints with dml/ as its working directory
        self.folder = Path(run_folder).resolve() / "checkpoint"

    def latest(self) -> dict | None:
        """The newest complete checkpoint as {"epoch", "folder" (absolute Path), "seconds"}, or None."""
        path = self.folder / LATEST
        if not path.is_file():
            return None
        info = json.loads(path.read_text())
        info["folder"] = self.folder / info["folder"]
        info["seconds"] = {int(k): tuple(v) for k, v in info.get("seconds", {}).items()}
        return info

    def check_resumable(self, run: dict, strict: bool = True) -> dict | None:
        """The latest checkpoint if it belongs to ``run`` (same identity), else None; ``strict``:
        a UserError for a checkpoint of another run (not strict: it is ignored, and start() removes it)."""
        latest = self.latest()
        if latest is None:
            return None
        saved = json.loads((self.folder / RUN).read_text()) if (self.folder / RUN).is_file() else {}
        if saved != run and not strict:
            return None
        if saved != run:
            differ = sorted(k for k in set(saved) | set(run) if saved.get(k) != run.get(k))
            raise UserError(f"the checkpoint in {self.folder} is of another run (differs in "
                            f"{', '.join(differ)}): rerun the same command, or drop --resume to start over")
        return latest

    def start(self, run: dict, keep: bool) -> None:
        """Prepare the folder for a run: keep a matching checkpoint to resume from, else start empty."""
        if not keep and self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.folder / RUN, run)

    def commit(self, epoch: int, folder: str, seconds: dict[int, tuple[float, float]]) -> None:
        """Record epoch ``epoch``'s finished folder as the latest and remove the older ones."""
        name = Path(folder).name
        write_json_atomically(self.folder / LATEST, {"epoch": epoch, "folder": name,
                                                     "seconds": {str(k): v for k, v in seconds.items()}})
        for old in self.folder.glob("epoch-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def clear(self) -> None:
        """Remove the checkpoints once the run has finished: its model is saved in model/."""
        shutil.rmtree(self.folder, ignore_errors=True)
