"""Figures and summary.md from a small fake results file."""
import json

import numpy as np
import pytest

from lars_systemml.config import TrainConfig
from lars_systemml.plot import load, load_curves, make_report, paper_claim
from lars_systemml.results import RESULT_COLUMNS, append_result


def fake_row(optimizer, batch, seed, test, train, diverged=False):
    row = {k: v for k, v in TrainConfig(optimizer=optimizer, batch_size=batch, seed=seed).as_dict().items()}
    row.update(config_name="fake", run_id=f"{optimizer}-b{batch}-s{seed}", config_hash="x",
               train_accuracy=train, test_accuracy=test, generalization_error=train - test,
               diverged=diverged, steps=10, epochs_run=5, train_size_used=60000, test_size_used=10000)
    return row


@pytest.fixture
def results(tmp_path):
    rows = []
    for opt, base in (("sgd", 0.95), ("lars", 0.97)):
        for batch in (512, 8000, 28000):
            for seed in (1, 2):
                drop = {512: 0.0, 8000: 0.1, 28000: 0.5}[batch]
                rows.append(fake_row(opt, batch, seed, base - drop + 0.01 * seed, base - drop + 0.02))
    rows.append(fake_row("sgd", 32000, 1, 0.1, 0.1, diverged=True))
    for row in rows:
        append_result(tmp_path / "results.csv", row)
    return tmp_path


def test_figures_and_summary_are_written(results):
    written = make_report([results])
    names = sorted(p.name for p in written)
    for metric in ("test_accuracy", "train_accuracy", "generalization_error"):
        assert f"{metric}.png" in names and f"{metric}.svg" in names
        assert (results / f"{metric}.png").stat().st_size > 10_000
    text = (results / "summary.md").read_text()
    # sgd at 512: test 0.96 and 0.97 (mean 96.50, sd 0.71), train 0.97, gen +1 and 0 points (mean +0.50)
    assert "| 512 | 10 | 96.50 ± 0.71 | 97.00 | +0.50 | 2 | 98.50 ± 0.71 | 99.00 | +0.50 | 2 | ~99% both | sgd differ, lars agree |" in text
    assert "what the paper reports" in text
    # at 28000: sgd 0.465 (not < 40%), lars 0.485 (not > 55%)
    assert "| 28000 | 10 | 46.50 ± 0.71 | 47.00 | +0.50 | 2 | 48.50 ± 0.71 | 49.00 | +0.50 | 2 | LARS >55%, SGD <40% | sgd differ, lars differ |" in text
    assert "(diverged)" in text


def test_paper_claims():
    assert paper_claim(1024)[0] == "~99% both"
    assert paper_claim(8000)[0] == ">90% both"
    assert paper_claim(28000)[1] == {"lars": (">", 0.55), "sgd": ("<", 0.40)}
    assert paper_claim(16000) == ("", {})


def test_csv_schema(results):
    header = (results / "results.csv").read_text().splitlines()[0].split(",")
    assert header == RESULT_COLUMNS
    for column in ("config_name", "optimizer", "batch_size", "seed", "lr", "momentum", "trust_coef",
                   "train_accuracy", "test_accuracy", "generalization_error", "train_loss", "test_loss",
                   "diverged", "epochs_run", "wall_seconds", "systemds_version", "git_commit"):
        assert column in header


