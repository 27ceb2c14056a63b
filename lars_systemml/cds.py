"""Class-data sharing (AppCDS) for the local SystemDS JVMs: 0.5-0.7 s less per launch (quiet).

Every local run starts a JVM that loads ~2000 SystemDS and Hadoop classes from their jars,
parsing and verifying each anew. A dynamic CDS archive (JDK 13+) holds them parsed and
verified, ready to map: it is made once per Java, classpath and JVM flags by a warm-up run
(``dml/cds_warmup.dml`` with ``-XX:ArchiveClassesAtExit``), then every local run maps it
(``-XX:SharedArchiveFile``). docs/performance.md has the measurement
(``benchmarks/cds_launch.py``). ``LARS_SYSTEMML_CDS=0`` switches it off.

Why it is built the way it is (each measured on OpenJDK 17.0.15):
- A separate warm-up run, not ``ArchiveClassesAtExit`` on the user's run: a JVM that cannot
  write its archive at exit (a full disk, a missing folder) prints "Error occurred during
  initialization of VM" and exits 1, which would fail a finished training.
- The archive's size and CRC-32 are in its file name and checked before every use (~30 ms):
  JDK 17 crashes (SIGBUS, SIGSEGV and an hs_err file) on a truncated or damaged archive
  instead of ignoring it, -XX:+VerifySharedSpaces included.
- Written under a temporary name and renamed into place, so no run sees half an archive;
  one warm-up at a time per archive (a lock file): other runs meanwhile go without CDS.
- ``-Xshare:auto -Xlog:cds*=off``: an archive the JVM cannot use (a jar changed since, other
  JVM flags) is skipped without a word; without the -Xlog option the JVM prints a
  ``[warning][cds,dynamic]`` line into SystemDS's output.
- Nothing here fails a run: any error (no cache folder, a warm-up that fails) means this run
  goes without CDS. A failed warm-up is not retried for a day (a ``.failed`` marker).
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import uuid
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from . import locks

ENV = "LARS_SYSTEMML_CDS"
MAIN_CLASS = "org.apache.sysds.api.DMLScript"
USE_FLAGS = ["-Xshare:auto", "-Xlog:cds*=off"]
# JVM options that make a CDS choice of their own, or under which the JVM limits or
# disables CDS (and may say so): with any of them this module stays out of the way.
NO_CDS_OPTIONS = ("-Xshare", "-XX:SharedArchiveFile", "-XX:ArchiveClassesAtExit", "-XX:SharedClassListFile",
                  "-XX:DumpLoadedClassList", "-XX:+AutoCreateSharedArchive", "-Xbootclasspath",
                  "--patch-module", "--upgrade-module-path", "--limit-modules")
ARCHIVE = re.compile(r"systemds-(?P<key>[0-9a-f]{16})-(?P<size>\d+)-(?P<crc>[0-9a-f]{8})\.jsa")
RETRY_AFTER_S = 24 * 3600  # a failed warm-up is tried again after this long
# Archives of other keys (an older SystemDS or Java, other JVM flags) made longer ago than this
# are removed when a new archive is made: ~30 MB each; one still in use is made again (~6 s).
PRUNE_AFTER_S = 30 * 24 * 3600
WARMUP_TIMEOUT_S = 300
COMPRESSED_OOPS_LIMIT = 32 << 30  # heaps from here on run without compressed oops: another base archive


def enabled() -> bool:
    """False when ``$LARS_SYSTEMML_CDS`` is 0, off, false, no or none."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "off", "false", "no", "none")


def archive_dir() -> Path:
    """``<cache>/cds``: the user cache of lars_systemml.data (``$LARS_SYSTEMML_CACHE``)."""
    from .data import cache_dir  # data imports runtime, which imports this module

    return cache_dir() / "cds"


