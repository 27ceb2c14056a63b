"""The training step is compiled once: no per-step recompilation for LeNet-5 and the MLP.

SystemDS recompiles a block at run time when it was compiled for unknown sizes. A step
recompiled on every call costs 6-10 ms at batch 64 (docs/performance.md), and the cause is
easy to reintroduce without noticing: a function call or an `if` in LeNet-5's `backward`, a
slice whose range comes from a loop variable in the MLP. This counts SystemDS's own
`HOP DAGs recompiled` over 12 LARS steps at batch 64 against a bound per model:
- LeNet-5: 4 one-off recompilations at the start; one per step would add 12 (before the fix: 76).
- MLP (default width 256, depth 6): 95 today. At batch 64 the loop computes the batch in one
  piece, whose row count SystemDS does not know when compiling, and the MLP's layer loops are
  recompiled ~8 times per step; in the parfor path (64+ rows per micro-batch) it is ~4-5 per
  step. Before its rewrite (sizes from a loop variable, a list, a growing cbind): 531.
ResNet is not covered: its block functions serve blocks of several shapes and are sized per
call (docs/performance.md).
"""

from __future__ import annotations

import re

import pytest

from lars_systemml.config import TrainConfig
from lars_systemml.train import RunOptions, train

STEPS = 12
BATCH = 64
MAX_RECOMPILATIONS = {"lenet5": STEPS, "mlp": 10 * STEPS}  # exclusive bounds over STEPS steps


@pytest.mark.parametrize("model", sorted(MAX_RECOMPILATIONS))
def test_no_recompilation_per_step(model, mnist_dir, tmp_path):
    config = TrainConfig(model=model, optimizer="lars", lr=0.01, batch_size=BATCH, epochs=1,
                         train_size=STEPS * BATCH, test_size=100)
    train(config, tmp_path / "run", RunOptions(data_dir=str(mnist_dir), progress=False, stats=True, heap="2g"))
    log = (tmp_path / "run" / "systemds.log").read_text()
    match = re.search(r"HOP DAGs recompiled \(PRED, SB\):\s*\d+/(\d+)", log)
    assert match, "no -stats recompilation count in systemds.log"
    assert int(match.group(1)) < MAX_RECOMPILATIONS[model], f"{model}: {match.group(1)} recompilations in {STEPS} steps"
