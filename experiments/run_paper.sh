#!/usr/bin/env bash
# The paper's experiments, in order: the LARS global-lr search, the paper's sweep with
# Table 1 settings, and the same sweep with LARS at the searched lr. Resumable: rerun
# after an interruption and finished runs are skipped. Logs to results/<name>/sweep.log.
# RESULTS (default: results/ of this checkout) lets a frozen checkout of the code write
# into another tree, so that editing the code does not change a sweep under way.
set -euo pipefail
cd "$(dirname "$0")/.."
results="${RESULTS:-results}"
for config in lars_lr_search paper paper_lars_lr; do
  mkdir -p "$results/$config"
  python -m lars_systemml sweep --config "experiments/$config.toml" --output "$results/$config" \
    --no-progress "$@" >> "$results/$config/sweep.log" 2>&1
done