def apply(cmd: Sequence[str]) -> list[str]:
    """``cmd`` with the CDS flags if it is a local SystemDS command and an archive is (made) ready.

    The first call for a Java/classpath/flags combination runs the warm-up (a few seconds)
    and waits for it. Anything else (opted out, a Spark or other command, JVM options
    naming a CDS archive of their own, no archive to be had) returns ``cmd`` unchanged.
    Never raises, except KeyboardInterrupt during the warm-up.
    """
    cmd = list(cmd)
    if not enabled():
        return cmd
    try:
        parts = split_command(cmd)
        if parts is None:
            return cmd
        java, options, cp = parts
        archive = ensure_archive(java, options, cp)
    except Exception:  # CDS only ever speeds a run up, never fails one
        return cmd
    if archive is None:
        return cmd
    return [java, f"-XX:SharedArchiveFile={archive}", *USE_FLAGS, *cmd[1:]]


def split_command(cmd: Sequence[str]) -> tuple[str, list[str], str] | None:
    """(java, JVM options, classpath) of a ``runtime.local_command``, or None for any other
    command and for one with NO_CDS_OPTIONS."""
    if "-cp" not in cmd:
        return None
    at = list(cmd).index("-cp")
    if at < 1 or len(cmd) < at + 3 or cmd[at + 2] != MAIN_CLASS:
        return None
    options = list(cmd[1:at])
    if any(option.startswith(NO_CDS_OPTIONS) for option in options):
        return None
    return cmd[0], options, cmd[at + 1]


def ensure_archive(java: str, options: list[str], cp: str) -> Path | None:
    """A checked archive for this Java, options and classpath: found, or made now; None if
    none can be had (another process is making it, or making it failed within a day)."""
    folder = archive_dir()
    key = archive_key(java, options, cp)
    found = find_archive(folder, key)
    if found is not None:
        return found
    failed = folder / f"systemds-{key}.failed"
    if failed.exists() and time.time() - failed.stat().st_mtime < RETRY_AFTER_S:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    lock = locks.FileLock(folder / f"systemds-{key}.lock")
    if not lock.acquire():
        return None  # another run is making it: this one goes without
    with lock:
        found = find_archive(folder, key)  # made while we looked
        if found is not None:
            return found
        if sys.stderr.isatty():  # a person waits: say why (never into a log or a test's stderr)
            print(f"note: making SystemDS's class archive, once per Java and SystemDS version "
                  f"(~6 s; {ENV}=0 turns it off)", file=sys.stderr, flush=True)
        made = make_archive(folder, key, java, options, cp)
        if made is None:
            failed.touch()
        else:
            failed.unlink(missing_ok=True)
            prune(folder, key)
        return made


