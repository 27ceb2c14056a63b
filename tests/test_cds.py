"""Class-data sharing of the local SystemDS JVMs (lars_systemml/cds.py): the archive is made
once and reused, a damaged or stale one changes nothing SystemDS prints, the opt-out, and two
first launches at once. The JVM tests run a one-line script (a few JVM starts in all)."""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lars_systemml import cds, locks, runtime

REPO = Path(__file__).resolve().parent.parent
TRIVIAL = 'x = sum(matrix(1, rows=3, cols=3))\nprint("@@x " + x)\n'
STAMP = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d ")  # log4j's date and time


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """CDS on, and a cache folder of the test's own (no archive yet)."""
    monkeypatch.setenv(cds.ENV, "1")
    monkeypatch.setenv("LARS_SYSTEMML_CACHE", str(tmp_path / "cache"))
    cds._crc_matches.cache_clear()
    return tmp_path / "cache" / "cds"


@pytest.fixture
def fake_java(monkeypatch):
    """No JVM: a java path and `java -version` text of our own, a fixed classpath."""
    monkeypatch.setattr(runtime, "java_version_output", lambda java: 'openjdk version "17.0.15"')
    monkeypatch.setattr(runtime, "classpath", lambda: "/opt/systemds/SystemDS.jar")


def trivial_command(tmp_path: Path) -> list[str]:
    script = tmp_path / "trivial.dml"
    script.write_text(TRIVIAL)
    return runtime.local_command(script, {}, heap="1g", tmpdir=tmp_path / "java-tmp")


def comparable(lines: list[str]) -> list[str]:
    """SystemDS's output less what differs from run to run (log time stamps, execution time)."""
    return [STAMP.sub("", line) for line in lines if "execution time" not in line]


def write_archive(folder: Path, key: str, payload: bytes) -> Path:
    import zlib
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"systemds-{key}-{len(payload)}-{zlib.crc32(payload):08x}.jsa"
    path.write_bytes(payload)
    return path


# ---------------------------------------------------------------- without a JVM


def test_opt_out_leaves_the_command_as_it_was(cache, fake_java, tmp_path, monkeypatch):
    cmd = runtime.local_command(tmp_path / "x.dml", {}, heap="1g")
    java, options, cp = cds.split_command(cmd)
    write_archive(cache, cds.archive_key(java, options, cp), b"archive")
    with_cds = cds.apply(cmd)
    assert with_cds[1].startswith(f"-XX:SharedArchiveFile={cache}/systemds-") and with_cds[2:4] == cds.USE_FLAGS
    assert with_cds[4:] == cmd[1:]
    for off in ("0", "off", "false"):
        monkeypatch.setenv(cds.ENV, off)
        assert cds.apply(cmd) == cmd and not cds.enabled()


def test_only_local_systemds_commands_without_cds_options_of_their_own(cache, fake_java, tmp_path):
    cmd = runtime.local_command(tmp_path / "x.dml", {}, heap="1g")
    assert cds.split_command(cmd) is not None
    assert cds.split_command(["spark-submit", "--class", cds.MAIN_CLASS, "SystemDS.jar"]) is None
    own = runtime.local_command(tmp_path / "x.dml", {}, jvm_flags=["-Xshare:off"])
    assert cds.split_command(own) is None and cds.apply(own) == own


def test_key_follows_java_classpath_and_flags_but_not_the_run(fake_java, tmp_path, monkeypatch):
    jar = tmp_path / "SystemDS.jar"
    jar.write_bytes(b"v1")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "a.jar").write_bytes(b"a")
    cp = f"{jar}{os.pathsep}{lib}/*"
    base = ["--add-modules=jdk.incubator.vector", "-Xmx8g", "-Djava.io.tmpdir=/tmp/run-1"]
    key = cds.archive_key("/usr/bin/java", base, cp)
    # the run's own temp folder and a heap on the same side of the compressed-oops limit: the same
    assert cds.archive_key("/usr/bin/java", [base[0], "-Xmx1g", "-Djava.io.tmpdir=/tmp/run-2"], cp) == key
    different = [cds.archive_key("/usr/bin/java", [base[0], "-Xmx64g"], cp),
                 cds.archive_key("/usr/bin/java", [*base, "-XX:+UseParallelGC"], cp),
                 cds.archive_key(str(tmp_path / "other-java"), base, cp)]
    monkeypatch.setattr(runtime, "java_version_output", lambda java: 'openjdk version "21.0.2"')
    different.append(cds.archive_key("/usr/bin/java", base, cp))
    monkeypatch.setattr(runtime, "java_version_output", lambda java: 'openjdk version "17.0.15"')
    assert cds.archive_key("/usr/bin/java", base, cp) == key
    (lib / "b.jar").write_bytes(b"b")  # a jar more in lib/
    different.append(cds.archive_key("/usr/bin/java", base, cp))
    jar.write_bytes(b"v2-longer")  # another SystemDS.jar
    different.append(cds.archive_key("/usr/bin/java", base, cp))
    assert key not in different and len(set(different)) == len(different)


