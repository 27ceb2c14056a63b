"""The results store: one ``results.csv`` per results folder, one row per finished run.

Every command that trains (``sweep``, ``max-batch``) appends here and every report
(``plot``) reads from here, so the column handling is this one module:

- ``RESULT_COLUMNS``: the header this version writes: the run's name, id and config
  hash, every ``TrainConfig`` field, then what the run measured and where it ran.
- ``read_results``: the rows as strings (csv.DictReader), each checked (field count, and
  the typed columns of ``COLUMN_TYPES`` parse): a garbled row or a foreign header is a
  one-line UserError naming the file and line; a trailing partial line (a crash
  mid-append: the file does not end in a newline) is dropped with a one-line warning; a
  file of an older version is read with today's columns.
- ``append_result``: one row, written with one write() and fsync'ed, so Ctrl-C or a
  crash never loses or half-writes a finished run, and a failed write (a full disk) is
  undone so the file keeps its earlier rows intact; an older file is upgraded first
  (atomically).
- ``git_commit``: the code version a row records.

Older files: columns are only ever added, as ``LATER_FIELDS`` (run settings, config.py),
``LATER_COLUMNS`` (a row's role in a tuning protocol) or ``LATER_FACTS`` (facts about a
row's run), the last two empty when not known, so an older header is today's columns, in
order, less some of those; its runs used those settings at their defaults, which is what
reading fills in.
"""
from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from .config import LATER_FIELDS, TrainConfig
from .errors import UserError
from .fsutil import atomic_path

# Columns added after v0.1 that are no run setting, empty in older rows and where they do
# not apply: a tuning run's stage ("screen", "full", "final") and 1-based trial number
# (lars_systemml/tune.py); a sweep's rows leave them empty.
LATER_COLUMNS = ("stage", "trial")
# Facts about a row's run added later, empty in older rows: what the data files were by
# content (data.py: a known data set's name or "custom", and "file:md5 ..." of their bytes);
# on Spark, the mode and paramserv's worker count (a paramserv run's batches differ from a
# local run's: docs/spark.md).
LATER_FACTS = ("data_identity", "data_checksums", "spark_mode", "workers")
RESULT_COLUMNS = (
    ["config_name", "run_id", "config_hash"]
    + TrainConfig.field_names()
    + ["train_size_used", "test_size_used", "train_accuracy", "test_accuracy", "generalization_error",
       "train_loss", "test_loss", "diverged", "epochs_run", "steps", "wall_seconds", "train_seconds",
       "backend", "systemds_version", "git_commit", "finished_at"]
    + list(LATER_COLUMNS) + list(LATER_FACTS)
)


def _column_types() -> dict[str, tuple[str, bool]]:
    """The typed columns as {name: (kind, may be empty)}, kind "int", "float" or "bool";
    the others (names, hashes, versions, times) are free text."""
    types = {}
    for f in fields(TrainConfig):
        kind = str(f.type).replace(" ", "")
        optional = kind.endswith("|None")
        kind = kind.removesuffix("|None")
        if kind in ("int", "float", "bool"):
            types[f.name] = (kind, optional)
    types.update({c: ("int", False) for c in ("train_size_used", "test_size_used", "epochs_run", "steps")})
    types.update({c: ("float", False) for c in ("train_accuracy", "test_accuracy", "generalization_error")})
    # a diverged run has no finite loss (written empty); times are absent from hand-made rows
    types.update({c: ("float", True) for c in ("train_loss", "test_loss", "wall_seconds", "train_seconds")})
    types.update({"diverged": ("bool", False), "trial": ("int", True)})
    return types


COLUMN_TYPES = _column_types()
# The columns of results.csv as v0.1 wrote them (before the LATER_FIELDS settings existed).
V1_COLUMNS = [c for c in RESULT_COLUMNS if c not in LATER_FIELDS + LATER_COLUMNS + LATER_FACTS]


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
    """These LATER_FIELDS at their defaults and LATER_COLUMNS and LATER_FACTS empty, as csv.DictWriter
    writes them."""
    buffer = io.StringIO()
    defaults = {k: "" if k in LATER_COLUMNS + LATER_FACTS else getattr(TrainConfig(), k) for k in keys}
    csv.DictWriter(buffer, fieldnames=list(defaults), lineterminator="\n").writerow(defaults)
    return dict(zip(defaults, next(csv.reader(io.StringIO(buffer.getvalue())))))


def _older_columns(columns: list[str]) -> list[str] | None:
    """The later columns that an older version's header lacks, or None if it is not such a header.

    An older header is today's columns, in order, less some LATER_FIELDS, LATER_COLUMNS and LATER_FACTS
    (v0.1 wrote none of them); its runs used those settings at their defaults.
    """
    missing = [c for c in RESULT_COLUMNS if c not in columns]
    if not missing or not set(missing) <= set(LATER_FIELDS + LATER_COLUMNS + LATER_FACTS):
        return None
    return missing if [c for c in RESULT_COLUMNS if c in columns] == columns else None


_warned: set[tuple[str, int]] = set()


