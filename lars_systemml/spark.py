"""The Spark backend: run training through ``spark-submit``, in one of two modes.

``--spark-mode parfor`` (the default): the same dml/train.dml as the local runner,
with its micro-batch ``parfor`` switched by two ``-nvargs`` to ``mode=REMOTE_SPARK,
opt=CONSTRAINED`` and SystemDS started with ``-exec hybrid``. Each global batch then
becomes one Spark job (two when the micro-batches differ in size) with one task per
micro-batch; the driver adds up the weighted gradients and takes the optimizer step,
so the SGD/LARS math is the local one. The driver holds the whole training set.

``--spark-mode paramserv --workers K``: dml/train_paramserv.dml calls SystemDS's
``paramserv(mode=REMOTE_SPARK, utype=BSP, freq=BATCH)`` once per epoch: Spark reads
the training set from its binary files on the executors and partitions it onto K
workers (one long task each); each step every worker computes the gradient of its
B/K rows and the driver applies the optimizer to their size-weighted mean
(dml/paramserv/functions.dml). Only the model list and the gradients travel per
step. See docs/spark.md for the semantics (batches differ from the local run's).

What this module adds around it: checks before anything starts (Java, a
Spark 3.5 / Scala 2.12 ``spark-submit``, a reachable master), the
``spark-submit`` argument list with the JVM flags SystemDS needs and a quiet
log4j2 configuration, and one-line errors for Spark failures (no executors
granted, a lost master, a failed task).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import socket
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import runtime
from .errors import DMLError, UserError
from .runtime import FatalError

PARFOR = {"parfor_mode": "REMOTE_SPARK", "parfor_opt": "CONSTRAINED"}
SPARK_MODES = ("parfor", "paramserv")
PARAMSERV_SCRIPT = "train_paramserv.dml"
PARAMSERV_FUNCTIONS = "paramserv/functions.dml"
# the lines of train_paramserv.dml / paramserv/functions.dml that the run's rendering replaces
NET_LINE = 'source("models/lenet5.dml") as net'
PS_LINE = 'source("paramserv/functions.dml") as ps'
SPARK_VERSION = "3.5"
SCALA_VERSION = "2.12"
DRIVER_JVM_FLAGS = [*runtime.JVM_FLAGS, "--add-opens=java.base/java.lang.ref=ALL-UNNAMED"]
EXECUTOR_JVM_FLAGS = list(runtime.JVM_FLAGS)
DEFAULT_EXECUTOR_MEMORY = "4g"
CONNECT_TIMEOUT_S = 5.0
# Spark warns every spark.starvation.timeout (15 s) while a job has no executors;
# after this many warnings the run is given up (a full or too small cluster).
STARVATION_WARNINGS = 4
STARVATION_MARKER = "Initial job has not accepted any resources"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
LOCAL_MASTER = re.compile(r"local(\[(\d+|\*)(,\d+)?\])?$")
INSTALL_HINT = (f"pip install pyspark=={SPARK_VERSION}.7, or point SPARK_HOME at a "
                f"Spark {SPARK_VERSION}.x (Scala {SCALA_VERSION}) distribution")

LOG4J2 = """\
# Quiet log4j2 configuration for the Spark driver: warnings and errors only.
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n
logger.spark.name = org.apache.spark
logger.spark.level = error
# keeps "Initial job has not accepted any resources" (no executors granted)
logger.scheduler.name = org.apache.spark.scheduler.TaskSchedulerImpl
logger.scheduler.level = warn
logger.hadoop.name = org.apache.hadoop
logger.hadoop.level = error
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = error
logger.netty.name = io.netty
logger.netty.level = error
# SystemDS warns with a stack trace when a parfor task in the driver JVM (local[N]) starts threads
logger.threadpool.name = org.apache.sysds.runtime.util.CommonThreadPool
logger.threadpool.level = error
"""


@dataclass
class SparkOptions:
    """Where and with what resources to run on Spark.

    ``master``: ``local[N]``, ``spark://host:port`` or ``yarn``. ``driver_memory``:
    None means the local runner's ``--heap``. ``scratch``: SystemDS's scratch
    folder, through which the driver ships each parfor's inputs to the executors
    and gets their gradients back; None means a temporary local folder, which
    only works when driver and executors share one machine.
    """

    master: str
    driver_memory: str | None = None
    executor_memory: str = DEFAULT_EXECUTOR_MEMORY
    conf: dict[str, str] = field(default_factory=dict)
    scratch: str | None = None
    mode: str = "parfor"  # SPARK_MODES
    workers: int | None = None  # paramserv workers K (paramserv mode only)


def add_options(parser: argparse.ArgumentParser) -> None:
    """The ``--backend`` and ``--spark-*`` command-line options."""
    g = parser.add_argument_group("backend (see README: Running at scale, and docs/spark.md)")
    g.add_argument("--backend", choices=["local", "spark"], default="local",
                   help="local: embedded SystemDS (default); spark: spark-submit, gradients on executors")
    g.add_argument("--spark-master", metavar="URL", help="local[N], spark://host:port or yarn")
    g.add_argument("--driver-memory", help="Spark driver memory (default: --heap)")
    g.add_argument("--executor-memory", help=f"Spark executor memory (default {DEFAULT_EXECUTOR_MEMORY})")
    g.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Spark setting, repeatable, e.g. spark.executor.cores=2")
    g.add_argument("--spark-scratch", metavar="DIR",
                   help="SystemDS scratch folder shared by driver and executors (an hdfs:// URI "
                        "or a shared mount); required on YARN; default: a local temporary folder")
    g.add_argument("--spark-mode", choices=SPARK_MODES, default=None,
                   help="parfor (default): the driver holds the data and ships each step's micro-batches; "
                        "paramserv: the data is partitioned onto --workers Spark tasks once per epoch and "
                        "only model and gradients travel (docs/spark.md)")
    g.add_argument("--workers", type=int, default=None, metavar="K",
                   help="paramserv workers (Spark tasks, each B/K rows per step); needs --spark-mode "
                        "paramserv and at least K free executor cores")


def options_from_args(args: argparse.Namespace) -> SparkOptions | None:
    """SparkOptions for ``--backend spark``, None for local; UserError for inconsistent flags."""
    given = [flag for flag, value in (("--spark-master", args.spark_master),
                                      ("--driver-memory", args.driver_memory),
                                      ("--executor-memory", args.executor_memory),
                                      ("--spark-conf", args.spark_conf),
                                      ("--spark-scratch", args.spark_scratch),
                                      ("--spark-mode", args.spark_mode),
                                      ("--workers", args.workers is not None)) if value]
    if args.backend != "spark":
        if given:
            raise UserError(f"{given[0]} needs --backend spark")
        return None
    if not args.spark_master:
        raise UserError("--backend spark needs --spark-master URL (local[N], spark://host:port or yarn)")
    options = SparkOptions(master=args.spark_master, driver_memory=args.driver_memory,
                           executor_memory=args.executor_memory or DEFAULT_EXECUTOR_MEMORY,
                           conf=parse_conf(args.spark_conf), scratch=args.spark_scratch,
                           mode=args.spark_mode or "parfor", workers=args.workers)
    check_mode(options)
    return options


def check_mode(options: SparkOptions, batch_size: int | None = None) -> None:
    """One-line UserErrors for a bad --spark-mode/--workers combination (no data needed).

    paramserv's BSP server waits for all K workers every step, and each worker is one
    Spark task for the whole epoch: K must divide the batch (equal local batches, one
    update per global batch) and a ``local[N]`` master must run all K tasks at once.
    """
    if options.mode not in SPARK_MODES:
        raise UserError(f"unknown --spark-mode '{options.mode}': choose {' or '.join(SPARK_MODES)}")
    if options.mode != "paramserv":
        if options.workers is not None:
            raise UserError("--workers needs --spark-mode paramserv (the parfor mode uses --parallel-batches)")
        return
    if options.workers is None:
        raise UserError("--spark-mode paramserv needs --workers K, the number of Spark tasks that hold the data")
    if options.workers < 1:
        raise UserError(f"--workers must be at least 1, got {options.workers}")
    local = LOCAL_MASTER.fullmatch(options.master.strip())
    if local and local.group(2) and local.group(2) != "*" and options.workers > int(local.group(2)):
        raise UserError(f"--workers {options.workers} needs {options.workers} task slots but {options.master} "
                        f"has {local.group(2)}: paramserv's workers must all run at once (BSP); use "
                        f"local[{options.workers}] or fewer workers")
    if local and not local.group(1) and options.workers > 1:
        raise UserError(f"--workers {options.workers} needs {options.workers} task slots but 'local' has 1: "
                        f"use local[{options.workers}]")
    if batch_size is not None and batch_size % options.workers:
        raise UserError(f"--batch-size {batch_size} is not a multiple of --workers {options.workers}: each "
                        f"worker computes B/K rows per step; choose a batch size divisible by K")


def check_partitions(n: int, batch_size: int, workers: int) -> None:
    """A UserError unless every paramserv worker takes exactly ceil(N/B) steps per epoch.

    SystemDS gives worker k (k < K-1) ceil(N/K) rows and the last one the rest; with b = B/K
    rows per local batch a worker takes ceil(rows/b) steps. BSP needs equal counts (else the
    server waits forever for the workers that finished), and one update per global batch
    needs them equal to ceil(N/B), the local run's steps per epoch.
    """
    batch = min(batch_size, n)
    if batch % workers:
        raise UserError(f"the batch ({batch} rows) is not a multiple of --workers {workers}: each worker "
                        f"computes B/K rows per step; choose a batch size divisible by K")
    per = -(-n // workers)
    rows = [per] * (workers - 1) + [n - per * (workers - 1)]
    local_batch = batch // workers
    steps = {-(-r // local_batch) if r > 0 else 0 for r in rows}
    want = -(-n // batch)
    if steps != {want}:
        raise UserError(f"with {n} training images, batch {batch_size} and {workers} workers the workers' "
                        f"partitions ({', '.join(map(str, sorted(set(rows))))} rows) take "
                        f"{'/'.join(map(str, sorted(steps)))} steps of {local_batch} rows per epoch, not "
                        f"{want} each: SystemDS's BSP paramserv needs equal counts; choose a training size, "
                        f"batch size or number of workers for which they are")


def parse_conf(items: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` as a dict; a UserError for an item without '=' or key."""
    conf = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad --spark-conf '{item}': use KEY=VALUE, e.g. spark.executor.cores=2")
        conf[key.strip()] = value
    return conf


