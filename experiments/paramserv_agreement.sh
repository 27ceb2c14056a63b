#!/usr/bin/env bash
# Issue 23, item 1: the same config (experiments/paramserv_agreement.toml: LeNet-5, LARS,
# batch 1024, 8192/2000 MNIST subset, 5 epochs, seeds 1-3) on the embedded SystemDS and in
# the paramserv mode (K = 2 workers) on a Spark standalone cluster of one 2-core worker that
# this script starts on 127.0.0.1 and stops again (lars_systemml/standalone.py, as the tests do).
# Writes results/paramserv_agreement/{local,paramserv}/ (results.csv, runs/, sweep.log) and
# results/paramserv_agreement/summary.md: test accuracy and loss per mode as mean ± sd over
# the seeds, the difference of the means and Welch's t-test (lars_systemml.stats: 95% CI, t,
# degrees of freedom, two-sided p).
# Resumable: rerun after an interruption; finished runs are skipped, an interrupted one
# continues from its last checkpoint. Extra arguments go to both sweeps (e.g. --data-dir DIR).
# RESULTS (default: results/ of this checkout) as in run_tuned.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${RESULTS:-results}/paramserv_agreement"
config=experiments/paramserv_agreement.toml
mkdir -p "$out/local" "$out/paramserv"

python -m lars_systemml sweep --config "$config" --output "$out/local" --heap 4g --no-progress "$@" \
  >> "$out/local/sweep.log" 2>&1

python - "$config" "$out/paramserv" "$@" >> "$out/paramserv/sweep.log" 2>&1 <<'EOF'
import os
import sys
import tempfile
from pathlib import Path

from lars_systemml import standalone
from lars_systemml.cli import main

config, output, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
os.environ["SPARK_LOCAL_IP"] = standalone.HOST  # the driver binds to the loopback address only
# one worker with 2 cores: one executor with the K = 2 task slots paramserv's BSP needs at once
# (4g: two LeNet-5 workers of 512 rows each in one JVM)
with tempfile.TemporaryDirectory(prefix="paramserv-agreement-") as root, \
        standalone.running(Path(root), workers=1, cores=2, memory="4g") as cluster:
    code = main(["sweep", "--config", config, "--output", output, "--no-progress", "--backend", "spark",
                 "--spark-master", cluster.url, "--spark-mode", "paramserv", "--workers", "2",
                 "--driver-memory", "2g", "--executor-memory", "4g",
                 "--spark-conf", "spark.ui.enabled=false", *extra])
sys.exit(code)
EOF

python - "$out" <<'EOF'
import statistics
import sys
from pathlib import Path

from lars_systemml.results import read_results
from lars_systemml.stats import welch

out = Path(sys.argv[1])
rows = {mode: read_results(out / mode / "results.csv", complete=True) for mode in ("local", "paramserv")}
for mode, want in (("local", ("local", "")), ("paramserv", ("spark", "paramserv"))):
    for r in rows[mode]:  # a row of the other mode (a --reuse) would make the comparison meaningless
        assert (r["backend"], r["spark_mode"] or "") == want, f"{out / mode}: run {r['run_id']} is {r['backend']}"
lines = ["# Local vs paramserv (K = 2): agreement over seeds", "",
         "`experiments/paramserv_agreement.sh` (config `experiments/paramserv_agreement.toml`); "
         "mean ± sd (sample sd) over seeds.", ""]
stats = {}
for metric in ("test_accuracy", "test_loss"):
    lines += [f"## {metric}", "", "| mode | seeds | per seed | mean ± sd |", "|---|---|---|---|"]
    for mode, found in rows.items():
        by_seed = sorted((int(r["seed"]), float(r[metric])) for r in found)
        values = [v for _, v in by_seed]
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        stats[mode] = values
        per_seed = ", ".join(f"{s}: {v:.4f}" for s, v in by_seed)
        lines.append(f"| {mode} | {len(values)} | {per_seed} | {statistics.mean(values):.4f} ± {sd:.4f} |")
    lines.append("")
    d = welch(stats["paramserv"], stats["local"])
    if d.tested:
        lines.append(f"paramserv - local = {d.diff:+.4f} (95% CI [{d.low:+.4f}, {d.high:+.4f}]); Welch's t = "
                     f"{d.t:.2f} on {d.df:.1f} degrees of freedom, two-sided p = {d.p:.3f}.")
    else:
        lines.append(f"paramserv - local = {d.diff:+.4f} (too few runs for a t-test).")
    lines.append("")
(out / "summary.md").write_text("\n".join(lines))
print("\n".join(lines))
EOF
