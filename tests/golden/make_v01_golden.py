"""Record the v0.1 engine's LeNet-5 runs that the model-agnostic engine must reproduce to 1e-12.

Run once, with the v0.1 engine (commit f6f7e67), from the repository root:

    python tests/golden/make_v01_golden.py /work/shared/data/mnist

Writes tests/golden/v01/<case>/{metrics.json,steps.csv}. The cases cover the three
optimizers, the one-piece path (micro-batches under 64 rows), the local parfor with
sizes known at compile time, the variable-size parfor (a short last batch), and two
schedules. tests/test_golden_v01.py reruns them with the current engine.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from golden_cases import CASES  # noqa: E402

from lars_systemml.config import TrainConfig  # noqa: E402
from lars_systemml.train import RunOptions, train  # noqa: E402


def main(data_dir: str) -> None:
    for name, settings in CASES.items():
        out = HERE / "v01" / name
        shutil.rmtree(out, ignore_errors=True)
        train(TrainConfig(**settings), out, RunOptions(data_dir=data_dir, progress=False, heap="2g"))
        (out / "systemds.log").unlink()
        metrics = json.loads((out / "metrics.json").read_text())
        print(name, metrics["test_accuracy"], metrics["test_loss"])


if __name__ == "__main__":
    main(sys.argv[1])
