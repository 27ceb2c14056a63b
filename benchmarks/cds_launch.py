"""What class-data sharing (lars_systemml/cds.py) saves per SystemDS launch.

Not a test. Times launches with and without CDS (``LARS_SYSTEMML_CDS=1`` / ``0``),
alternating A/B and B/A so that a drift of the machine's load hits both alike:
- ``trivial``: a one-line DML script through ``runtime.run_dml`` in this process (the JVM
  start, SystemDS's start-up and compilation, next to no work); the per-process CRC check
  of the archive is repeated for every launch, as a new ``lars-systemml`` process does it;
- ``train``: ``lars-systemml train --train-size 256 --test-size 128 --epochs 1
  --batch-size 128`` as a subprocess (Python start, data loading and the training JVM).
Per variant: median, min and max wall seconds, and the median CPU seconds of the launched
processes (user + system; a shared machine's other jobs skew these much less than wall
time). Before the timed launches, one ``train`` without CDS prepares the data subset and
one ``trivial`` with CDS makes the archive in a fresh cache folder (its time is reported:
the one-off cost). Records the load average: on a loaded machine both columns are slower.

  python benchmarks/cds_launch.py --runs 8 --train-runs 5 --output results/bench/cds_launch.md
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from epoch_time import emit_report  # noqa: E402
from lars_systemml import cds, runtime  # noqa: E402

TRIVIAL_DML = 'x = sum(matrix(1, rows=3, cols=3))\nprint("@@x " + x)\n'
TRAIN_ARGS = ["--train-size", "256", "--test-size", "128", "--epochs", "1", "--batch-size", "128"]
VARIANTS = ("off", "on")  # LARS_SYSTEMML_CDS=0 / 1


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def set_cds(variant: str) -> None:
    os.environ[cds.ENV] = "1" if variant == "on" else "0"


def launch_trivial(script: Path, workdir: Path) -> None:
    cds._crc_matches.cache_clear()  # a new process checks the archive once
    cmd = runtime.local_command(script, {}, heap="2g", tmpdir=workdir / "java-tmp")
    lines = runtime.run_dml(cmd, cwd=workdir)
    if not any(line.startswith("@@x 9") for line in lines):
        raise SystemExit("the trivial script did not print its result:\n" + "\n".join(lines))


def launch_train(workdir: Path, data_dir: str | None) -> None:
    cmd = [sys.executable, "-m", "lars_systemml", "train", *TRAIN_ARGS, "--no-progress",
           "--output", str(workdir / "run"), *(["--data-dir", data_dir] if data_dir else [])]
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def timed(launch) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the launched processes) of one launch."""
    cpu0, t0 = children_cpu_seconds(), time.perf_counter()
    launch()
    return time.perf_counter() - t0, children_cpu_seconds() - cpu0


def alternate(launch, runs: int) -> dict[str, list[tuple[float, float]]]:
    """``runs`` launches per variant: pairs off/on, then on/off, and so on."""
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    for i in range(runs):
        for variant in (VARIANTS if i % 2 == 0 else VARIANTS[::-1]):
            set_cds(variant)
            times[variant].append(timed(launch))
            print(f"  {launch.__name__} cds={variant}: {times[variant][-1][0]:.2f} s", file=sys.stderr)
    return times


def table(results: dict[str, dict[str, list[tuple[float, float]]]]) -> list[str]:
    """One row per launch kind and variant; the 'on' rows say the saving in median seconds."""
    rows = ["| launch | CDS | runs | median s | min s | max s | median CPU s | saved (median wall / CPU) |",
            "|---|---|---|---|---|---|---|---|"]
    for kind, times in results.items():
        median = {v: statistics.median(w for w, _ in times[v]) for v in VARIANTS}
        cpu = {v: statistics.median(c for _, c in times[v]) for v in VARIANTS}
        for v in VARIANTS:
            walls = [w for w, _ in times[v]]
            saved = f"{median['off'] - median['on']:.2f} s / {cpu['off'] - cpu['on']:.2f} s" if v == "on" else ""
            rows.append(f"| {kind} | {v} | {len(walls)} | {median[v]:.2f} | {min(walls):.2f} | {max(walls):.2f} "
                        f"| {cpu[v]:.2f} | {saved} |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=8, help="trivial launches per variant")
    p.add_argument("--train-runs", type=int, default=5, help="tiny training runs per variant")
    p.add_argument("--data-dir", default=None, help="the MNIST folder (default: where training looks)")
    p.add_argument("--output", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cds-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["LARS_SYSTEMML_CACHE"] = str(tmp / "cache")  # a fresh archive; the subset once
        script = tmp / "trivial.dml"
        script.write_text(TRIVIAL_DML)

        def trivial():
            launch_trivial(script, tmp)

        def train():
            launch_train(tmp, args.data_dir)

        trivial.__name__, train.__name__ = "trivial", "train"
        set_cds("off")
        timed(train)  # prepares the data subset (and its data-preparing JVM) outside the timings
        set_cds("on")
        first = timed(trivial)  # makes the archive
        megabytes = sum(a.stat().st_size for a in cds.archive_dir().glob("systemds-*.jsa")) / 1e6
        results = {"trivial": alternate(trivial, args.runs)}
        if args.train_runs:
            results["train"] = alternate(train, args.train_runs)
    load = os.getloadavg()
    report = [f"# CDS launch benchmark ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
              f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f})", "",
              f"Java: {runtime.java_version_output(runtime.java_executable()).splitlines()[0]}; "
              f"first trivial launch with CDS (makes the archive, "
              f"{megabytes:.0f} MB): "
              f"{first[0]:.2f} s wall, {first[1]:.2f} s CPU.", "",
              "`python benchmarks/cds_launch.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
              "", *table(results), ""]
    emit_report("\n".join(report), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
