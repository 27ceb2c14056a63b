"""Measured cost of a training step on Spark, and a scaling model built from it (issue 23, items 3-4).

Not a test. Two commands (docs/scaling.md explains the method and the model):

``measure``: trains the same config (full MNIST by default, a few epochs) on the embedded
backend and on a local Spark standalone cluster with K = 1 and 2 workers (started and stopped
here, on 127.0.0.1 only: lars_systemml/standalone.py), for every batch size, through the
``lars-systemml train`` CLI with ``--stats`` and a Spark event log. Per step it splits the
training-loop time into worker compute, driver work (the optimizer update among it) and
communication, and counts the bytes moved. Writes ``OUT/measurements.json`` and
``OUT/measurements.md``; the run folders stay in ``OUT/runs/`` and the event logs in
``OUT/events/``.

``model``: fits t_step(B, K) = fixed + per_image * B/K + driver_per_image * B + comm(K)
(benchmarks/_scaling_model.py) to a measurements JSON, checks it against the measured points
(in sample and leave-one-out), and predicts seconds per epoch and the time to a target test
accuracy (epochs taken from the sweeps' runs) for K = 1..64 and batch 1024..32000. Writes
``OUT/model.json``, ``OUT/model.md`` and the figures ``OUT/*.png/svg`` (drawn from model.json
only: ``plot`` redraws them).

  python benchmarks/scaling.py measure --output results/scaling/parfor              # ~30 min quiet
  python benchmarks/scaling.py model --measurements results/scaling/parfor/measurements.json
  python benchmarks/scaling.py measure --train-size 600 --test-size 200 --epochs 2 \\
      --batch-sizes 128 256 --output /tmp/scaling-trial                              # a smoke run
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _scaling_logs as logs  # noqa: E402
import _scaling_model as sm  # noqa: E402

from lars_systemml import standalone  # noqa: E402
from lars_systemml.plot import _save as save_figure  # noqa: E402  (png + svg, atomic, closes the figure)

LENET5_PARAMS = 107786  # LeNet-5 with 10 classes (dml/models/lenet5.dml); used if a run saved no model
DEFAULT_CONFIG = ["--optimizer", "lars", "--lr", "10", "--schedule", "warmup_poly", "--warmup-epochs", "1",
                  "--poly-power", "0.25", "--include-biases"]


# ================================================================ measure


def _machine() -> dict:
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_before": os.getloadavg()}


def _train_argv(args, batch: int, out: Path) -> list[str]:
    argv = [sys.executable, "-m", "lars_systemml", "train", *DEFAULT_CONFIG, "--batch-size", str(batch),
            "--epochs", str(args.epochs), "--parallel-batches", str(args.parallel_batches),
            "--seed", str(args.seed), "--stats", "--no-progress", "--output", str(out)]
    if args.train_size:
        argv += ["--train-size", str(args.train_size)]
    if args.test_size:
        argv += ["--test-size", str(args.test_size)]
    return argv + list(args.train_arg)


def _spark_argv(args, cluster: standalone.Cluster, k: int, events: Path, scratch: Path) -> list[str]:
    argv = ["--backend", "spark", "--spark-master", cluster.url, "--driver-memory", args.driver_memory,
            "--executor-memory", args.executor_memory, "--spark-scratch", str(scratch)]
    if args.spark_mode != "parfor":  # parfor is the CLI's default mode; paramserv needs K
        argv += ["--spark-mode", args.spark_mode, "--workers", str(k)]
    for conf in ("spark.ui.enabled=false", "spark.eventLog.enabled=true", f"spark.eventLog.dir={events.resolve().as_uri()}",
                 "spark.eventLog.logBlockUpdates.enabled=true", f"spark.executor.cores={args.cores_per_worker}"):
        argv += ["--spark-conf", conf]
    return argv


def _run(argv: list[str], log: Path, watch_dir: Path | None) -> tuple[float, int]:
    """Run the CLI; (wall seconds, bytes seen in ``watch_dir``). Raises SystemExit on failure."""
    env = {**os.environ, "SPARK_LOCAL_IP": standalone.HOST}
    started = time.time()
    watch = logs.ScratchWatch(watch_dir) if watch_dir else None
    with open(log, "w") as out:
        if watch:
            watch_dir.mkdir(parents=True, exist_ok=True)
            with watch:
                code = subprocess.call(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        else:
            code = subprocess.call(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise SystemExit(f"a measurement run failed (exit {code}): see {log}")
    return time.time() - started, (watch.total_bytes if watch else 0)


def _model_bytes(run: Path) -> int:
    meta = run / "model" / "model.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        if isinstance(info.get("npar"), int):
            return 8 * info["npar"]  # dense doubles
    return 8 * LENET5_PARAMS


def steady_epochs(history: list[dict]) -> list[dict]:
    """The epochs after the first (compilation, JIT warm-up, Spark context), or all if only one."""
    return history[1:] if len(history) > 1 else history


def split_step(metrics: dict, stats: dict, events: dict | None, slots: int, scratch_bytes: int) -> dict:
    """Per-step seconds and bytes of one run (see docs/scaling.md, "How the split is obtained").

    ``step``: training-loop seconds per step over the steady epochs (metrics.json history).
    Spark parfor: ``compute`` = the tasks' critical path (event log, per job: the longest task
    or total task time / slots); ``comm`` = job span minus that (task launch, deserialising,
    result fetch) + the driver's broadcast, export and result-merge seconds (-stats, whole
    run, capped at the driver's time between jobs minus the update); ``driver`` = the rest (optimizer update, batch slicing, reshuffle); ``update`` = the
    ``update`` function's seconds per call (-stats), part of ``driver``.
    Embedded: ``comm`` = 0, ``driver`` = ``update``, ``compute`` = the rest.
    Paramserv (rougher: its -stats are whole-run totals): ``driver`` = the Paramserv model update
    (+ aggregation) time, ``comm`` = its broadcast + RPC time, ``compute`` = the rest.
    """
    history = metrics["history"]
    steady = steady_epochs(history)
    prev_steps = history[history.index(steady[0]) - 1]["steps"] if steady[0] is not history[0] else 0
    steady_steps = steady[-1]["steps"] - prev_steps
    loop = sum(r.get("loop_seconds", r["seconds"]) for r in steady)
    step = loop / max(1, steady_steps)
    total_steps = max(1, metrics["steps"])
    heavy = stats.get("heavy", {})
    update = heavy["update"][0] / heavy["update"][1] if "update" in heavy and heavy["update"][1] else None
    out = {"step": step, "steady_steps": steady_steps, "update": update, "bytes": {}}
    if metrics["backend"] != "spark":
        out.update(compute=step - (update or 0.0), driver=update or 0.0, comm=0.0, source="embedded")
        return out
    jobs = events["jobs"] if events else []
    if any(k.startswith("paramserv_") for k in stats):
        per = lambda key: stats.get(key, 0.0) / total_steps  # noqa: E731
        driver = per("paramserv_update_seconds") + per("paramserv_agg_seconds")
        comm = per("paramserv_broadcast_seconds") + per("paramserv_rpc_seconds")
        out.update(compute=step - driver - comm, driver=driver, comm=comm, source="paramserv stats (provisional)")
        steady_jobs, per_steps = jobs, total_steps
    else:
        epochs = max(1, metrics["epochs_run"])
        per_epoch = len(jobs) // epochs if len(jobs) % epochs == 0 else 0
        skip = per_epoch * (len(history) - len(steady))
        steady_jobs, per_steps = (jobs[skip:], steady_steps) if per_epoch else (jobs, total_steps)
        compute = sum(j.critical_path(slots) for j in steady_jobs) / per_steps
        scheduling = sum(j.span - j.critical_path(slots) for j in steady_jobs) / per_steps
        # the driver's own time between jobs, exact for the steady epochs; -stats (whole run,
        # first epoch included, so capped by what is left beside the update) says how much of it
        # was broadcast, export and result merge
        between = max(0.0, step - compute - scheduling - (update or 0.0))
        driver_comm = min(between, (stats.get("parfor_merge_seconds", 0.0) + stats.get("spark_broadcast_seconds", 0.0)
                                    + stats.get("cache_export_seconds", 0.0)) / total_steps)
        comm = scheduling + driver_comm
        out.update(compute=compute, comm=comm, driver=step - compute - comm, scheduling=scheduling,
                   driver_comm=driver_comm, jobs_per_step=len(steady_jobs) / per_steps, source="parfor: event log + stats")
    tasks = [t for j in steady_jobs for t in j.tasks]
    out["bytes"] = {
        "broadcast_to_executors": sum(j.broadcast_bytes for j in steady_jobs) / per_steps,
        "task_results": sum(t["result_bytes"] for t in tasks) / per_steps,
        "shuffle": sum(t["shuffle_read_bytes"] + t["shuffle_write_bytes"] for t in tasks) / per_steps,
        "input": sum(t["input_bytes"] for t in tasks) / per_steps,
        "scratch_seen": scratch_bytes / total_steps,
    }
    out["tasks_per_step"] = len(tasks) / per_steps
    out["task_cpu_over_run"] = (sum(t["cpu"] for t in tasks) / sum(t["run"] for t in tasks)
                                if tasks and sum(t["run"] for t in tasks) > 0 else None)
    return out


def measure_one(args, label: str, batch: int, k: int | None, cluster: standalone.Cluster | None) -> dict:
    out = Path(args.output).resolve()  # absolute: Spark takes file URIs
    run = out / "runs" / label
    events = out / "events" / label
    scratch = out / "scratch" / label
    for path in (events, scratch):
        shutil.rmtree(path, ignore_errors=True)
    argv = _train_argv(args, batch, run)
    if cluster is not None:
        events.mkdir(parents=True)
        argv += _spark_argv(args, cluster, k, events, scratch)
    else:
        argv += ["--heap", args.driver_memory]
    load = os.getloadavg()[0]
    print(f"[{time.strftime('%H:%M:%S')}] {label}: {' '.join(argv[2:])}", file=sys.stderr, flush=True)
    wall, scratch_bytes = _run(argv, out / "runs" / f"{label}.out", scratch if cluster else None)
    shutil.rmtree(scratch, ignore_errors=True)
    point = {"label": label, "backend": "spark" if cluster else "embedded",
             "mode": args.spark_mode if cluster else None, "workers": k if cluster else None,
             "cores_per_worker": args.cores_per_worker if cluster else None,
             "slots": (k or 1) * args.cores_per_worker if cluster else 1, "batch": batch,
             "wall_seconds": wall, "scratch_bytes": scratch_bytes, "load_before": load,
             "load_after": os.getloadavg()[0], "run": str(run.relative_to(out)),
             "events": str(events.relative_to(out)) if cluster else None}
    analyse(point, out)
    print(f"    {point['step']:.3f} s/step: compute {point['compute']:.3f}, driver {point['driver']:.3f}, "
          f"comm {point['comm']:.3f}", file=sys.stderr, flush=True)
    return point


def analyse(point: dict, out: Path) -> None:
    """(Re)compute a point's split and bytes from its run folder and event log under ``out``."""
    run = out / point["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    stats = logs.parse_stats((run / "systemds.log").read_text(errors="replace"))
    ev = None
    if point.get("events"):
        files = sorted((out / point["events"]).iterdir())
        ev = logs.parse_event_log(files[0]) if files else None
    point.update({"train_size": metrics["train_size"], "epochs": metrics["epochs_run"], "steps": metrics["steps"],
                  "parallel_batches": metrics["parallel_batches"], "train_seconds": metrics["train_seconds"],
                  "model_bytes": _model_bytes(run), "test_accuracy": metrics["test_accuracy"],
                  **split_step(metrics, stats, ev, point["slots"], point["scratch_bytes"]),
                  "stats": {k: v for k, v in stats.items() if k != "heavy"}, "heavy": stats.get("heavy", {})})


def _fill_embedded_update(points: list[dict]) -> None:
    """-stats prints the top 10 instructions only; locally the optimizer's ``update`` is
    usually not among them: take it from the Spark runs (same driver code, same model)."""
    spark_updates = [p["update"] for p in points if p["backend"] == "spark" and p["update"]]
    for p in points:
        if p["backend"] == "embedded" and p["update"] is None and spark_updates:
            p["update"] = statistics.median(spark_updates)
            p["driver"] = p["update"]
            p["compute"] = p["step"] - p["update"]
            p["source"] = "embedded (update from the Spark runs' -stats)"


def cmd_measure(args) -> int:
    out = Path(args.output)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    points = []
    machine = _machine()
    for rep in range(1, args.reps + 1):
        if args.embedded:
            for batch in args.batch_sizes:
                points.append(measure_one(args, f"embedded-b{batch}-r{rep}", batch, None, None))
        for k in args.workers:
            # the daemons' logs and the executors' folders (each holds a copy of SystemDS.jar) go
            # to a temporary folder, not the results
            with tempfile.TemporaryDirectory(prefix=f"scaling-k{k}-") as root, \
                    standalone.running(Path(root), workers=k, cores=args.cores_per_worker,
                                       memory=args.worker_memory, executor_log=False) as cluster:
                for batch in args.batch_sizes:
                    points.append(measure_one(args, f"{args.spark_mode}-k{k}-b{batch}-r{rep}", batch, k, cluster))
    _fill_embedded_update(points)
    shutil.rmtree(out / "scratch", ignore_errors=True)  # each run's scratch folder is gone already
    machine["load_after"] = os.getloadavg()
    result = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv),
              "machine": machine, "mode": args.spark_mode, "config": DEFAULT_CONFIG + list(args.train_arg),
              "points": points}
    (out / "measurements.json").write_text(json.dumps(result, indent=1))
    (out / "measurements.md").write_text(measurements_markdown(result))
    print(measurements_markdown(result))
    return 0