def write_run(folder, run_id, history, trace=None):
    run = folder / "runs" / run_id
    run.mkdir(parents=True)
    metrics = {"history": history}
    if trace is not None:
        metrics["step_trace"] = "steps.csv"
        np.savetxt(run / "steps.csv", trace, delimiter=",", header="step,epoch,lr,batch_loss", comments="")
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_curves_of_the_largest_batch(tmp_path):
    for opt in ("lars", "lamb"):
        for batch in (1024, 32000):
            append_result(tmp_path / "results.csv", fake_row(opt, batch, 1, 0.9, 0.9))
    history = [{"epoch": e, "steps": 2 * e, "lr": 0.5 / e, "test_accuracy": 0.5 + 0.1 * e} for e in (1, 2, 3)]
    trace = np.array([[s, (s + 1) // 2, 0.1 * s, 2.0] for s in range(1, 7)])
    write_run(tmp_path, "lars-b32000-s1", history, trace)  # with a per-step trace
    write_run(tmp_path, "lamb-b32000-s1", history)          # per-epoch lr only
    write_run(tmp_path, "lars-b1024-s1", history, trace)    # not the largest batch
    curves = {c["run_id"]: c for c in load_curves(load([tmp_path]), 32000)}
    assert sorted(curves) == ["lamb-b32000-s1", "lars-b32000-s1"]
    lars, lamb = curves["lars-b32000-s1"], curves["lamb-b32000-s1"]
    assert lars["lr_step"].tolist() == [1, 2, 3, 4, 5, 6] and lars["lr"].tolist() == pytest.approx([0.1 * s for s in range(1, 7)])
    assert lamb["lr_step"].tolist() == [2, 4, 6] and lamb["lr"].tolist() == pytest.approx([0.5, 0.25, 0.5 / 3])
    assert lars["acc_step"].tolist() == [2, 4, 6] and lars["accuracy"].tolist() == pytest.approx([0.6, 0.7, 0.8])
    written = {p.name for p in make_report([tmp_path])}
    assert {"curves_b32000.png", "curves_b32000.svg"} <= written
    assert (tmp_path / "curves_b32000.png").stat().st_size > 10_000


def test_curves_skip_epochs_without_a_test_evaluation(tmp_path):
    # eval_every = 2 over 3 epochs: epoch 1 has no test accuracy (null in metrics.json)
    append_result(tmp_path / "results.csv", fake_row("lars", 32000, 1, 0.9, 0.9))
    history = [{"epoch": e, "steps": 2 * e, "lr": 0.5 / e, "test_accuracy": None if e == 1 else 0.5 + 0.1 * e}
               for e in (1, 2, 3)]
    write_run(tmp_path, "lars-b32000-s1", history)
    [curve] = load_curves(load([tmp_path]), 32000)
    assert curve["acc_step"].tolist() == [4, 6] and curve["accuracy"].tolist() == pytest.approx([0.7, 0.8])
    assert curve["lr_step"].tolist() == [2, 4, 6]


def test_no_histories_no_curves(results):
    assert not any(p.name.startswith("curves") for p in make_report([results]))


def test_grid_runs_are_separate_series(tmp_path):
    for lr, acc in ((10.0, 0.2), (0.1, 0.9), (1.0, 0.5)):
        for batch in (250, 2500):
            row = fake_row("lars", batch, 1, acc - (batch == 2500) * 0.1, acc)
            row["run_id"] += f"-lr{lr}"
            append_result(tmp_path / "results.csv", row)
    df = load([tmp_path])
    assert sorted(df["series"].unique()) == ["lars-lr0.1", "lars-lr1.0", "lars-lr10.0"]
    make_report([tmp_path])
    text = (tmp_path / "summary.md").read_text()
    assert "| run | b250 test | b2500 test |" in text
    # rows in numeric order of the grid value
    assert "| lars-lr0.1 | 90.00 | 80.00 |\n| lars-lr1.0 | 50.00 | 40.00 |\n| lars-lr10.0 | 20.00 | 10.00 |" in text


def test_no_paper_verdicts_for_another_dataset(tmp_path):
    # the paper's claims are about MNIST; a Fashion-MNIST table has no paper columns
    row = fake_row("lars", 1024, 1, 0.90, 0.97)
    row["dataset"] = "fashion-mnist"
    append_result(tmp_path / "results.csv", row)
    make_report([tmp_path])
    text = (tmp_path / "summary.md").read_text()
    assert "| 1024 | 10 | 90.00 | 97.00 | +7.00 | 1 |\n" in text
    assert "vs paper |" not in text and "~99% both" not in text
    assert "what the paper reports" not in text