def test_a_damaged_archive_is_removed_and_never_used(cache, tmp_path):
    good = write_archive(cache, "0123456789abcdef", b"archive")
    assert cds.find_archive(cache, "0123456789abcdef") == good
    good.write_bytes(b"archivX")  # same size, other bytes
    cds._crc_matches.cache_clear()
    assert cds.find_archive(cache, "0123456789abcdef") is None and not good.exists()
    short = write_archive(cache, "0123456789abcdef", b"archive")
    short.write_bytes(b"arch")  # truncated
    assert cds.find_archive(cache, "0123456789abcdef") is None and not short.exists()


def test_a_failed_warmup_is_not_retried_at_once(cache, fake_java, tmp_path, monkeypatch):
    tries = []
    monkeypatch.setattr(cds, "make_archive", lambda *a: tries.append(1))
    cmd = runtime.local_command(tmp_path / "x.dml", {}, heap="1g")
    assert cds.apply(cmd) == cmd and cds.apply(cmd) == cmd
    assert len(tries) == 1 and len(list(cache.glob("*.failed"))) == 1


def test_old_archives_of_other_keys_go_when_a_new_one_is_made(cache, fake_java, tmp_path, monkeypatch):
    cmd = runtime.local_command(tmp_path / "x.dml", {}, heap="1g")
    key = cds.archive_key(*cds.split_command(cmd))
    old = write_archive(cache, "0" * 16, b"old")
    old_failure = cache / f"systemds-{'1' * 16}.failed"
    old_failure.touch()
    old_partial = cache / f"systemds-{'3' * 16}.123-abcdef01.tmp"  # a warm-up killed long ago
    old_partial.write_bytes(b"half")
    recent = write_archive(cache, "2" * 16, b"recent")
    long_ago = time.time() - cds.PRUNE_AFTER_S - 60
    for path in (old, old_failure, old_partial):
        os.utime(path, (long_ago, long_ago))
    assert cds.find_archive(cache, "0" * 16) == old  # intact, only old
    monkeypatch.setattr(cds, "make_archive", lambda folder, k, *a: write_archive(folder, k, b"new"))
    made = cds.apply(cmd)[1].split("=", 1)[1]
    assert sorted(p.name for p in cache.glob("systemds-*") if not p.name.endswith(".lock")) == sorted(
        [recent.name, Path(made).name])
    # a key's own archive is kept however old it is
    os.utime(made, (long_ago, long_ago))
    assert cds.prune(cache, key) == [] and Path(made).exists()


class Terminal:
    """A stderr that says it is a terminal and keeps what is written to it."""

    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_making_an_archive_is_announced_on_a_terminal_only(cache, fake_java, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cds, "make_archive", lambda folder, k, *a: write_archive(folder, k, b"new"))
    cmd = runtime.local_command(tmp_path / "x.dml", {}, heap="1g")
    cds.apply(cmd)
    assert capsys.readouterr().err == ""  # a log, a pipe or a test: not a word
    shutil.rmtree(cache)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    cds.apply(cmd)
    cds.apply(cmd)  # found: nothing more to say
    assert terminal.text.count("\n") == 1 and "class archive" in terminal.text and cds.ENV in terminal.text


def test_an_archive_being_made_elsewhere_means_a_run_without(cache, fake_java, tmp_path, monkeypatch):
    monkeypatch.setattr(cds, "make_archive", lambda *a: pytest.fail("made while locked"))
    cmd = runtime.local_command(tmp_path / "x.dml", {}, heap="1g")
    key = cds.archive_key(*cds.split_command(cmd))
    cache.mkdir(parents=True)
    with locks.FileLock(cache / f"systemds-{key}.lock") as lock:
        assert lock.acquire()
        assert cds.apply(cmd) == cmd