def cmd_reanalyse(args) -> int:
    """Recompute every point of OUT/measurements.json from its runs and event logs (no training)."""
    out = Path(args.folder)
    result = json.loads((out / "measurements.json").read_text())
    for point in result["points"]:
        analyse(point, out)
    _fill_embedded_update(result["points"])
    (out / "measurements.json").write_text(json.dumps(result, indent=1))
    (out / "measurements.md").write_text(measurements_markdown(result))
    print(measurements_markdown(result))
    return 0


def _mb(x) -> str:
    return "-" if x is None else f"{x / 1e6:.2f}"


def measurements_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Measured step cost ({result['mode']} mode)", "",
             f"`{result['command']}`  ", f"{result['created']}, {m['host']}: {m['cpu']}, {m['cores']} cores, "
             f"load average before {m['load_before'][0]:.1f}, after {m['load_after'][0]:.1f}.", "",
             "Seconds per training step over the epochs after the first; compute = the Spark tasks' "
             "critical path (embedded: step - update), comm = job span beyond it + the driver's "
             "broadcast/export/result merge, driver = the rest (update = the optimizer step, part of it). "
             "MB per step: broadcast pieces fetched by executors, bytes seen in the scratch folder "
             "(inputs exported, task results; a lower bound), task results returned through Spark.", "",
             "task CPU = the tasks' CPU time over their run time (well below 1: they waited for a core, "
             "or for I/O). load = the 1-minute load average when the run started.", "",
             "| backend | K (slots) | batch | s/step | compute | driver | update | comm | broadcast MB | "
             "scratch MB | result MB | task CPU | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in result["points"]:
        b = p.get("bytes", {})
        k = "-" if p["workers"] is None else f"{p['workers']} ({p['slots']})"
        upd = "-" if p["update"] is None else f"{p['update']:.3f}"
        lines.append(f"| {p['backend']} | {k} | {p['batch']} | {p['step']:.3f} | {p['compute']:.3f} | "
                     f"{p['driver']:.3f} | {upd} | {p['comm']:.3f} | {_mb(b.get('broadcast_to_executors'))} | "
                     f"{_mb(b.get('scratch_seen'))} | {_mb(b.get('task_results'))} | "
                     f"{'-' if p.get('task_cpu_over_run') is None else format(p['task_cpu_over_run'], '.2f')} | "
                     f"{p['load_before']:.1f} |")
    return "\n".join(lines) + "\n"


