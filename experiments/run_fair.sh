#!/usr/bin/env bash
# The equal-budget tuning protocol of experiments/fair.toml (issue 20): every trial, the full
# runs and the 3-seed finals, into results/fair, then its summary.md and figures. Resumable:
# rerun after an interruption; finished runs are skipped and the run under way continues
# from its last checkpoint. Logs to results/fair/tune.log.
# RESULTS (default: results/ of this checkout) lets a frozen checkout of the code write into
# another tree, so that editing the code does not change the protocol under way:
#   git worktree add /work/frozen-fair HEAD && cd /work/frozen-fair && \
#     RESULTS=/work/main/results nohup bash experiments/run_fair.sh &
# While it runs, do not `git stash` or `git checkout` files of that results/fair: git replaces a
# changed tune.log with a new file and the tuner goes on writing into the old, deleted one
# (recover it with `tail -c +1 -f /proc/<tuner pid>/fd/2 > results/fair/tune.log`).
set -euo pipefail
cd "$(dirname "$0")/.."
output="${RESULTS:-results}/fair"
mkdir -p "$output"
python -m lars_systemml tune --config experiments/fair.toml --output "$output" --no-progress "$@" \
  >> "$output/tune.log" 2>&1