def prune(folder: Path, keep: str, now: float | None = None) -> list[Path]:
    """Remove the archives, failure markers and partial archives (of killed warm-ups) of keys
    other than ``keep`` last written more than PRUNE_AFTER_S ago; the paths removed. Lock
    files are left to lars_systemml.locks."""
    now = time.time() if now is None else now
    removed = []
    for path in [*folder.glob("systemds-*.jsa"), *folder.glob("systemds-*.failed"), *folder.glob("systemds-*.tmp")]:
        if path.name.startswith(f"systemds-{keep}") or now - _mtime(path) <= PRUNE_AFTER_S:
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def archive_key(java: str, options: Sequence[str], cp: str) -> str:
    """16 hex digits that change with the Java (path and ``-version``), the JVM options
    (less the per-run temp folder; the heap only as below/above the compressed-oops
    limit) and every classpath jar (path, size, mtime)."""
    from . import runtime  # runtime imports this module

    parts = [os.path.realpath(java), runtime.java_version_output(java)]
    for option in options:
        if option.startswith("-Djava.io.tmpdir="):
            continue
        if option.startswith("-Xmx"):
            size = heap_bytes(option[4:])
            option = f"-Xmx{'?' if size is None else '>=32g' if size >= COMPRESSED_OOPS_LIMIT else '<32g'}"
        parts.append(option)
    for path in classpath_files(cp):
        try:
            st = path.stat()
            parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{path}:missing")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def heap_bytes(text: str) -> int | None:
    """-Xmx's size in bytes ('8g', '512m', '1024k', '1073741824'), None if unreadable."""
    found = re.fullmatch(r"(\d+)([kKmMgGtT]?)", text.strip())
    if not found:
        return None
    return int(found.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[found.group(2).lower()]


def classpath_files(cp: str) -> list[Path]:
    """The classpath's entries, a ``dir/*`` expanded to its jars as the JVM does (sorted here)."""
    files = []
    for entry in cp.split(os.pathsep):
        if entry.endswith("*"):
            folder = Path(entry[:-1] or ".")
            files += sorted(p for p in folder.glob("*") if p.suffix.lower() == ".jar")
        elif entry:
            files.append(Path(entry))
    return files


def find_archive(folder: Path, key: str) -> Path | None:
    """The newest intact archive of ``key`` in ``folder``; damaged ones are removed."""
    try:
        candidates = sorted(folder.glob(f"systemds-{key}-*.jsa"), key=_mtime, reverse=True)
    except OSError:
        return None
    for path in candidates:
        if intact(path):
            return path
        try:
            path.unlink()  # damaged: a new one is made in its place
        except OSError:
            pass
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def intact(path: Path) -> bool:
    """Whether the archive has the size and CRC-32 its name records."""
    found = ARCHIVE.fullmatch(path.name)
    if not found:
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != int(found.group("size")):
        return False
    return _crc_matches(str(path), st.st_ino, st.st_size, st.st_mtime_ns, found.group("crc"))


@lru_cache(maxsize=64)
def _crc_matches(path: str, inode: int, size: int, mtime_ns: int, crc: str) -> bool:
    """Checked once per process and file version (the arguments besides path key the cache)."""
    try:
        return f"{file_crc(Path(path)):08x}" == crc
    except OSError:
        return False


def file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(block, crc)
    return crc


def make_archive(folder: Path, key: str, java: str, options: list[str], cp: str) -> Path | None:
    """Run the warm-up with ``-XX:ArchiveClassesAtExit`` and rename its archive into place;
    the archive, or None if the warm-up failed. Call with the key's lock held."""
    from . import runtime  # runtime imports this module

    for stale in folder.glob(f"systemds-{key}.*.tmp"):  # left by a killed warm-up
        stale.unlink(missing_ok=True)
    partial = folder / f"systemds-{key}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with runtime.work_dir() as tmp:
            config = runtime.SystemDSConfig(runtime.run_settings(tmp)).write(tmp / "config.xml")
            own = [o for o in options if not o.startswith("-Djava.io.tmpdir=")]
            cmd = [java, *own, *runtime.java_tmpdir_flags(tmp / "java-tmp"),
                   f"-XX:ArchiveClassesAtExit={partial}", *USE_FLAGS, "-cp", cp, MAIN_CLASS,
                   "-f", str(runtime.dml_dir() / "cds_warmup.dml"), "-exec", "singlenode",
                   "-config", str(config), "-nvargs", f"out={tmp / 'out'}"]
            if not warmup_succeeds(runtime.popen(cmd, cwd=tmp, stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT, text=True)):
                return None
        if not partial.is_file() or partial.stat().st_size == 0:
            return None
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        size, crc = partial.stat().st_size, file_crc(partial)
        final = folder / f"systemds-{key}-{size}-{crc:08x}.jsa"
        os.replace(partial, final)
        return final
    except OSError:
        return None
    finally:
        partial.unlink(missing_ok=True)


def warmup_succeeds(proc: subprocess.Popen) -> bool:
    """Wait for the warm-up; True if it exited 0 having printed its last line."""
    try:
        out, _ = proc.communicate(timeout=WARMUP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False
    except BaseException:  # Ctrl-C: the warm-up goes with the run
        proc.kill()
        proc.wait()
        raise
    return proc.returncode == 0 and "@@cds-warmup " in out and "An Error Occurred" not in out


def status() -> str:
    """One line for ``lars-systemml doctor``: off, or where the archives are and how many."""
    if not enabled():
        return f"off (${ENV}={os.environ.get(ENV)})"
    folder = archive_dir()
    archives = [p for p in folder.glob("systemds-*.jsa") if intact(p)] if folder.is_dir() else []
    if not archives:
        return f"on; no archive yet in {folder} (the next SystemDS run makes one, a few seconds)"
    megabytes = sum(p.stat().st_size for p in archives) / 1e6
    return f"on; {len(archives)} archive(s) in {folder} ({megabytes:.0f} MB)"