# ================================================================ model


def model_points(measurements: dict) -> list[dict]:
    """The Spark points of a measurements JSON, in the form _scaling_model.fit takes (K = task slots)."""
    return [{"batch": p["batch"], "workers": p["slots"], "compute": p["compute"], "driver": p["driver"],
             "comm": p["comm"], "step": p["step"], "label": p["label"], "bytes": moved_bytes(p)}
            for p in measurements["points"] if p["backend"] == "spark"]


def moved_bytes(point: dict) -> float | None:
    """Bytes moved per step between driver and executors: broadcast pieces fetched, files seen in
    the scratch folder, task results returned through Spark, shuffle; None if not measured."""
    b = point.get("bytes") or {}
    if not b:
        return None
    return sum(b.get(k, 0.0) for k in ("broadcast_to_executors", "scratch_seen", "task_results", "shuffle"))


def checks(points: list[dict], model_bytes: int, comm: str, bandwidth) -> list[dict]:
    """Predicted vs measured seconds per step for every point: fitted on all points (in sample)
    and on the points of the other (B, K) cells (leave-one-out, repetitions of the same cell left
    out too; None when none remain)."""
    c_all = sm.fit(points, model_bytes, comm, bandwidth)
    rows = []
    for p in points:
        others = [q for q in points if (q["batch"], q["workers"]) != (p["batch"], p["workers"])]
        loo = sm.step_seconds(sm.fit(others, model_bytes, comm, bandwidth), p["batch"], p["workers"]) if others else None
        rows.append({"label": p["label"], "batch": p["batch"], "workers": p["workers"], "measured": p["step"],
                     "in_sample": sm.step_seconds(c_all, p["batch"], p["workers"]), "leave_one_out": loo})
    return rows


