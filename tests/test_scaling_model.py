"""The pure part of benchmarks/scaling.py: the step-time formula, its fit, the epochs-to-target
extraction from a results folder, and the log readers (no JVM; the timings are not tested)."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sm = load("_scaling_model")
logs = load("_scaling_logs")


def coef(**kw):
    base = dict(fixed=0.2, per_image=1e-3, driver_per_image=1e-5, per_worker=0.05, model_bytes=862288)
    return sm.Coefficients(**{**base, **kw})


def test_step_formula_adds_its_terms():
    c = coef()
    # 0.2 + 1e-3 * 1024 / 4 + 1e-5 * 1024 + 4 * 0.05
    assert sm.step_seconds(c, 1024, 4) == pytest.approx(0.2 + 0.256 + 0.01024 + 0.2)
    wired = coef(bandwidth=1e9)  # no measured bytes: 2 model sizes per worker
    assert sm.comm_seconds(wired, 512, 3) == pytest.approx(3 * (0.05 + 2 * 862288 / 1e9))
    shipped = coef(bandwidth=1e9, bytes_fixed=1e6, bytes_per_worker=9e5, bytes_per_worker_image=800.0)
    assert sm.wire_bytes(shipped, 1024, 2) == pytest.approx(1e6 + 2 * (9e5 + 800.0 * 1024))
    assert sm.comm_seconds(shipped, 1024, 2) == pytest.approx(2 * 0.05 + sm.wire_bytes(shipped, 1024, 2) / 1e9)
    ring = coef(comm="ring", bandwidth=1e9)
    assert sm.comm_seconds(ring, 512, 1) == 0.0  # one worker: nothing to exchange
    assert sm.comm_seconds(ring, 512, 4) == pytest.approx(6 * 0.05 + 1.5 * 862288 / 1e9)
    with pytest.raises(ValueError, match="unknown communication form"):
        sm.step_seconds(coef(comm="mesh"), 10, 2)
    with pytest.raises(ValueError):
        sm.step_seconds(c, 0, 1)


def test_epoch_charges_the_last_smaller_batch_at_its_size():
    c = coef()
    assert sm.steps_per_epoch(60000, 16384) == 4 and sm.steps_per_epoch(60000, 32000) == 2
    assert sm.steps_per_epoch(100, 1000) == 1
    # 60000 = 3 * 16384 + 10848
    want = 3 * sm.step_seconds(c, 16384, 2) + sm.step_seconds(c, 10848, 2)
    assert sm.epoch_seconds(c, 60000, 16384, 2) == pytest.approx(want)
    assert sm.epoch_seconds(c, 60000, 1000, 2) == pytest.approx(60 * sm.step_seconds(c, 1000, 2))


def test_monotonicity():
    c = coef()
    ks = range(1, 65)
    # a bigger batch never makes a step shorter
    for k in (1, 8, 64):
        steps = [sm.step_seconds(c, b, k) for b in (1024, 2048, 4096, 16384, 32000)]
        assert steps == sorted(steps)
    # without communication, more workers never make an epoch longer
    free = coef(per_worker=0.0)
    times = [sm.epoch_seconds(free, 60000, 16384, k) for k in ks]
    assert all(a >= b for a, b in zip(times, times[1:]))
    # driver-centred: the step falls until K* = sqrt(per_image * B / per_worker), then rises
    b = 16384
    k_star = math.sqrt(c.per_image * b / c.per_worker)  # 18.1
    best = sm.best_workers(c, b, 64)
    assert abs(best - k_star) <= 1
    steps = [sm.step_seconds(c, b, k) for k in ks]
    assert all(x > y for x, y in zip(steps[:best - 1], steps[1:best]))
    assert all(x < y for x, y in zip(steps[best - 1:], steps[best:]))
    # so a larger batch scales to more workers
    assert sm.best_workers(c, 32000, 64) > sm.best_workers(c, 1024, 64)


def test_fit_recovers_the_coefficients_of_exact_points():
    truth = coef(fixed=0.0)
    points = []
    for b in (1024, 16384):
        for k in (1, 2):
            points.append({"batch": b, "workers": k, "compute": 0.1 + truth.per_image * b / k,
                           "driver": 0.05 + 2e-6 * b, "comm": 0.02 + truth.per_worker * k + 8e-6 * b,
                           "bytes": 3.5e6 + k * (9e5 + 700.0 * b)})
    got = sm.fit(points, model_bytes=862288)
    assert got.per_image == pytest.approx(truth.per_image)
    assert got.per_worker == pytest.approx(truth.per_worker)
    assert got.driver_per_image == pytest.approx(1e-5)
    assert got.fixed == pytest.approx(0.17)
    assert (got.bytes_fixed, got.bytes_per_worker, got.bytes_per_worker_image) == pytest.approx((3.5e6, 9e5, 700.0))
    assert got.notes == []
    for p in points:
        assert sm.step_seconds(got, p["batch"], p["workers"]) == pytest.approx(p["compute"] + p["driver"] + p["comm"])


def test_fit_names_what_the_points_cannot_determine():
    points = [{"batch": b, "workers": 1, "compute": 1e-3 * b, "driver": 0.1, "comm": 0.3 - 1e-6 * b}
              for b in (100, 200)]
    got = sm.fit(points, model_bytes=8)
    assert got.per_worker == 0.0 and any("'K' does not vary" in n for n in got.notes)
    assert got.driver_per_image == 0.0  # -1e-6 fitted: noise, clamped
    assert any("driver_per_image fitted negative" in n for n in got.notes)
    # a negative intercept (a steep line through two noisy points) is no step time
    steep = [{"batch": b, "workers": 1, "compute": t, "driver": 0.0, "comm": 0.0} for b, t in ((1000, 0.5), (2000, 2.0))]
    fitted = sm.fit(steep, model_bytes=8)
    assert fitted.fixed == 0.0 and any("fixed fitted negative" in n for n in fitted.notes)
    assert sm.step_seconds(fitted, 32, 1) > 0
    # one batch size: bytes ~ K and ~ K*B cannot be told apart
    same_b = [{"batch": 100, "workers": k, "compute": 1.0 / k, "driver": 0.1, "comm": 0.1 * k, "bytes": 5e5 * k}
              for k in (1, 2)]
    assert any("collinear" in n for n in sm.fit(same_b, model_bytes=8).notes)
    with pytest.raises(ValueError, match="no measured points"):
        sm.fit([], model_bytes=8)


def write_run(folder: Path, name: str, optimizer: str, batch: int, accuracies: list, epochs: int = None):
    run = folder / "runs" / name
    run.mkdir(parents=True)
    history = [{"epoch": i + 1, "test_accuracy": a, "steps": (i + 1) * 10} for i, a in enumerate(accuracies)]
    run.joinpath("metrics.json").write_text(json.dumps({
        "optimizer": optimizer, "batch_size": batch, "train_size": 60000, "epochs": epochs or len(accuracies),
        "diverged": False, "history": history}))


def test_epochs_to_target_from_a_results_folder(tmp_path):
    assert sm.epochs_to_target([{"epoch": 1, "test_accuracy": None}, {"epoch": 2, "test_accuracy": 0.981}], 0.98) == 2
    assert sm.epochs_to_target([{"epoch": 1, "test_accuracy": 0.98}], 0.98) == 1
    assert sm.epochs_to_target([{"epoch": 1, "test_accuracy": 0.97}], 0.98) is None

    sweep = tmp_path / "tuned"
    write_run(sweep, "lars-b16384-s1", "lars", 16384, [0.9, 0.97, 0.981, 0.99])
    write_run(sweep, "lars-b16384-s2", "lars", 16384, [0.9, 0.98, 0.97, 0.99])
    write_run(sweep, "lars-b16384-s3", "lars", 16384, [0.9, 0.95, 0.97, 0.975])   # never
    write_run(sweep, "sgd-b1024-s1", "sgd", 1024, [0.96, 0.979, 0.985])
    write_run(sweep, "lamb-b32000-s1", "lamb", 32000, [0.5, 0.97])                # never
    write_run(sweep, "lamb-b32000-s2", "lamb", 32000, [0.5, 0.99])
    other = tmp_path / "paper"
    write_run(other, "sgd-b1024-s42", "sgd", 1024, [0.99])
    groups = {(g["source"], g["optimizer"], g["batch_size"]): g for g in sm.collect_epochs([sweep, other], 0.98)}
    assert set(groups) == {("tuned", "lars", 16384), ("tuned", "sgd", 1024), ("tuned", "lamb", 32000),
                           ("paper", "sgd", 1024)}
    lars = groups[("tuned", "lars", 16384)]
    assert lars["per_seed"] == [3, 2, None] and lars["reached"] == 2
    assert lars["epochs"] == 3  # median of 2, 3, never
    assert groups[("tuned", "lamb", 32000)]["epochs"] is None  # one of two seeds: not more than half
    assert groups[("tuned", "sgd", 1024)]["epochs"] == 3
    assert groups[("paper", "sgd", 1024)]["epochs"] == 1

    c = coef()
    assert sm.time_to_target(c, lars, 4) == pytest.approx(3 * sm.epoch_seconds(c, 60000, 16384, 4))
    assert sm.time_to_target(c, groups[("tuned", "lamb", 32000)], 4) is None


def test_crossover_finds_the_first_k_where_the_large_batch_wins():
    c = coef(fixed=0.2, per_image=1e-3, per_worker=0.05, driver_per_image=0.0)
    small = {"optimizer": "sgd", "batch_size": 1024, "train_size": 60000, "epochs": 3}
    large = [{"optimizer": "lars", "batch_size": 16384, "train_size": 60000, "epochs": 16},
             {"optimizer": "lamb", "batch_size": 32000, "train_size": 60000, "epochs": None}]
    ks = list(range(1, 65))
    got = sm.crossover(c, ks, [small], large)
    # check it by brute force
    t_small = {k: sm.time_to_target(c, small, k) for k in ks}
    t_large = {k: sm.time_to_target(c, large[0], k) for k in ks}
    want = next(k for k in ks if t_large[k] < t_small[k])
    assert got["first_k"] == want > 1
    assert got["small_best_seconds"] == pytest.approx(min(t_small.values()))
    assert got["rows"][0]["large"] == "lars B=16384"
    # with free communication and no fixed cost the small batch always wins (fewer epochs)
    free = coef(fixed=0.0, per_worker=0.0, driver_per_image=0.0)
    assert sm.crossover(free, ks, [small], large)["first_k"] is None
    # several small batches: the fastest of them at each K
    tiny = {"optimizer": "sgd", "batch_size": 64, "train_size": 60000, "epochs": 1}
    both = sm.crossover(c, ks, [small, tiny], large)
    assert both["rows"][0]["small_seconds"] == pytest.approx(min(t_small[1], sm.time_to_target(c, tiny, 1)))


STATS = """\
SystemDS Statistics:
Total elapsed time:		50.898 sec.
Total compilation time:		18.009 sec.
Spark ctx create time (lazy):	9.882 sec.
Spark trans counts (par,bc,col):0/10/0.
Spark trans times (par,bc,col):	0.000/0.881/0.000 secs.
Cache times (ACQr/m, RLS, EXP):	1.461/0.110/0.141/1.164 sec.
ParFor result merge time:	1.351 sec.
Paramserv model update time:	2.500/0.125 secs.
Heavy hitter instructions:
  #  Instruction            Time(s)  Count
  1  micro_batch_gradients   25.879      3
  2  ParFor-ESP              22.232      3
  3  update                   1.432      3

