"""The benchmark scripts' own logic (their timings are not tested)."""
import importlib.util
import sys
from pathlib import Path

import pytest

from lars_systemml import runtime

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_variant_settings_are_parsed_by_kind():
    variants = load("variants")
    v = variants.parse_variant(["pgc", "jvm=-XX:+UseParallelGC", "jvm=-Xlog:gc:file=x=y",
                                "dml.parfor_opt=NONE", "sds.sysds.native.blas=none"])
    assert v.jvm_flags == ["-XX:+UseParallelGC", "-Xlog:gc:file=x=y"]
    assert v.dml == {"parfor_opt": "NONE"} and v.systemds == {"sysds.native.blas": "none"}
    assert variants.parse_variant(["base"]).describe() == "(project defaults)"
    with pytest.raises(SystemExit, match="not KEY=VALUE"):
        variants.parse_variant(["bad", "foo"])
    with pytest.raises(SystemExit, match="unknown key 'java'"):
        variants.parse_variant(["bad", "java=1"])


def test_variant_table_compares_with_the_first():
    variants = load("variants")
    a, b = variants.Variant("a"), variants.Variant("b", jvm_flags=["-XX:+UseParallelGC"])
    for v, loop in ((a, [10.0, 12.0]), (b, [9.0, 9.0])):
        v.loop, v.first, v.evals, v.wall, v.test_loss = loop, [20.0], [1.0], [60.0], [0.25]
    a.cpu, b.cpu = [100.0, 120.0], [80.0, 88.0]
    rows = variants.table([a, b])
    assert rows[2].startswith("| a | (project defaults) | 11.00 |") and "| 110.0 |" in rows[2]
    assert "| 9.00 (-18%) |" in rows[3] and "| 84.0 (-24%) |" in rows[3] and rows[3].endswith("| 0.25 |")


def test_cpu_seconds_count_finished_children():
    import subprocess
    variants = load("variants")
    before = variants.children_cpu_seconds()
    subprocess.run([sys.executable, "-c", "x = 0\nfor i in range(3_000_000): x += i"], check=True)
    assert variants.children_cpu_seconds() - before > 0.05


def test_extra_jvm_flags_follow_the_projects_own(monkeypatch):
    monkeypatch.setattr(runtime, "classpath", lambda: "cp")
    cmd = runtime.local_command(Path("x.dml"), {}, heap="2g", jvm_flags=["-XX:+UseParallelGC"])
    assert cmd.index("-XX:+UseParallelGC") > cmd.index("-Xmx2g") and cmd.index("-XX:+UseParallelGC") < cmd.index("-cp")


def test_step_overhead_fits_fixed_and_per_image_cost():
    so = load("step_overhead")
    # ms/step = 7 + 0.25 * batch, exactly: the intercept is the fixed cost per step
    a, c = so.fit_line([32, 64, 128], [7 + 0.25 * b for b in (32, 64, 128)])
    assert a == pytest.approx(7) and c == pytest.approx(0.25)
    assert so.fit_line([64, 64], [1.0, 2.0]) is None  # one batch size: no line
    assert so.steps_per_epoch(1000, 64) == 16 and so.steps_per_epoch(1000, 32000) == 1


def test_step_overhead_table_uses_the_largest_batch_as_reference():
    so = load("step_overhead")
    result = load("epoch_time").Result
    args = type("Args", (), {"images": 1024, "batch_sizes": [64, 1024], "optimizers": ["sgd"],
                             "cpu": {("sgd", 64): [30.0], ("sgd", 1024): [20.0]}})()
    results = {("sgd", 64): result("dml", "sgd", 64, epoch_seconds=[2.0]),
               ("sgd", 1024): result("dml", "sgd", 1024, epoch_seconds=[1.2])}
    rows = {line.split("|")[2].strip(): line for line in so.table(results, args) if line.startswith("| sgd")}
    # batch 64: 16 steps of 125 ms; (2.0 - 1.2) s over 16 steps = 50 ms of overhead per step
    assert "| 125.0 | 50.0 | 30.0 |" in rows["64"]
    assert "| 1200.0 |  | 20.0 |" in rows["1024"]


def test_cds_launch_table_reports_the_median_saving():
    bench = load("cds_launch")
    rows = bench.table({"trivial": {"off": [(3.0, 3.1), (4.0, 4.2), (3.5, 3.6)],
                                    "on": [(2.0, 2.1), (2.5, 2.4), (9.0, 2.2)]}})
    assert rows[2] == "| trivial | off | 3 | 3.50 | 3.00 | 4.00 | 3.60 |  |"
    assert rows[3] == "| trivial | on | 3 | 2.50 | 2.00 | 9.00 | 2.20 | 1.00 s / 1.40 s |"