def cmd_model(args) -> int:
    measurements = json.loads(Path(args.measurements).read_text())
    points = model_points(measurements)
    if not points:
        raise SystemExit(f"{args.measurements} has no Spark points to fit")
    model_bytes = statistics.median(p["model_bytes"] for p in measurements["points"])
    coef = sm.fit(points, int(model_bytes), args.comm, args.bandwidth)
    groups = sm.collect_epochs([Path(f) for f in args.results], args.target)
    if not groups:
        raise SystemExit(f"no runs/*/metrics.json under {' '.join(args.results)}")
    ks = list(range(1, args.k_max + 1))
    n = statistics.median(g["train_size"] for g in groups)
    grid = [{"batch": b, "workers": k, "step_seconds": sm.step_seconds(coef, b, k),
             "epoch_seconds": sm.epoch_seconds(coef, int(n), b, k)} for b in args.batches for k in ks]
    series = []
    for g in groups:
        series.append({**{k: g[k] for k in ("source", "optimizer", "batch_size", "train_size", "epochs_budget",
                                             "runs", "per_seed", "epochs", "reached")},
                       "time_to_target": [sm.time_to_target(coef, g, k) for k in ks]})
    small = [g for g in groups if g["optimizer"] == "sgd" and g["batch_size"] <= args.small_batch]
    large = [g for g in groups if g["optimizer"] in ("lars", "lamb") and g["batch_size"] >= args.large_from]
    cross = sm.crossover(coef, ks, small, large)
    # the small batches on one machine without Spark: t_step = fixed + per_image * B from the
    # embedded points (a K = 1 cluster with no communication)
    emb_points = [{"batch": p["batch"], "workers": 1, "compute": p["compute"], "driver": p["driver"], "comm": 0.0}
                  for p in measurements["points"] if p["backend"] == "embedded"]
    emb = sm.fit(emb_points, int(model_bytes)) if emb_points else None
    if emb:  # one machine: no K to fit
        emb.notes = [n for n in emb.notes if "'K' does not vary" not in n]
    if emb:
        timed = [(t, f"{g['optimizer']} B={g['batch_size']}") for g in small
                 if (t := sm.time_to_target(emb, g, 1)) is not None]
        best = min(timed) if timed else (None, None)
        cross["embedded_small"] = {"seconds": best[0], "group": best[1], "coefficients": emb.as_dict(),
                                   "beaten_from_k": next((r["workers"] for r in cross["rows"]
                                                          if r["large_seconds"] is not None and best[0] is not None
                                                          and r["large_seconds"] < best[0]), None)}
    embedded = [p for p in measurements["points"] if p["backend"] == "embedded"]
    result = {"measurements": str(args.measurements), "command": " ".join(sys.argv), "target": args.target,
              "train_size": n, "coefficients": coef.as_dict(), "checks": checks(points, int(model_bytes), args.comm,
                                                                               args.bandwidth),
              "embedded": [{"batch": p["batch"], "step": p["step"]} for p in embedded],
              "workers": ks, "grid": grid, "series": series,
              "small_batch": args.small_batch, "large_from": args.large_from, "crossover": cross,
              "best_workers": {str(b): sm.best_workers(coef, b, args.k_max) for b in args.batches},
              "measured_machine": measurements["machine"]}
    out = Path(args.output or Path(args.measurements).parent)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_text(json.dumps(result, indent=1))
    (out / "model.md").write_text(model_markdown(result))
    plot(result, out)
    print(model_markdown(result))
    return 0


