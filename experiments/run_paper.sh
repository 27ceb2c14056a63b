#!/usr/bin/env bash
# The paper's experiments: the LARS global-lr search, the paper's sweep with Table 1
# settings, and the same sweep with LARS at the searched lr. The batch sizes >= 1024 of both
# sweeps run first (cheap and the telling ones), then the small batches. Resumable: rerun after
# an interruption and finished runs are skipped. Logs to results/<name>/sweep.log.
# RESULTS (default: results/ of this checkout) lets a frozen checkout of the code write
# into another tree, so that editing the code does not change a sweep under way.
set -euo pipefail
cd "$(dirname "$0")/.."
results="${RESULTS:-results}"
large="batch_size=1024,2048,4096,8000,16000,20000,24000,28000,32000"
sweep() {  # config [--only ...]
  mkdir -p "$results/$1"
  python -m lars_systemml sweep --config "experiments/$1.toml" --output "$results/$1" \
    --no-progress "${@:2}" >> "$results/$1/sweep.log" 2>&1 \
    || echo "$1: some runs failed (see $results/$1/sweep.log); rerun this script to retry them" >&2
}
sweep lars_lr_search
sweep paper --only "$large"
sweep paper_lars_lr --only "$large"
sweep paper
sweep paper_lars_lr