"""


def test_stats_block_is_parsed():
    s = logs.parse_stats("noise before\n" + STATS)
    assert s["heavy"] == {"micro_batch_gradients": [25.879, 3], "ParFor-ESP": [22.232, 3], "update": [1.432, 3]}
    assert s["spark_context_seconds"] == 9.882 and s["parfor_merge_seconds"] == 1.351
    assert s["cache_export_seconds"] == 1.164 and s["spark_broadcasts"] == 10
    assert s["spark_broadcast_seconds"] == 0.881
    assert s["paramserv_update_seconds"] == 2.5 and s["paramserv_local_update_seconds"] == 0.125
    assert logs.parse_stats("no statistics") == {"heavy": {}}


def test_event_log_jobs_tasks_and_broadcast_bytes(tmp_path):
    def task(stage, executor, run_ms, result):
        return {"Event": "SparkListenerTaskEnd", "Stage ID": stage, "Task End Reason": {"Reason": "Success"},
                "Task Info": {"Executor ID": executor, "Launch Time": 1000, "Finish Time": 1000 + run_ms},
                "Task Metrics": {"Executor Run Time": run_ms, "Executor CPU Time": run_ms * 10 ** 6,
                                 "Result Size": result}}

    def block(executor, block_id, size):
        return {"Event": "SparkListenerBlockUpdated", "Block Updated Info": {
            "Block Manager ID": {"Executor ID": executor}, "Block ID": block_id, "Memory Size": size, "Disk Size": 0}}

    events = [
        {"Event": "SparkListenerApplicationStart", "Timestamp": 0},
        {"Event": "SparkListenerExecutorAdded", "Executor ID": "0"},
        {"Event": "SparkListenerExecutorAdded", "Executor ID": "1"},
        block("driver", "broadcast_0_piece0", 900),          # created on the driver: not moved yet
        {"Event": "SparkListenerJobStart", "Job ID": 0, "Submission Time": 10_000, "Stage IDs": [0]},
        block("0", "broadcast_0_piece0", 900), block("1", "broadcast_0_piece0", 900),
        block("0", "broadcast_0_piece0", 900),                # the same piece again: counted once
        task(0, "0", 3000, 100), task(0, "1", 2000, 120),
        {"Event": "SparkListenerJobEnd", "Job ID": 0, "Completion Time": 14_000},
        {"Event": "SparkListenerJobStart", "Job ID": 1, "Submission Time": 15_000, "Stage IDs": [1]},
        block("1", "broadcast_1_piece0", 50),
        task(1, "1", 500, 10), task(1, "1", 500, 10), task(1, "1", 500, 10),
        {"Event": "SparkListenerJobEnd", "Job ID": 1, "Completion Time": 16_000},
        {"Event": "SparkListenerApplicationEnd", "Timestamp": 20_000},
    ]
    path = tmp_path / "app-1"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    got = logs.parse_event_log(path)
    assert got["executors"] == 2 and got["app_seconds"] == 20.0
    j0, j1 = got["jobs"]
    assert j0.span == 4.0 and j0.broadcast_bytes == 1800 and len(j0.tasks) == 2
    assert j0.critical_path(slots=2) == 3.0  # the longest task
    assert [t["result_bytes"] for t in j0.tasks] == [100, 120]
    assert j1.broadcast_bytes == 50
    assert j1.critical_path(slots=2) == 0.75  # 3 tasks of 0.5 s on 2 slots


def test_step_split_of_a_parfor_run():
    scaling = load("scaling")
    # 2 epochs of 2 steps, one job per step; the first epoch is left out
    history = [{"epoch": 1, "steps": 2, "seconds": 20.0, "loop_seconds": 19.0},
               {"epoch": 2, "steps": 4, "seconds": 9.0, "loop_seconds": 8.0}]
    metrics = {"backend": "spark", "history": history, "steps": 4, "epochs_run": 2}
    jobs = []
    for i, (span, runs, bcast) in enumerate([(9.0, [8.0], 10), (9.0, [8.0], 10), (3.0, [2.0, 2.5], 100),
                                             (3.5, [2.5, 2.0], 300)]):
        job = logs.Job(i, submitted=100.0 * i, completed=100.0 * i + span, broadcast_bytes=bcast)
        job.tasks = [{"run": r, "cpu": r / 2, "result_bytes": 5, "shuffle_read_bytes": 0, "shuffle_write_bytes": 0,
                      "input_bytes": 0} for r in runs]
        jobs.append(job)
    stats = {"heavy": {"update": [2.0, 4]}, "parfor_merge_seconds": 0.8, "spark_broadcast_seconds": 0.2,
             "cache_export_seconds": 0.2}
    got = scaling.split_step(metrics, stats, {"jobs": jobs}, slots=2, scratch_bytes=4000)
    assert got["step"] == 4.0 and got["steady_steps"] == 2 and got["update"] == 0.5
    assert got["compute"] == pytest.approx((2.5 + 2.5) / 2)          # the longest task per job
    assert got["scheduling"] == pytest.approx((0.5 + 1.0) / 2)       # span beyond it
    # -stats says 1.2 s / 4 steps = 0.3 of broadcast, export and merge (whole run), more than the
    # 4 - 2.5 - 0.75 - 0.5 (update) = 0.25 s the driver had between jobs in the steady epochs: capped
    assert got["driver_comm"] == pytest.approx(0.25)
    assert got["comm"] == pytest.approx(0.75 + 0.25)
    assert got["driver"] == pytest.approx(0.5)
    fewer = scaling.split_step(metrics, {**stats, "parfor_merge_seconds": 0.0}, {"jobs": jobs}, slots=2,
                               scratch_bytes=0)
    assert fewer["driver_comm"] == pytest.approx(0.1) and fewer["driver"] == pytest.approx(4 - 2.5 - 0.85)
    assert got["bytes"]["broadcast_to_executors"] == 200 and got["bytes"]["task_results"] == 10
    assert got["bytes"]["scratch_seen"] == 1000
    # the embedded backend: no communication, the update is the driver's share
    local = scaling.split_step({**metrics, "backend": "local"}, stats, None, slots=1, scratch_bytes=0)
    assert (local["compute"], local["driver"], local["comm"]) == (3.5, 0.5, 0.0)