def _s(x) -> str:
    if x is None:
        return "not reached"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def model_markdown(r: dict) -> str:
    c = r["coefficients"]
    form = "driver-centred: K * per_worker" if c["comm"] == "driver" else "ring allreduce (what-if)"
    bandwidth = "none (loopback measurement)" if not c["bandwidth"] else f"{c['bandwidth'] / 1e9:.2f} GB/s"
    lines = [f"# Scaling model (target test accuracy {r['target']:.0%})", "",
             f"`{r['command']}`", "",
             f"t_step(B, K) = fixed + per_image * B/K + driver_per_image * B + comm(K), comm {form}", "",
             f"- fixed {c['fixed']:.4f} s, per_image {c['per_image'] * 1e3:.4f} ms, driver_per_image "
             f"{c['driver_per_image'] * 1e3:.4f} ms, per_worker {c['per_worker']:.4f} s, model "
             f"{c['model_bytes'] / 1e6:.2f} MB, bandwidth {bandwidth}"]
    if c.get("bytes_per_worker") is not None:
        lines.append(f"- bytes per step (fitted to the measured ones): {c['bytes_fixed'] / 1e6:.2f} MB + K * "
                     f"({c['bytes_per_worker'] / 1e6:.2f} MB + {c['bytes_per_worker_image']:.0f} B per image)"
                     + ("" if c["bandwidth"] else "; used only with --bandwidth"))
    lines += [f"- note: {n}" for n in c["notes"]]
    lines += ["", "## Check against the measured points", "",
              "| point | B | K | measured s/step | fitted (in sample) | leave-one-out |", "|---|---|---|---|---|---|"]
    for ch in r["checks"]:
        loo = "-" if ch["leave_one_out"] is None else f"{ch['leave_one_out']:.3f} ({ch['leave_one_out'] / ch['measured'] - 1:+.0%})"
        lines.append(f"| {ch['label']} | {ch['batch']} | {ch['workers']} | {ch['measured']:.3f} | "
                     f"{ch['in_sample']:.3f} ({ch['in_sample'] / ch['measured'] - 1:+.0%}) | {loo} |")
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k in r["workers"]]
    lines += ["", f"## Seconds per epoch (N = {r['train_size']:.0f})", "",
              "| batch | " + " | ".join(f"K={k}" for k in ks) + " | best K |", "|---" * (len(ks) + 2) + "|"]
    for b in sorted({g["batch"] for g in r["grid"]}):
        row = {g["workers"]: g["epoch_seconds"] for g in r["grid"] if g["batch"] == b}
        lines.append(f"| {b} | " + " | ".join(_s(row[k]) for k in ks) + f" | {r['best_workers'][str(b)]} |")
    lines += ["", f"## Seconds of training to {r['target']:.0%} test accuracy", "",
              "epochs = median over seeds of the first epoch at the target (a seed that never got "
              "there counts as never; not reached unless more than half did).", "",
              "| sweep | optimizer | batch | epochs (per seed) | " + " | ".join(f"K={k}" for k in ks) + " |",
              "|---" * (len(ks) + 4) + "|"]
    for s in [s for s in r["series"] if s["epochs"] is not None]:
        per_seed = ",".join("-" if e is None else str(e) for e in s["per_seed"])
        times = {k: t for k, t in zip(r["workers"], s["time_to_target"])}
        lines.append(f"| {s['source']} | {s['optimizer']} | {s['batch_size']} | {_s(s['epochs'])} ({per_seed}) | "
                     + " | ".join(_s(times[k]) for k in ks) + " |")
    missed = [f"{s['source']} {s['optimizer']} B={s['batch_size']}" for s in r["series"] if s["epochs"] is None]
    if missed:
        lines += ["", "Not reached: " + ", ".join(missed) + "."]
    cross = r["crossover"]
    lines += ["", f"## When does a large batch (LARS/LAMB, B >= {r['large_from']}) beat a small one "
              f"(SGD, B <= {r['small_batch']})?", "",
              "| K | fastest small batch | seconds | fastest large batch | seconds |", "|---|---|---|---|---|"]
    for row in cross["rows"]:
        if row["workers"] in ks:
            lines.append(f"| {row['workers']} | {row['small'] or '-'} | {_s(row['small_seconds'])} | "
                         f"{row['large'] or '-'} | {_s(row['large_seconds'])} |")
    lines += ["", f"- at the same K: from K = {cross['first_k'] or 'never (up to ' + str(r['workers'][-1]) + ')'}",
              f"- against the small batches at their own best K ({_s(cross['small_best_seconds'])} s): from K = "
              f"{cross['vs_best_small'] or 'never (up to ' + str(r['workers'][-1]) + ')'}"]
    emb = cross.get("embedded_small")
    if emb and emb["seconds"] is not None:
        e = emb["coefficients"]
        lines.append(f"- embedded backend fit: fixed {e['fixed']:.4f} s + {e['per_image'] * 1e3:.4f} ms per image"
                     + "".join(f"; note: {n}" for n in e["notes"]))
        lines.append(f"- against the fastest small batch on the embedded backend (one machine, no Spark; fitted "
                     f"on the embedded points: {emb['group']}, {_s(emb['seconds'])} s): from K = "
                     f"{emb['beaten_from_k'] or 'never (up to ' + str(r['workers'][-1]) + ')'}")
    return "\n".join(lines) + "\n"


