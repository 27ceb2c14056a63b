#!/usr/bin/env bash
# The tuned recipe's runs, in order: full MNIST (tuned.toml), Fashion-MNIST
# (tuned_fashion.toml), then the max-batch answers from those runs (reused, plus
# at most a few grid sizes not in the sweep). Resumable: rerun after an interruption
# and finished runs are skipped. Logs to sweep.log in each output folder.
# RESULTS (default: results/ of this checkout) lets a frozen checkout of the code
# write into another tree, so that editing the code does not change a sweep under way.
set -euo pipefail
cd "$(dirname "$0")/.."
results="${RESULTS:-results}"
# tuned.toml's seed-1 runs at batch 32000 are the decay-power search's runs of the chosen
# powers: adopted from those folders, not run again.
# Fashion-MNIST's sweep lives inside results/tuned, as results/tuned/fashion-mnist.
for config in tuned tuned_fashion; do
  output="$results/tuned"
  reuse=(--reuse "$results/tuned_lars_b32000" "$results/tuned_lamb_b32000")
  [ "$config" = tuned_fashion ] && output="$results/tuned/fashion-mnist" && reuse=()
  mkdir -p "$output"
  python -m lars_systemml sweep --config "experiments/$config.toml" --output "$output" \
    "${reuse[@]}" --no-progress "$@" >> "$output/sweep.log" 2>&1
done
for optimizer in lars lamb sgd; do
  python -m lars_systemml max-batch --optimizer "$optimizer" --target 0.98 --config experiments/tuned.toml \
    --output "$results/tuned" --no-progress "$@" >> "$results/tuned/max_batch.log" 2>&1
done
