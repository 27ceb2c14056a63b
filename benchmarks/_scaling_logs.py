"""Readers for what a training run records about its own cost (used by benchmarks/scaling.py).

- ``parse_stats``: the SystemDS ``-stats`` block of a run's systemds.log (heavy hitters and the
  scalar lines: ParFor result merge, Spark broadcasts, scratch exports, Spark context creation,
  and the Paramserv lines of a paramserv run).
- ``parse_event_log``: a Spark 3.5 event log (``spark.eventLog.enabled=true``, JSON lines) as one
  record per job: its span on the driver, its tasks' run/CPU/deserialize times, result and
  shuffle bytes, and the bytes of the broadcast blocks the executors fetched while it ran
  (needs ``spark.eventLog.logBlockUpdates.enabled=true``).
- ``ScratchWatch``: polls a scratch folder and keeps the largest size seen of every file (the
  files SystemDS's remote parfor writes and deletes: exported inputs, task results).

Times in seconds, sizes in bytes.
"""
from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

# "  3  update   1.503   3" in the heavy-hitter table
_HEAVY = re.compile(r"^\s*\d+\s+(\S+)\s+([\d.]+)\s+(\d+)\s*$")
_SCALARS = {
    "spark_context_seconds": r"Spark ctx create time \(lazy\):\s*([\d.]+)",
    "parfor_merge_seconds": r"ParFor result merge time:\s*([\d.]+)",
    "cache_export_seconds": r"Cache times \(ACQr/m, RLS, EXP\):\s*[\d.]+/[\d.]+/[\d.]+/([\d.]+)",
    "total_elapsed_seconds": r"Total elapsed time:\s*([\d.]+)",
    "compile_seconds": r"Total compilation time:\s*([\d.]+)",
    "jvm_gc_seconds": r"Total JVM GC time:\s*([\d.]+)",
    "paramserv_total_seconds": r"Paramserv total execution time:\s*([\d.]+)",
    "paramserv_workers": r"Paramserv total num workers:\s*(\d+)",
    "paramserv_setup_seconds": r"Paramserv setup time:\s*([\d.]+)",
    "paramserv_grad_seconds": r"Paramserv grad compute time:\s*([\d.]+)",
    # "x/y secs": SystemDS prints the global and the local (worker-side) model update times
    "paramserv_update_seconds": r"Paramserv model update time:\s*([\d.]+)",
    "paramserv_local_update_seconds": r"Paramserv model update time:\s*[\d.]+/([\d.]+)",
    "paramserv_broadcast_seconds": r"Paramserv model broadcast time:\s*([\d.]+)",
    "paramserv_slice_seconds": r"Paramserv batch slice time:\s*([\d.]+)",
    "paramserv_rpc_seconds": r"Paramserv RPC request time:\s*([\d.]+)",
    "paramserv_agg_seconds": r"PS fed global model agg time:\s*([\d.]+)",
}


def parse_stats(text: str) -> dict:
    """The -stats block of a SystemDS log as ``{"heavy": {name: [seconds, count]}, <scalar>: value}``.

    Scalars missing from the log are absent; ``spark_broadcasts``/``spark_broadcast_seconds``
    come from "Spark trans counts/times (par,bc,col)". Only the top-10 heavy hitters are
    printed by ``-stats``, so a name missing from ``heavy`` may just have been cheap.
    """
    start = text.rfind("SystemDS Statistics:")
    if start < 0:
        return {"heavy": {}}
    block = text[start:]
    out: dict = {"heavy": {}}
    for key, pattern in _SCALARS.items():
        m = re.search(pattern, block)
        if m:
            out[key] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    m = re.search(r"Spark trans counts \(par,bc,col\):\s*(\d+)/(\d+)/(\d+)", block)
    if m:
        out["spark_broadcasts"] = int(m.group(2))
    m = re.search(r"Spark trans times \(par,bc,col\):\s*[\d.]+/([\d.]+)/[\d.]+", block)
    if m:
        out["spark_broadcast_seconds"] = float(m.group(1))
    heavy = block.split("Heavy hitter instructions:", 1)
    if len(heavy) == 2:
        for line in heavy[1].splitlines():
            m = _HEAVY.match(line)
            if m:
                out["heavy"][m.group(1)] = [float(m.group(2)), int(m.group(3))]
            elif out["heavy"]:  # the table ended
                break
    return out


