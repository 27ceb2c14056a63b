"""Figures and summary.md from a small fake results file."""
import pytest

from lars_systemml.config import TrainConfig
from lars_systemml.plot import make_report, paper_claim
from lars_systemml.sweep import RESULT_COLUMNS, append_result


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
    # sgd at 512: test 0.96 and 0.97 (mean 96.50), train 0.97, gen +1 and 0 points (mean +0.50)
    assert "| 512 | 10 | 96.50 | 97.00 | +0.50 | 2 | 98.50 | 99.00 | +0.50 | 2 | ~99% both | sgd differ, lars agree |" in text
    # at 28000: sgd 0.465 (not < 40%), lars 0.485 (not > 55%)
    assert "| 28000 | 10 | 46.50 | 47.00 | +0.50 | 2 | 48.50 | 49.00 | +0.50 | 2 | LARS >55%, SGD <40% | sgd differ, lars differ |" in text
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