# ---------------------------------------------------------------- with the JVM


@pytest.fixture(scope="module")
def trivial(tmp_path_factory):
    """The one-line script's command, its output without CDS, and an archive made for it
    (in a cache folder of this module's own): three JVM starts in all."""
    folder = tmp_path_factory.mktemp("cds")
    cmd = trivial_command(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LARS_SYSTEMML_CACHE", str(folder / "cache"))
        mp.setenv(cds.ENV, "0")
        baseline = comparable(runtime.run_dml(cmd, cwd=folder))
        mp.setenv(cds.ENV, "1")
        cds._crc_matches.cache_clear()
        first = runtime.run_dml(cmd, cwd=folder)  # makes the archive (the warm-up), then runs with it
        archives = list((folder / "cache" / "cds").glob("*.jsa"))
        names = sorted(p.name for p in (folder / "cache" / "cds").iterdir())
    return {"cmd": cmd, "baseline": baseline, "first": first, "archives": archives, "names": names,
            "folder": folder}


def test_archive_is_made_once_and_changes_no_output(trivial, cache, monkeypatch):
    assert "@@x 9" in trivial["first"] and comparable(trivial["first"]) == trivial["baseline"]
    archives = trivial["archives"]
    assert len(archives) == 1 and trivial["names"] == [archives[0].name]  # no lock or partial file left
    # the next launch finds it and makes none
    monkeypatch.setenv("LARS_SYSTEMML_CACHE", str(trivial["folder"] / "cache"))
    monkeypatch.setattr(cds, "make_archive", lambda *a: pytest.fail("archive made again"))
    made = archives[0].stat()
    assert cds.apply(trivial["cmd"]) == [trivial["cmd"][0], f"-XX:SharedArchiveFile={archives[0]}",
                                         *cds.USE_FLAGS, *trivial["cmd"][1:]]
    assert archives[0].stat().st_mtime_ns == made.st_mtime_ns and archives[0].stat().st_ino == made.st_ino


def test_damaged_and_stale_archives_are_silent(trivial, cache, tmp_path):
    cmd, (good,) = trivial["cmd"], trivial["archives"]
    # Truncated (JDK 17 would crash on it): not used, and replaced by a new one.
    cache.mkdir(parents=True)
    damaged = cache / good.name
    damaged.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    assert comparable(runtime.run_dml(cmd, cwd=tmp_path)) == trivial["baseline"]
    (replaced,) = cache.glob("*.jsa")
    assert cds.intact(replaced) and not list(tmp_path.glob("hs_err*"))
    # Stale: an intact archive of another classpath, filed under this command's key. The JVM
    # rejects it ([warning][cds,dynamic] without -Xlog:cds*=off) and runs without CDS.
    stale_cmd = [*cmd]
    at = stale_cmd.index("-cp") + 1
    stale_cmd[at] += os.pathsep + str(tmp_path)
    key = cds.archive_key(*cds.split_command(stale_cmd))
    stale = cache / f"systemds-{key}-{good.stat().st_size}-{cds.file_crc(good):08x}.jsa"
    shutil.copy(good, stale)
    assert cds.apply(stale_cmd)[1] == f"-XX:SharedArchiveFile={stale}"
    assert comparable(runtime.run_dml(stale_cmd, cwd=tmp_path)) == trivial["baseline"]


def test_two_first_launches_at_once_both_succeed(cache, tmp_path):
    cmd = trivial_command(tmp_path)
    program = ("import sys, pathlib; from lars_systemml import runtime\n"
               f"lines = runtime.run_dml({cmd!r}, cwd=pathlib.Path(sys.argv[1]))\n"
               "print('ok' if '@@x 9' in lines else 'no result')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = []
    for i in range(2):
        (tmp_path / f"cwd{i}").mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", program, str(tmp_path / f"cwd{i}")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], results
    assert [out.strip().splitlines()[-1] for out, _ in results] == ["ok", "ok"]
    names = [p.name for p in cache.iterdir()]
    assert names and all(cds.ARCHIVE.fullmatch(name) for name in names)  # no lock or partial file left