@dataclass
class Job:
    """One Spark job: driver-side span, its tasks, and the broadcast bytes fetched during it."""

    job_id: int
    submitted: float  # seconds (epoch time)
    completed: float | None = None
    tasks: list[dict] = field(default_factory=list)
    broadcast_bytes: int = 0  # broadcast pieces fetched by executors while the job ran

    @property
    def span(self) -> float:
        return (self.completed - self.submitted) if self.completed is not None else 0.0

    def critical_path(self, slots: int) -> float:
        """Seconds of task work on the busiest path: the longest task, or the total task time
        spread over the ``slots`` task slots when there are more tasks than slots."""
        runs = [t["run"] for t in self.tasks]
        return max(max(runs, default=0.0), sum(runs) / max(1, slots))

    def as_dict(self) -> dict:
        return {"job_id": self.job_id, "span": self.span, "tasks": self.tasks,
                "broadcast_bytes": self.broadcast_bytes}


def _task(event: dict) -> dict:
    m = event.get("Task Metrics") or {}
    info = event.get("Task Info") or {}
    shuffle_r = m.get("Shuffle Read Metrics") or {}
    shuffle_w = m.get("Shuffle Write Metrics") or {}
    return {
        "executor": info.get("Executor ID"),
        "run": m.get("Executor Run Time", 0) / 1e3,
        "cpu": m.get("Executor CPU Time", 0) / 1e9,
        "deserialize": m.get("Executor Deserialize Time", 0) / 1e3,
        "gc": m.get("JVM GC Time", 0) / 1e3,
        "result_bytes": m.get("Result Size", 0),
        "shuffle_read_bytes": shuffle_r.get("Remote Bytes Read", 0) + shuffle_r.get("Local Bytes Read", 0),
        "shuffle_write_bytes": shuffle_w.get("Shuffle Bytes Written", 0),
        "input_bytes": (m.get("Input Metrics") or {}).get("Bytes Read", 0),
        "wall": (info.get("Finish Time", 0) - info.get("Launch Time", 0)) / 1e3,
        "ok": (event.get("Task End Reason") or {}).get("Reason") == "Success",
    }


def parse_event_log(path: Path) -> dict:
    """A Spark event log as ``{"jobs": [Job, ...], "executors": n, "app_seconds": s}``.

    A broadcast piece counts once per executor that stored it (a fetch from the driver or a
    peer); it is charged to the job that was running (the last one submitted) at the time.
    """
    jobs: dict[int, Job] = {}
    stage_job: dict[int, Job] = {}
    current: Job | None = None
    seen_pieces: set[tuple[str, str]] = set()
    executors: set[str] = set()
    app = [None, None]
    with open(path) as f:
        for line in f:
            e = json.loads(line)
            kind = e.get("Event")
            if kind == "SparkListenerJobStart":
                current = jobs[e["Job ID"]] = Job(e["Job ID"], e["Submission Time"] / 1e3)
                stage_job.update({stage: current for stage in e.get("Stage IDs", [])})
            elif kind == "SparkListenerJobEnd" and e["Job ID"] in jobs:
                jobs[e["Job ID"]].completed = e["Completion Time"] / 1e3
            elif kind == "SparkListenerTaskEnd":
                if e["Stage ID"] in stage_job:
                    stage_job[e["Stage ID"]].tasks.append(_task(e))
            elif kind == "SparkListenerExecutorAdded":
                executors.add(e["Executor ID"])
            elif kind == "SparkListenerApplicationStart":
                app[0] = e["Timestamp"] / 1e3
            elif kind == "SparkListenerApplicationEnd":
                app[1] = e["Timestamp"] / 1e3
            elif kind == "SparkListenerBlockUpdated":
                info = e["Block Updated Info"]
                executor = info["Block Manager ID"]["Executor ID"]
                block = info["Block ID"]
                if (executor != "driver" and block.startswith("broadcast_") and "_piece" in block
                        and (executor, block) not in seen_pieces and info["Memory Size"] + info["Disk Size"] > 0):
                    seen_pieces.add((executor, block))
                    if current is not None:
                        current.broadcast_bytes += info["Memory Size"] + info["Disk Size"]
    return {"jobs": [jobs[k] for k in sorted(jobs)], "executors": len(executors),
            "app_seconds": (app[1] - app[0]) if None not in app else None}


class ScratchWatch:
    """Polls ``folder`` every ``interval`` s while in a ``with`` block; ``files`` maps every path
    seen to its largest size. Files that live shorter than the interval are missed, so the
    total is a lower bound on the bytes written there."""

    def __init__(self, folder: Path, interval: float = 0.02):
        self.folder = Path(folder)
        self.interval = interval
        self.files: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for dirpath, _, names in os.walk(self.folder):
                for name in names:
                    if name.endswith(".crc"):
                        continue
                    path = os.path.join(dirpath, name)
                    try:
                        size = os.stat(path).st_size
                    except OSError:
                        continue
                    if size > self.files.get(path, -1):
                        self.files[path] = size
            self._stop.wait(self.interval)

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    def __enter__(self) -> "ScratchWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