COLORS = {"sgd": "tab:blue", "lars": "tab:orange", "lamb": "tab:green"}


def plot(r: dict, out: Path) -> list[Path]:
    """Figures from model.json's content: time to target vs K (one line per sweep, optimizer and
    batch that reached it) and seconds per epoch vs K per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = r["workers"]
    written = []
    cmaps = {"sgd": "Blues", "lars": "Oranges", "lamb": "Greens"}
    fig, ax = plt.subplots(figsize=(8.5, 6))
    shown = [s for s in r["series"] if s["epochs"] is not None and (
        (s["optimizer"] == "sgd" and s["batch_size"] <= r["small_batch"])
        or (s["optimizer"] in ("lars", "lamb") and s["batch_size"] >= r["large_from"]))]
    for s in shown:
        shade = 0.45 + 0.5 * math.log(s["batch_size"] / 16) / math.log(32000 / 16)
        color = plt.get_cmap(cmaps.get(s["optimizer"], "Greys"))(min(shade, 0.95))
        ax.plot(ks, [t / 60 for t in s["time_to_target"]], color=color, lw=1.0,
                label=f"{s['optimizer']} B={s['batch_size']} ({s['source']}, {_s(s['epochs'])} ep)")
    cross = r["crossover"]
    for key, label, color in (("small_seconds", f"fastest SGD, B <= {r['small_batch']}", "tab:blue"),
                              ("large_seconds", f"fastest LARS/LAMB, B >= {r['large_from']}", "tab:red")):
        pts = [(row["workers"], row[key] / 60) for row in cross["rows"] if row[key] is not None]
        if pts:
            ax.plot(*zip(*pts), color=color, lw=3, alpha=0.5, label=label)
    if cross.get("first_k"):
        ax.axvline(cross["first_k"], color="gray", lw=1, ls="--", label=f"large batch faster from K={cross['first_k']}")
    emb = cross.get("embedded_small")
    if emb and emb.get("seconds"):
        ax.axhline(emb["seconds"] / 60, color="black", lw=1.2, ls=(0, (1, 2)),
                   label=f"{emb['group']} on the embedded backend (1 machine)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("workers K (one task slot each)")
    ax.set_ylabel(f"predicted minutes of training to {r['target']:.0%} test accuracy")
    c = r["coefficients"]
    ax.set_title(f"Time to {r['target']:.0%}: driver-centred Spark step model fitted on this machine's K=1,2"
                 if c["comm"] == "driver" else f"Time to {r['target']:.0%} ({c['comm']} communication, what-if)",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    written += save_figure(fig, out, "time_to_target")

    fig, ax = plt.subplots(figsize=(7, 5))
    for b in sorted({g["batch"] for g in r["grid"]}):
        ax.plot(ks, [g["epoch_seconds"] for g in r["grid"] if g["batch"] == b], label=f"B={b}")
    for e in r.get("embedded", []):
        ax.axhline(e["step"] * math.ceil(r["train_size"] / e["batch"]), color="gray", lw=0.8, ls=":")
        ax.annotate(f"embedded B={e['batch']}", (ks[-1], e["step"] * math.ceil(r["train_size"] / e["batch"])),
                    fontsize=7, color="gray", ha="right", va="bottom")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("workers K")
    ax.set_ylabel("predicted seconds per epoch (dotted: embedded backend, measured)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    written += save_figure(fig, out, "epoch_seconds")
    return written


def cmd_plot(args) -> int:
    path = Path(args.model_json)
    for p in plot(json.loads(path.read_text()), path.parent):
        print(p)
    return 0


# ================================================================ command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="measure the step cost on the embedded backend and a local cluster")
    m.add_argument("--output", default="results/scaling/parfor", help="folder for measurements.json/.md and runs")
    m.add_argument("--spark-mode", default="parfor",
                   help="the CLI's --spark-mode: parfor (default) or paramserv (passed with --workers K)")
    m.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 16384])
    m.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="cluster sizes (workers) to measure")
    m.add_argument("--cores-per-worker", type=int, default=1, help="cores (task slots) per worker")
    m.add_argument("--worker-memory", default="3g", help="memory each worker offers its executor")
    m.add_argument("--executor-memory", default="3g")
    m.add_argument("--driver-memory", default="4g", help="also the embedded runs' --heap")
    m.add_argument("--epochs", type=int, default=3, help="the first is left out of the per-step times")
    m.add_argument("--train-size", type=int, default=None, help="default: all (60000)")
    m.add_argument("--test-size", type=int, default=1000)
    m.add_argument("--parallel-batches", type=int, default=4, help="micro-batches per step (>= the task slots)")
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--reps", type=int, default=1, help="repetitions, interleaved")
    m.add_argument("--no-embedded", dest="embedded", action="store_false", help="skip the embedded runs")
    m.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `lars-systemml train`, repeatable (e.g. --train-arg=--model=mlp)")
    m.set_defaults(func=cmd_measure)

    r = sub.add_parser("reanalyse", help="recompute a measurements.json from its runs (no training)")
    r.add_argument("folder", help="the --output folder of `measure`")
    r.set_defaults(func=cmd_reanalyse)

    f = sub.add_parser("model", help="fit the step model and predict epoch time and time to a target")
    f.add_argument("--measurements", required=True, help="a measurements.json written by `measure`")
    f.add_argument("--results", nargs="+", default=["results/tuned", "results/paper"],
                   help="sweep folders with runs/*/metrics.json")
    f.add_argument("--target", type=float, default=0.98)
    f.add_argument("--k-max", type=int, default=64)
    f.add_argument("--batches", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32000])
    f.add_argument("--comm", choices=sm.COMM_FORMS, default="driver", help="driver-centred (our Spark modes) "
                   "or ring allreduce (what-if)")
    f.add_argument("--bandwidth", type=float, default=None, help="network bytes/s for the wire term "
                   "(default: none, the loopback measurement; 1.25e9 = 10 Gbit/s)")
    f.add_argument("--small-batch", type=int, default=1024, help="SGD batches up to this size are the small batches")
    f.add_argument("--large-from", type=int, default=8192, help="LARS/LAMB batches from this size count as large")
    f.add_argument("--output", default=None, help="default: the measurements' folder")
    f.set_defaults(func=cmd_model)

    g = sub.add_parser("plot", help="redraw the figures from a model.json")
    g.add_argument("model_json")
    g.set_defaults(func=cmd_plot)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