def _warn_once(path: Path, line: int) -> None:
    """The partial-line warning, once per file and line in a process (the file is read often)."""
    if (str(path), line) not in _warned:
        _warned.add((str(path), line))
        print(f"warning: {path}, line {line}: dropped an incomplete last row (a write cut short by a "
              f"crash or kill; that run is not counted and will run again)", file=sys.stderr)


def _complete_text(path: Path) -> str:
    """The file's text up to its last newline; a partial last line is dropped with a warning."""
    text = path.read_text()
    if text and not text.endswith("\n"):
        kept = text[: text.rfind("\n") + 1]
        _warn_once(path, kept.count("\n") + 1)
        text = kept
    return text


def _check_value(value: str, kind: str, optional: bool) -> str | None:
    """What is wrong with ``value`` as a ``kind`` column, or None if it parses."""
    if value == "":
        return None if optional else f"is empty, expected {'an' if kind == 'int' else 'a'} {kind}"
    if kind == "bool":
        return None if value.lower() in ("true", "false") else f"= {value!r} is not True or False"
    if kind == "int":
        return None if re.fullmatch(r"[+-]?\d+", value) else f"= {value!r} is not an integer"
    try:
        float(value)
    except ValueError:
        return f"= {value!r} is not a number"
    return None


def check_row(row: dict, path: Path, line: int, ncolumns: int, complete: bool = False) -> None:
    """A one-line UserError naming the file and line if ``row`` (csv.DictReader's) is garbled;
    ``complete``: also if a typed column that every finished run fills is empty."""
    fix = "fix or delete that line (each line is one finished run; a deleted run runs again)"
    if None in row or any(v is None for v in row.values()):
        count = ncolumns + len(row.get(None) or []) - sum(v is None for k, v in row.items() if k is not None)
        raise UserError(f"{path}, line {line}: {count} fields, the header has {ncolumns}: {fix}")
    for column, (kind, optional) in COLUMN_TYPES.items():
        if column in row:
            problem = _check_value(row[column], kind, optional or not complete)
            if problem:
                raise UserError(f"{path}, line {line}: {column} {problem}: {fix}")


def _header_problem(columns: list[str]) -> str:
    unknown = [c for c in columns if c not in RESULT_COLUMNS]
    missing = [c for c in RESULT_COLUMNS if c not in columns]
    if not columns:
        return "no header"
    if unknown:
        return f"unknown column {unknown[0]!r}"
    if missing:
        return f"no column {missing[0]!r}"
    return "the columns in another order"


def read_results(path: Path, complete: bool = False) -> list[dict]:
    """Rows of results.csv (values as strings), each checked; a trailing partial line (from a kill
    mid-write) is dropped with a warning.

    A garbled row (a field count other than the header's, an int/float/bool column that does
    not parse) or a header this version does not read is a one-line UserError naming the
    file and line. ``complete`` (for reports, which compute with every value): a typed
    column that every finished run fills (COLUMN_TYPES, not optional) may not be empty.
    A file written by an older version (lacking some LATER_FIELDS, LATER_COLUMNS or
    LATER_FACTS, v0.1 all of them) is read with those settings at their defaults, which is
    what its runs used, and those columns empty.
    A missing file has no rows.
    """
    if not path.is_file():
        return []
    reader = csv.DictReader(io.StringIO(_complete_text(path)))
    columns = reader.fieldnames or []
    missing = _older_columns(columns)
    if columns and columns != RESULT_COLUMNS and not missing:
        raise UserError(f"{path}, line 1: other columns than this version writes ({_header_problem(columns)}): "
                        f"not a results.csv of lars-systemml, or of a newer version; use a new --output folder")
    rows = []
    for row in reader:
        check_row(row, path, reader.line_num, len(columns), complete)
        rows.append(row)
    if rows and missing:
        defaults = _defaults_as_written(missing)
        rows = [{k: {**row, **defaults}[k] for k in RESULT_COLUMNS} for row in rows]
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
    with atomic_path(path) as tmp:  # a full disk leaves the old file as it was
        tmp.write_text(buffer.getvalue())


def append_result(path: Path, row: dict) -> None:
    """Append one row (header first if the file is new), durably; columns not in ``row`` stay empty.

    The file is checked first (read_results: a garbled one is an error, not appended to);
    a partial last line left by a kill is cut off (in place: no new space needed). The
    row is one write() and an fsync; if either fails (a full disk), the file is cut back to
    its earlier length, so its finished rows stay valid.
    """
    if path.is_file() and path.stat().st_size:
        read_results(path)
        text = path.read_bytes()
        if not text.endswith(b"\n"):  # drop a partial line left by a kill
            os.truncate(path, text.rfind(b"\n") + 1)
        _upgrade(path)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    if not path.is_file() or path.stat().st_size == 0:
        writer.writeheader()
    writer.writerow({k: row.get(k, "") for k in RESULT_COLUMNS})
    data = buffer.getvalue().encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(28, "No space left on device (short write)", str(path))
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, size)
            if exc.filename is None:
                exc.filename = str(path)
            raise
    finally:
        os.close(fd)
