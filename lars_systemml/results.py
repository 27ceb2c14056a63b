"""The results store: one ``results.csv`` per results folder, one row per finished run.

Every command that trains (``sweep``, ``max-batch``) appends here and every report
(``plot``) reads from here, so the column handling is this one module:

- ``RESULT_COLUMNS``: the header this version writes: the run's name, id and config
  hash, every ``TrainConfig`` field, then what the run measured and where it ran.
- ``read_results``: the rows as strings (csv.DictReader), a trailing partial line from
  a kill ignored, a file of an older version read with today's columns.
- ``append_result``: one row, written with one write() and fsync'ed, so Ctrl-C or a
  crash never loses or half-writes a finished run; an older file is upgraded first.
- ``git_commit``: the code version a row records.

Older files: columns are only ever added, as ``LATER_FIELDS`` (run settings, config.py)
or ``LATER_COLUMNS`` (facts about a row, empty when not known), so an older header is
today's columns, in order, less some of those; its runs used those settings at their
defaults, which is what reading fills in.
"""
from __future__ import annotations

import csv
import io
import os
import subprocess
from pathlib import Path

from .config import LATER_FIELDS, TrainConfig
from .errors import UserError

# Columns added after v0.1 that are no run setting, empty in older rows and where they do
# not apply: a tuning run's stage ("screen", "full", "final") and 1-based trial number
# (lars_systemml/tune.py); a sweep's rows leave them empty.
LATER_COLUMNS = ("stage", "trial")
RESULT_COLUMNS = (
    ["config_name", "run_id", "config_hash"]
    + TrainConfig.field_names()
    + ["train_size_used", "test_size_used", "train_accuracy", "test_accuracy", "generalization_error",
       "train_loss", "test_loss", "diverged", "epochs_run", "steps", "wall_seconds", "train_seconds",
       "backend", "systemds_version", "git_commit", "finished_at"]
    + list(LATER_COLUMNS)
)
# The columns of results.csv as v0.1 wrote them (before the LATER_FIELDS settings existed).
V1_COLUMNS = [c for c in RESULT_COLUMNS if c not in LATER_FIELDS and c not in LATER_COLUMNS]


def git_commit() -> str:
    """The project's git commit (with '+dirty' if the tree has changes), or 'unknown'."""
    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dml", "lars_systemml"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"
    return (commit + ("+dirty" if dirty else "")) if commit else "unknown"


def _defaults_as_written(keys: list[str]) -> dict:
    """These LATER_FIELDS at their defaults and LATER_COLUMNS empty, as csv.DictWriter writes them."""
    buffer = io.StringIO()
    defaults = {k: "" if k in LATER_COLUMNS else getattr(TrainConfig(), k) for k in keys}
    csv.DictWriter(buffer, fieldnames=list(defaults), lineterminator="\n").writerow(defaults)
    return dict(zip(defaults, next(csv.reader(io.StringIO(buffer.getvalue())))))


def _older_columns(columns: list[str]) -> list[str] | None:
    """The later columns that an older version's header lacks, or None if it is not such a header.

    An older header is today's columns, in order, less some LATER_FIELDS and LATER_COLUMNS
    (v0.1 wrote none of them); its runs used those settings at their defaults.
    """
    missing = [c for c in RESULT_COLUMNS if c not in columns]
    if not missing or not set(missing) <= set(LATER_FIELDS) | set(LATER_COLUMNS):
        return None
    return missing if [c for c in RESULT_COLUMNS if c in columns] == columns else None


def read_results(path: Path) -> list[dict]:
    """Rows of results.csv (values as strings); a trailing partial line (from a kill mid-write) is ignored.

    A file written by an older version (lacking some LATER_FIELDS or LATER_COLUMNS, v0.1
    all of them) is read with those settings at their defaults, which is what its runs
    used, and those columns empty.
    A missing file has no rows.
    """
    if not path.is_file():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    columns = reader.fieldnames or []
    missing = _older_columns(columns)
    if rows and missing:
        defaults = _defaults_as_written(missing)
        rows = [{k: {**row, **defaults}[k] for k in RESULT_COLUMNS} for row in rows]
    elif rows and columns != RESULT_COLUMNS:
        raise UserError(f"{path} has other columns than this version writes: use a new --output folder")
    return rows


def _upgrade(path: Path) -> None:
    """Rewrite an older version's results.csv with today's columns (atomically), so rows can be appended."""
    with open(path) as f:
        header = next(csv.reader(f), [])
    if not _older_columns(header):
        return
    rows = read_results(path)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(path.name + ".upgrade")
    with open(tmp, "w") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def append_result(path: Path, row: dict) -> None:
    """Append one row (header first if the file is new), durably; columns not in ``row`` stay empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    new = not path.is_file() or path.stat().st_size == 0
    if new:
        writer.writeheader()
    else:
        if not path.read_text().endswith("\n"):  # drop a partial line left by a kill
            text = path.read_text()
            path.write_text(text[: text.rfind("\n") + 1])
        _upgrade(path)
    writer.writerow({k: row.get(k, "") for k in RESULT_COLUMNS})
    with open(path, "a") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())