# ---------------------------------------------------------------- checks before starting


def spark_home() -> Path:
    """$SPARK_HOME if set (spark-submit uses it too), else the installed pyspark package."""
    if os.environ.get("SPARK_HOME"):
        return Path(os.environ["SPARK_HOME"]).expanduser()
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise FatalError(f"Spark not found: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def spark_submit() -> Path:
    path = spark_home() / "bin" / "spark-submit"
    if not os.access(path, os.X_OK):
        raise FatalError(f"{path} is missing or not executable: {INSTALL_HINT}")
    return path


def check_spark_version(home: Path | None = None) -> str:
    """The Spark version of ``home`` (from its spark-core jar); a UserError unless 3.5 / Scala 2.12."""
    home = home or spark_home()
    found = []
    for jar in sorted((home / "jars").glob("spark-core_*.jar")):
        match = re.fullmatch(r"spark-core_(\d+\.\d+)-(\d+\.\d+\.\d+\S*)\.jar", jar.name)
        if match:
            found.append((match.group(1), match.group(2)))
    if not found:
        raise FatalError(f"{home} holds no jars/spark-core_*.jar, so it is not a Spark installation: {INSTALL_HINT}")
    scala, version = found[0]
    if scala != SCALA_VERSION or not version.startswith(SPARK_VERSION + "."):
        raise FatalError(f"Spark {version} (Scala {scala}) in {home}, but SystemDS "
                        f"{runtime.systemds_version()} needs Spark {SPARK_VERSION}.x with Scala "
                        f"{SCALA_VERSION}: {INSTALL_HINT}")
    return version


def _reachable(host: str, port: int) -> str | None:
    """None if a TCP connection to host:port opens, else the reason."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _yarn_resource_manager(conf_dir: Path) -> tuple[str, int] | None:
    """host, port of the ResourceManager from yarn-site.xml, if it names one."""
    site = conf_dir / "yarn-site.xml"
    if not site.is_file():
        return None
    try:
        props = {p.findtext("name"): p.findtext("value") for p in ET.parse(site).getroot().iter("property")}
    except ET.ParseError as exc:
        raise FatalError(f"{site} is not valid XML ({exc})") from exc
    address = props.get("yarn.resourcemanager.address")
    if not address and props.get("yarn.resourcemanager.hostname"):
        address = f"{props['yarn.resourcemanager.hostname']}:8032"
    if not address or "${" in address:
        return None
    host, _, port = address.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def check_master(options: SparkOptions) -> None:
    """A one-line UserError unless the master looks usable; connects to spark:// and YARN masters."""
    master = options.master.strip()
    if LOCAL_MASTER.fullmatch(master):
        return
    if master.startswith("spark://"):
        addresses = [a for a in master[len("spark://"):].split(",") if a]
        errors = []
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise FatalError(f"bad Spark master '{master}': use spark://host:port")
            reason = _reachable(host.strip("[]"), int(port))
            if reason is None:
                if not options.scratch and not _loopback_master(master):
                    warn("no --spark-scratch: the local scratch folder works only if every "
                         "executor runs on this machine")
                return
            errors.append(f"{address} ({reason})")
        raise FatalError(f"cannot reach the Spark master {'; '.join(errors)}: start it "
                        f"(spark-class org.apache.spark.deploy.master.Master) or fix --spark-master")
    if master == "yarn":
        conf_dir = os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")
        if not conf_dir:
            raise FatalError("--spark-master yarn needs HADOOP_CONF_DIR (or YARN_CONF_DIR) set to the "
                            "folder with the cluster's core-site.xml and yarn-site.xml")
        if not options.scratch:
            raise FatalError("--spark-master yarn needs --spark-scratch, a folder all nodes can read "
                            "and write, e.g. hdfs:///tmp/lars-systemml")
        rm = _yarn_resource_manager(Path(conf_dir))
        if rm and (reason := _reachable(*rm)):
            raise FatalError(f"cannot reach the YARN ResourceManager {rm[0]}:{rm[1]} ({reason}) "
                            f"named in {conf_dir}/yarn-site.xml")
        return
    raise FatalError(f"unsupported Spark master '{master}': use local[N], spark://host:port or yarn")


def preflight(options: SparkOptions) -> None:
    """Everything checkable before a JVM starts: Java, spark-submit and its version, the master."""
    runtime.check_java()
    spark_submit()
    check_spark_version()
    check_master(options)


# ---------------------------------------------------------------- the command


def _loopback_master(master: str) -> bool:
    return master.startswith("spark://") and all(
        a.rpartition(":")[0].strip("[]") in LOOPBACK for a in master[len("spark://"):].split(",") if a)


def submit_command(script: Path, nvargs: dict, sds_config: Path, options: SparkOptions,
                   workdir: Path, heap: str = "8g", stats: bool = False,
                   name: str = "lars-systemml") -> tuple[list[str], dict]:
    """The spark-submit argument list (never a shell string) and its environment.

    ``workdir`` receives the log4j2 configuration; ``heap`` is the driver memory
    unless ``options.driver_memory`` is set. Client deploy mode: the driver runs
    here and reads the prepared matrices from this machine.
    """
    log4j = workdir / "log4j2.properties"
    log4j.write_text(LOG4J2)
    conf = dict(options.conf)
    # the driver's temporary files (Spark's spark-*, and blockmgr-* of a local[N] master)
    # inside the run's folder, which goes with the run (runtime.work_dir)
    driver_flags = [*DRIVER_JVM_FLAGS, f"-Dlog4j2.configurationFile={log4j.as_uri()}",
                    *runtime.java_tmpdir_flags(workdir / "java-tmp"),
                    conf.pop("spark.driver.extraJavaOptions", "")]
    if LOCAL_MASTER.fullmatch(options.master.strip()):
        conf.setdefault("spark.local.dir", str(workdir / "java-tmp"))
    executor_flags = [*EXECUTOR_JVM_FLAGS, conf.pop("spark.executor.extraJavaOptions", "")]
    conf["spark.executor.extraJavaOptions"] = " ".join(f for f in executor_flags if f)
    conf.setdefault("spark.ui.showConsoleProgress", "false")
    if options.mode == "paramserv":
        # a paramserv worker is one task for a whole epoch, in step with the driver's BSP server:
        # a retried task would start the epoch over against a server that has moved on, so a
        # lost task (or executor) fails the run instead
        conf.setdefault("spark.task.maxFailures", "1")
    if _loopback_master(options.master):  # the executors must reach the driver on the same address
        conf.setdefault("spark.driver.host", "127.0.0.1")
    cmd = [str(spark_submit()), "--master", options.master, "--deploy-mode", "client", "--name", name,
           "--driver-memory", options.driver_memory or heap, "--executor-memory", options.executor_memory,
           "--driver-java-options", " ".join(f for f in driver_flags if f)]
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd += [str(runtime.systemds_jar()), "-f", str(script), "-exec", "hybrid", "-config", str(sds_config)]
    if stats:
        cmd += ["-stats"]
    if nvargs:
        cmd += ["-nvargs", *runtime.format_nvargs(nvargs)]
    env = dict(os.environ)
    java_home = Path(os.path.realpath(runtime.java_executable())).parent.parent
    env["JAVA_HOME"] = str(java_home)  # the Java that check_java() approved
    return cmd, env


def scratch_dir(options: SparkOptions, workdir: Path) -> str:
    """The SystemDS scratch folder: the shared one given, else a local one in ``workdir``."""
    return options.scratch or str(workdir / "scratch")


# ---------------------------------------------------------------- the paramserv mode


def with_literal_rows(model_text: str, model: str) -> str:
    """The model's text with a reshape to ``$ps_batch`` rows at the entry of each function its
    ModelSpec lists in ``paramserv_literal_rows`` (function -> {input: columns}).

    SystemDS 3.4.0 recompiles the functions paramserv ships to its Spark workers with forced CP
    exec types and serializes them without the sizes its inter-procedural analysis found, so
    inside the model's inner functions the row count is unknown, and there SystemDS computes a
    wrong conv1 gradient (the quirk dml/train.dml works around with opt=CONSTRAINED). Reshaping
    those functions' inputs to the literal local batch size ($ps_batch) at their entry gives
    back the local gradient (LeNet-5: step-2 loss 2.3703477495868257 on the workers, the local
    2.3703477495868253; without it 2.3705570728401). Every call then has exactly $ps_batch
    rows: stateless models pad their short batches (paramserv/functions.dml).
    """
    from .models import _function_span, get

    for function, inputs in get(model).paramserv_literal_rows.items():
        start, _ = _function_span(model_text, function)
        body = model_text.index("{", start) + 1
        header = model_text[start:body]
        missing = [name for name in inputs if not re.search(rf"matrix\[double\]\s+{name}\b", header)]
        if missing:  # the model changed its signature: keep its ModelSpec in step with it
            raise AssertionError(f"{model}'s paramserv_literal_rows[{function!r}] names {missing}, which are "
                                 f"not inputs of {model}::{function}")
        lines = "".join(f"\n  {name} = matrix({name}, rows=$ps_batch, cols={cols})  # lars_systemml/spark.py"
                        for name, cols in inputs.items())
        model_text = model_text[:body] + lines + model_text[body:]
    return model_text


def render_paramserv(model_file: Path, workdir: Path, model: str) -> Path:
    """Write ``workdir/train_paramserv.dml`` and ``workdir/paramserv-functions.dml`` for a run.

    ``model_file``: the run's rendered model (models.render writes ``workdir/model.dml``),
    rewritten in place by with_literal_rows for ``model``. Both scripts source it; the main
    script sources the rendered functions file by its absolute path, which is also the
    namespace of the ``upd``/``agg`` function names.
    """
    model_file.write_text(with_literal_rows(model_file.read_text(), model))
    functions = workdir / "paramserv-functions.dml"
    text = (runtime.dml_dir() / PARAMSERV_FUNCTIONS).read_text()
    functions.write_text(text.replace(NET_LINE, f'source("{model_file}") as net'))
    text = (runtime.dml_dir() / PARAMSERV_SCRIPT).read_text()
    script = workdir / PARAMSERV_SCRIPT
    script.write_text(text.replace(NET_LINE, f'source("{model_file}") as net')
                      .replace(PS_LINE, f'source("{functions}") as ps'))
    return script


def paramserv_args(functions: Path, workers: int, batch_rows: int, ps_mode: str = "REMOTE_SPARK") -> dict:
    """The -nvargs of train_paramserv.dml that select paramserv's functions, mode, K and the
    rows per worker and step (``batch_rows`` = min(B, N) / K, a literal in the functions)."""
    return {"ps_upd": f"{functions}::gradients", "ps_agg": f"{functions}::aggregation",
            "ps_mode": ps_mode, "workers": workers, "ps_batch": batch_rows}


def stage_training_data(paths: dict[str, str], options: SparkOptions, workdir: Path) -> dict[str, str]:
    """The training matrices where the executors can read them: X and Y (binary, with their .mtd).

    No ``--spark-scratch``: the prepared files themselves (every executor runs on this
    machine). A scratch folder on a shared mount: copied there once per run. An ``hdfs://``
    (or other Hadoop) URI: put there with ``hadoop fs`` (which must be on PATH). The test
    matrices stay on the driver (it evaluates them).
    """
    scratch = options.scratch
    if not scratch:
        return dict(paths)
    staged = dict(paths)
    local = scratch[len("file://"):] if scratch.startswith("file://") else scratch
    if "://" not in local:
        import shutil

        target = Path(local) / f"data-{workdir.name}"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("X", "Y"):
            src = Path(paths[name])
            copy = shutil.copytree if src.is_dir() else shutil.copyfile
            copy(src, target / name)
            shutil.copyfile(f"{src}.mtd", target / f"{name}.mtd")
            staged[name] = str(target / name)
        return staged
    import shutil
    import subprocess

    hadoop = shutil.which("hadoop")
    if not hadoop:
        raise FatalError(f"--spark-mode paramserv with --spark-scratch {scratch} needs the 'hadoop' command "
                         f"on PATH to put the training data there (or a shared mount as --spark-scratch)")
    target = f"{scratch.rstrip('/')}/data-{workdir.name}"
    for name in ("X", "Y"):
        cmd = [hadoop, "fs", "-put", "-f", paths[name], f"{paths[name]}.mtd", target + "/"]
        done = subprocess.run([hadoop, "fs", "-mkdir", "-p", target], capture_output=True, text=True)
        if done.returncode == 0:
            done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise FatalError(f"cannot put the training data into {target}: {last}")
        staged[name] = f"{target}/{name}"
    return staged


# ---------------------------------------------------------------- running it


class _Watch:
    """Output callback: passes lines on, remembers Spark errors, gives up when no executors come."""

    def __init__(self, on_output: Callable[[str], None] | None):
        self.on_output = on_output
        self.starved = 0
        self.errors: list[str] = []

    def __call__(self, line: str) -> None:
        if self.on_output:
            self.on_output(line)
        if STARVATION_MARKER in line:
            self.starved += 1
            if self.starved >= STARVATION_WARNINGS:
                raise FatalError("the Spark cluster granted this application no executors: check that "
                                "a worker is ALIVE with free cores and at least --executor-memory free")
        elif re.search(r"\b(ERROR|Exception:)", line) and "ANTLR" not in line:
            self.errors.append(line.strip())


def _spark_error(errors: list[str]) -> str | None:
    """The most telling Spark error line: a known cause, else the first one."""
    patterns = ["All masters are unresponsive", "Master removed our application", "Job aborted",
                "Could not connect", "Exception:"]
    for pattern in patterns:
        for line in errors:
            if pattern in line:
                return line.split(": ", 1)[-1] if " ERROR " in line else line
    return errors[0] if errors else None


def _task_failure(lines: list[str]) -> str | None:
    """For a Spark job aborted by a failed task: the task's root cause, else the abort reason."""
    aborted = [line for line in lines if "Job aborted due to stage failure" in line]
    if not aborted:
        return None
    causes = [m.group(1) for line in lines
              if (m := re.match(r"\s*Caused by: [\w.$]+: (.+)", line))]
    if causes:
        return f"a Spark task failed: {causes[-1].strip()}"
    return aborted[-1].split("Job aborted due to stage failure: ", 1)[1].strip()


def run_submit(cmd: list[str], cwd: Path, env: dict, log_path: Path,
               on_progress: Callable[[str], None] | None = None,
               on_output: Callable[[str], None] | None = None) -> list[str]:
    """runtime.run_dml for spark-submit, with Spark's own failures turned into one-line errors."""
    watch = _Watch(on_output)
    try:
        lines = runtime.run_dml(cmd, cwd=cwd, on_progress=on_progress, on_output=watch,
                                log_path=log_path, env=env)
    except DMLError as exc:
        if isinstance(exc, FatalError):  # the JVM did not start: no Spark error to look for
            raise
        logged = log_path.read_text(errors="replace").splitlines() if log_path.is_file() else []
        cause = _task_failure(logged)
        if not cause and "exit status" in str(exc):  # Spark failed outside the DML script
            cause = _spark_error(watch.errors)
        if cause:
            raise DMLError(f"Spark failed: {cause} (full log: {log_path})") from exc
        raise
    # SystemDS rejects bad command-line arguments with an ERROR line only, and exit status 0
    rejected = [line for line in watch.errors if " ERROR DMLScript: " in line]
    if rejected:
        raise DMLError(f"SystemDS failed: {rejected[0].split(': ', 1)[1]} (full log: {log_path})")
    return lines


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
