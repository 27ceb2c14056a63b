"""The tuning protocol: config validation, the trial sampler, successive halving and the
finals with a fake trainer, resume after a kill, reuse, the dry run, the report, and one
tiny real run end to end."""
import math
import re
import statistics
import tomllib
from pathlib import Path

import pytest

from lars_systemml.cli import main
from lars_systemml.errors import UserError
from lars_systemml.experiment import load_experiment
from lars_systemml.results import append_result, read_results
from lars_systemml.sweep import result_row
from lars_systemml.tune import load_protocol, progress, run_protocol, rows_by_id
from lars_systemml.stats import welch
from lars_systemml import tune_report
from lars_systemml.tune_report import write_report

REPO = Path(__file__).resolve().parent.parent

PROTO = """
name = "proto"
train_size = 300
test_size = 100
epochs = 4
optimizers = ["sgd", "lars"]
batch_sizes = [100, 300]
[hyperparameters]
schedule = "warmup_poly"
[search]
trials = 4
sampler_seed = 7
seed = 1
final_seeds = [1, 2, 3]
rung_epochs = 2
keep = 2
[search.space]
warmup_epochs = { uniform = [0.0, 2.0] }
[search.space.lr]
sgd = { log_uniform = [0.001, 1.0] }
lars = { log_uniform = [0.1, 100.0] }
"""
# per cell: 4 screen runs + 2 full runs + the best trial at seeds 2 and 3
RUNS_PER_CELL = 4 + 2 + 2
CELLS = 4


def write(tmp_path, text, name="proto.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def metrics(config, accuracy, diverged=False):
    return {"train_size": 300, "test_size": 100, "train_accuracy": accuracy + 0.01, "test_accuracy": accuracy,
            "generalization_error": 0.01, "train_loss": 0.1, "test_loss": 0.2, "diverged": diverged,
            "epochs_run": config.epochs, "steps": 3 * config.epochs, "wall_seconds": 2.0, "train_seconds": 1.0,
            "backend": "local", "systemds_version": "3.4.0"}


class FakeTrain:
    """A trainer whose test accuracy is ``accuracy(config)``; raises ``kill`` after ``stop_after`` runs."""

    def __init__(self, accuracy=None, stop_after=None, kill=KeyboardInterrupt, diverge=lambda c: False):
        # default: a short run prefers a large lr, a full one a small lr, and seeds differ a little
        self.accuracy = accuracy or (lambda c: 0.9 + (0.01 if c.epochs < 4 else -0.01) * math.log10(c.lr)
                                     + 0.001 * c.seed)
        self.stop_after, self.kill, self.diverge = stop_after, kill, diverge
        self.calls = []

    def __call__(self, config, output, options):
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise self.kill("killed")
        self.calls.append(Path(output).name)
        return metrics(config, self.accuracy(config), self.diverge(config))


def quiet(line):
    pass


@pytest.fixture
def protocol(tmp_path):
    return load_protocol(write(tmp_path, PROTO))


# --- validation ---------------------------------------------------------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("[search]\n", "[nosearch]\n"), r"unknown key\(s\) nosearch in the top level"),
    (lambda t: t.replace("trials = 4", "trial = 4"), r"unknown key\(s\) trial in \[search\]"),
    (lambda t: "seeds = [1]\n" + t, r"unknown key\(s\) seeds in the top level"),
    (lambda t: t.replace("[search.space.lr]", "[search.space.momentum]"), "must search lr"),
    (lambda t: t.replace('lars = { log_uniform = [0.1, 100.0] }', ""), r"\[search.space\] lr has no range for lars"),
    (lambda t: t.replace("uniform = [0.0, 2.0]", "normal = [0.0, 2.0]"), "warmup_epochs must be one of"),
    (lambda t: t.replace("[0.001, 1.0]", "[0.0, 1.0]"), "log_uniform needs low > 0"),
    (lambda t: t.replace("[0.001, 1.0]", "[1.0, 0.1]"), r"needs \[low, high\] with low < high"),
    (lambda t: t.replace("keep = 2\n", ""), "rung_epochs and keep go together"),
    (lambda t: t.replace("rung_epochs = 2", "rung_epochs = 4"), r"rung_epochs must be < epochs \(4\)"),
    (lambda t: t.replace("keep = 2", "keep = 5"), r"keep must be <= trials \(4\)"),
    (lambda t: t.replace("trials = 4", "trials = 0"), r"trials must be an integer >= 1"),
    (lambda t: t.replace("final_seeds = [1, 2, 3]", "final_seeds = []"), "'final_seeds' must be a non-empty list"),
    (lambda t: t.replace('schedule = "warmup_poly"', 'schedule = "warmup_poly"\nwarmup_epochs = 1.0'),
     "warmup_epochs both fixed"),
    (lambda t: t.replace('schedule = "warmup_poly"', 'schedule = "warmup_poly"\nlr_scaling = "sqrt"'),
     "searches the peak lr itself"),
    (lambda t: t.replace('["sgd", "lars"]', '["sgd", "adam"]'), "'optimizers' must be a non-empty list"),
    # a drawn value the run cannot take: warmup beyond the 4-epoch budget
    (lambda t: t.replace("uniform = [0.0, 2.0]", "uniform = [0.0, 9.0]"), r"trial \d: warmup_epochs must be in"),
    (lambda t: t.replace('schedule = "warmup_poly"', 'schedule = "constant"'), "warmup_epochs needs schedule"),
    (lambda t: "name = [", "not valid TOML"),
])
def test_invalid_protocols_are_one_line_errors(tmp_path, edit, message):
    with pytest.raises(UserError, match=message) as info:
        load_protocol(write(tmp_path, edit(PROTO)))
    assert "\n" not in str(info.value) and str(info.value).startswith(str(tmp_path))


def test_a_protocol_is_not_a_sweep_and_a_sweep_is_not_a_protocol(tmp_path):
    with pytest.raises(UserError, match="tuning protocol .*lars-systemml tune --config"):
        load_experiment(write(tmp_path, PROTO))
    with pytest.raises(UserError, match=r"no \[search\] table"):
        load_protocol(REPO / "experiments" / "quick.toml")


@pytest.mark.parametrize("config", [p for p in sorted((REPO / "experiments").glob("*.toml"))
                                    if "search" in tomllib.loads(p.read_text())], ids=lambda p: p.name)
def test_shipped_protocols_are_valid(config):
    protocol = load_protocol(config)
    assert protocol.name == config.stem and protocol.trials >= 6  # the issue's minimum


def test_fair_protocol_is_the_issues(tmp_path):
    p = load_protocol(REPO / "experiments" / "fair.toml")
    assert p.optimizers == ["sgd", "nesterov", "adamw", "lars", "lamb"] and p.batch_sizes == [16384, 32000]
    assert p.final_seeds == [1, 2, 3] and p.epochs == 30
    full = p.full_run("adamw", 32000, 1).config
    assert (full.dataset, full.train_size, full.schedule, full.parallel_batches) == ("mnist", None, "warmup_poly", 4)
    assert {"lr", "warmup_epochs", "poly_power"} <= set(p.space)
    for opt in p.optimizers:  # a wide log-uniform lr range for every optimizer
        lr = p.space_for(opt)["lr"]
        assert lr.kind == "log_uniform" and lr.args[1] / lr.args[0] >= 100



def test_the_keep3_check_runs_the_fair_protocols_own_trials():
    """fair_keep3.toml must reuse fair's screens, continuations and finals: the same ids and hashes."""
    fair, check = (load_protocol(REPO / "experiments" / f"{n}.toml") for n in ("fair", "fair_keep3"))
    assert check.batch_sizes == [32000] and (check.keep, check.final_seeds) == (3, fair.final_seeds)
    for opt in fair.optimizers:
        for t in range(1, fair.trials + 1):
            runs = [(fair.screen_run(opt, 32000, t), check.screen_run(opt, 32000, t))]
            runs += [(fair.full_run(opt, 32000, t, s), check.full_run(opt, 32000, t, s)) for s in fair.final_seeds]
            for ours, theirs in runs:
                assert (ours.run_id, ours.config_hash) == (theirs.run_id, theirs.config_hash)

# --- the sampler --------------------------------------------------------------------------

def test_same_seed_same_trials_and_every_cell_the_same_protocol(tmp_path, protocol):
    again = load_protocol(write(tmp_path, PROTO, "again.toml"))
    for opt in protocol.optimizers:
        assert [protocol.trial_values(opt, t) for t in range(1, 5)] == [again.trial_values(opt, t) for t in range(1, 5)]
    other = load_protocol(write(tmp_path, PROTO.replace("sampler_seed = 7", "sampler_seed = 8"), "other.toml"))
    assert [other.trial_values("sgd", t) for t in range(1, 5)] != [protocol.trial_values("sgd", t) for t in range(1, 5)]
    # Latin hypercube: each field's 4 strata hold one trial each
    for name, q in protocol.quantiles().items():
        assert sorted(int(u * 4) for u in q) == [0, 1, 2, 3], name
    # trial t draws the same quantile of each field for every optimizer (their ranges differ)
    for t in range(1, 5):
        sgd, lars = protocol.trial_values("sgd", t), protocol.trial_values("lars", t)
        assert sgd["warmup_epochs"] == lars["warmup_epochs"]
        # lr quantile: sgd's [0.001, 1] and lars's [0.1, 100] are 100x apart
        assert lars["lr"] == pytest.approx(100 * sgd["lr"], rel=1e-3)
    # and every batch size the same trials: runs differ by the batch size only
    for t in range(1, 5):
        a, b = protocol.screen_run("sgd", 100, t).config, protocol.screen_run("sgd", 300, t).config
        assert {k for k, v in a.as_dict().items() if getattr(b, k) != v} == {"batch_size"}


def test_a_screen_run_is_a_complete_short_run(protocol):
    screen, full = protocol.screen_run("lars", 100, 3), protocol.full_run("lars", 100, 3)
    assert (screen.run_id, screen.stage, full.run_id, full.stage) == \
        ("lars-b100-s1-t03-e2", "screen", "lars-b100-s1-t03", "full")
    assert (screen.config.epochs, full.config.epochs) == (2, 4)
    assert screen.config.lr == full.config.lr == protocol.trial_values("lars", 3)["lr"]
    assert screen.config.warmup_epochs == pytest.approx(full.config.warmup_epochs / 2, rel=1e-3)
    final = protocol.full_run("lars", 100, 3, seed=2)
    assert (final.run_id, final.stage, final.config.seed) == ("lars-b100-s2-t03", "final", 2)
    assert protocol.full_run("lars", 100, 3, seed=1).run_id == full.run_id  # the seed-1 final is the full run


# --- running ------------------------------------------------------------------------------

def test_successive_halving_and_finals_with_a_fake_trainer(tmp_path, protocol):
    out = tmp_path / "out"
    fake = FakeTrain()
    assert run_protocol(protocol, out, None, train_fn=fake, log=quiet) == 0
    rows = read_results(out / "results.csv")
    assert len(rows) == len(fake.calls) == CELLS * RUNS_PER_CELL
    assert len({r["run_id"] for r in rows}) == len(rows)
    by_id = rows_by_id(out / "results.csv")
    for opt, batch in protocol.cells():
        lrs = {t: protocol.trial_values(opt, t)["lr"] for t in range(1, 5)}
        p = progress(protocol, opt, batch, by_id)
        # the screen prefers large lrs: the 2 largest continue; full runs prefer small: the smaller wins
        top2 = sorted(lrs, key=lrs.get, reverse=True)[:2]
        assert p.kept == top2 and set(p.full) == set(top2)
        assert p.best == min(top2, key=lrs.get)
        assert sorted(p.finals) == [1, 2, 3] and p.complete(protocol)
        mine = [r for r in rows if r["optimizer"] == opt and r["batch_size"] == str(batch)]
        assert sorted(r["stage"] for r in mine) == ["final"] * 2 + ["full"] * 2 + ["screen"] * 4
        assert {int(r["epochs"]) for r in mine if r["stage"] == "screen"} == {2}
        assert {int(r["epochs"]) for r in mine if r["stage"] != "screen"} == {4}
        assert {r["trial"] for r in mine if r["stage"] == "final"} == {str(p.best)}
        assert p.finals[1] is p.full[p.best]  # seed 1 was not run twice
    # a second call finds everything done
    again = FakeTrain()
    assert run_protocol(protocol, out, None, train_fn=again, log=quiet) == 0 and again.calls == []


def test_without_halving_every_trial_is_a_full_run(tmp_path):
    text = PROTO.replace("rung_epochs = 2\nkeep = 2\n", "").replace("final_seeds = [1, 2, 3]", "final_seeds = [1, 5]")
    protocol = load_protocol(write(tmp_path, text))
    fake = FakeTrain(accuracy=lambda c: 0.9 - abs(math.log10(c.lr) - math.log10(protocol.space_for(c.optimizer)["lr"].args[1])) / 100)
    run_protocol(protocol, tmp_path / "out", None, train_fn=fake, log=quiet)
    rows = read_results(tmp_path / "out" / "results.csv")
    assert len(rows) == CELLS * (4 + 1)  # 4 full trials + the best at seed 5
    p = progress(protocol, "sgd", 100, rows_by_id(tmp_path / "out" / "results.csv"))
    lrs = {t: protocol.trial_values("sgd", t)["lr"] for t in range(1, 5)}
    assert p.best == max(lrs, key=lrs.get) and sorted(p.finals) == [1, 5]
    assert {r["stage"] for r in rows} == {"full", "final"}


def test_a_diverged_trial_ranks_last(tmp_path, protocol):
    # the largest lr diverges at the screen; its recorded accuracy would otherwise win
    biggest = max(range(1, 5), key=lambda t: protocol.trial_values("sgd", t)["lr"])
    lr = protocol.trial_values("sgd", biggest)["lr"]
    fake = FakeTrain(diverge=lambda c: c.optimizer == "sgd" and c.lr == lr)
    run_protocol(protocol, tmp_path / "out", None, train_fn=fake, log=quiet)
    p = progress(protocol, "sgd", 300, rows_by_id(tmp_path / "out" / "results.csv"))
    assert biggest not in p.kept


def test_a_killed_tuner_resumes_without_duplicates(tmp_path, protocol):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C or SIGTERM during the 6th run
        run_protocol(protocol, out, None, train_fn=FakeTrain(stop_after=5), log=quiet)
    assert len(read_results(out / "results.csv")) == 5
    with open(out / "results.csv", "a") as f:
        f.write("proto,lars-b300-s1-t02-e2,half-written")  # killed in the middle of a write
    rest = FakeTrain()
    assert run_protocol(protocol, out, None, train_fn=rest, log=quiet) == 0
    rows = read_results(out / "results.csv")
    assert len(rest.calls) == CELLS * RUNS_PER_CELL - 5
    assert len(rows) == len({r["run_id"] for r in rows}) == CELLS * RUNS_PER_CELL
    # the same result as an uninterrupted tuner
    whole = tmp_path / "whole"
    run_protocol(protocol, whole, None, train_fn=FakeTrain(), log=quiet)
    assert sorted(r["run_id"] for r in read_results(whole / "results.csv")) == sorted(r["run_id"] for r in rows)


def test_a_failed_run_stops_its_cell_only_and_is_retried(tmp_path, protocol):
    out = tmp_path / "out"
    lines = []
    calls = []

    def flaky(config, output, options):
        if Path(output).name == "sgd-b300-s1-t02-e2":
            raise UserError("SystemDS failed")
        calls.append(Path(output).name)
        return metrics(config, 0.9 + config.lr / 1000)

    assert run_protocol(protocol, out, None, train_fn=flaky, log=lines.append) == 1
    assert any(line.startswith("FAILED sgd-b300-s1-t02-e2") for line in lines)
    rows = read_results(out / "results.csv")
    assert len(rows) == (CELLS - 1) * RUNS_PER_CELL + 3  # sgd b300: its other 3 screen runs, then it stops
    rest = FakeTrain()
    assert run_protocol(protocol, out, None, train_fn=rest, log=quiet) == 0
    assert rest.calls[0] == "sgd-b300-s1-t02-e2" and len(rest.calls) == RUNS_PER_CELL - 3


def test_a_changed_protocol_is_refused_in_the_same_folder(tmp_path, protocol):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):  # one finished run is enough to tell
        run_protocol(protocol, out, None, train_fn=FakeTrain(stop_after=1), log=quiet)
    changed = load_protocol(write(tmp_path, PROTO.replace("sampler_seed = 7", "sampler_seed = 9"), "changed.toml"))
    with pytest.raises(UserError, match="from a different config"):
        run_protocol(changed, out, None, train_fn=FakeTrain(), log=quiet)


def test_runs_of_another_execution_mode_are_refused_in_the_same_folder(tmp_path, protocol):
    # paramserv with K workers computes other steps than the local runs already there (sweep.run_execution)
    from lars_systemml.spark import SparkOptions
    from lars_systemml.train import RunOptions

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_protocol(protocol, out, None, train_fn=FakeTrain(stop_after=1), log=quiet)
    paramserv = RunOptions(spark=SparkOptions("spark://127.0.0.1:7077", mode="paramserv", workers=2))
    for dry_run in (True, False):
        with pytest.raises(UserError, match="locally or in the Spark parfor mode, and this one runs in the "
                                            "paramserv K=2 mode: use another --output"):
            run_protocol(protocol, out, paramserv, dry_run=dry_run, train_fn=FakeTrain(), log=quiet)


def test_identical_runs_of_another_folder_are_reused(tmp_path, protocol):
    other = tmp_path / "other"
    other.mkdir()
    run = protocol.screen_run("lars", 300, 2)
    append_result(other / "results.csv", {**result_row(protocol, run.cell, metrics(run.config, 0.42), "abc123"),
                                          "run_id": "lars-some-other-name"})
    fake = FakeTrain()
    run_protocol(protocol, tmp_path / "out", None, reuse=[other], train_fn=fake, log=quiet)
    assert run.run_id not in fake.calls and len(fake.calls) == CELLS * RUNS_PER_CELL - 1
    [row] = [r for r in read_results(tmp_path / "out" / "results.csv") if r["run_id"] == run.run_id]
    assert (row["test_accuracy"], row["git_commit"], row["stage"], row["trial"], row["config_name"]) == \
        ("0.42", "abc123", "screen", "2", "proto")


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, protocol, capsys):
    out = tmp_path / "results" / "proto"
    assert run_protocol(protocol, out, None, dry_run=True, train_fn=FakeTrain()) == 0
    captured = capsys.readouterr()
    assert f"proto: 4 cells, {CELLS * RUNS_PER_CELL} runs, 0 done, {CELLS * RUNS_PER_CELL} to run, estimated" in captured.err
    assert not out.exists()
    for t in range(1, 5):
        assert f"lars-b300-s1-t0{t}-e2" in captured.out
    assert "then the best 2 of the screen: 2 run(s) of 4 epochs" in captured.out
    assert "then the best trial at seeds 2, 3: 2 run(s) of 4 epochs" in captured.out
    # the plan lists the drawn settings
    assert f"lr={protocol.trial_values('sgd', 1)['lr']:g}" in captured.out
    # after the first cell (the largest batch first, in the config's optimizer order: sgd b300)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(protocol, out, None, train_fn=FakeTrain(stop_after=RUNS_PER_CELL), log=quiet)
    run_protocol(protocol, out, None, dry_run=True)
    captured = capsys.readouterr()
    assert f"{RUNS_PER_CELL} done, {(CELLS - 1) * RUNS_PER_CELL} to run" in captured.err
    p = progress(protocol, "sgd", 300, rows_by_id(out / "results.csv"))
    assert f"sgd-b300-s2-t{p.best:02d}" in captured.out and "done: test" in captured.out


# --- the report ---------------------------------------------------------------------------

def test_report_from_results(tmp_path, protocol):
    out = tmp_path / "out"
    run_protocol(protocol, out, None, train_fn=FakeTrain(), log=quiet)
    written = write_report(protocol, out)
    assert {p.name for p in written} >= {"summary.md", "best_so_far_b100.png", "best_so_far_b300.svg"}
    text = (out / "summary.md").read_text()
    p = progress(protocol, "lars", 300, rows_by_id(out / "results.csv"))
    tests = [float(p.finals[s]["test_accuracy"]) for s in (1, 2, 3)]
    finals = f"{100 * statistics.fmean(tests):.2f} ± {100 * statistics.stdev(tests):.2f} (3)"
    assert f"| lars | 4/4 | t{p.best} |" in text and finals in text
    assert "Best layer-wise optimizer: lars" in text and "best of the others: sgd" in text
    # lars against sgd at batch 300: the difference of the finals' means and Welch's test over seeds
    sgd = progress(protocol, "sgd", 300, rows_by_id(out / "results.csv"))
    theirs = [float(sgd.finals[s]["test_accuracy"]) for s in (1, 2, 3)]
    d = welch(tests, theirs)
    assert d.tested
    assert (f"| sgd | {100 * statistics.fmean(theirs):.2f} ± {100 * statistics.stdev(theirs):.2f} (3) | "
            f"{100 * (statistics.fmean(tests) - statistics.fmean(theirs)):+.2f} | "
            f"[{100 * d.low:+.2f}, {100 * d.high:+.2f}] | {d.p:.3g} |") in text
    assert "Verdict at batch 300 (3 or more seeds per compared optimizer): " in text
    assert {"finals_b100.png", "finals_b300.svg"} <= {p.name for p in written}
    assert "Latin hypercube, sampler seed 7" in text
    assert "| lr | log-uniform [0.001, 1] | log-uniform [0.1, 100] |" in text
    assert f"{CELLS * RUNS_PER_CELL} runs of the protocol" in text and "4 of 4 cells complete" in text
    # a partial protocol is reported too, without a comparison where finals are missing
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        run_protocol(protocol, part, None, train_fn=FakeTrain(stop_after=3), log=quiet)
    write_report(protocol, part)
    assert "No comparison yet" in (part / "summary.md").read_text()
    with pytest.raises(UserError, match="no results"):
        write_report(protocol, tmp_path / "empty")


class TracingTrain(FakeTrain):
    """A FakeTrain that also writes the run's steps.csv: loss ``code + step / 1000`` per step,
    where ``code`` = 10 x (optimizer's index) + seed + (1 for a full run, 0 for a screen)."""

    def __call__(self, config, output, options):
        result = super().__call__(config, output, options)
        code = 10 * ["sgd", "lars"].index(config.optimizer) + config.seed + (config.epochs == 4)
        Path(output).mkdir(parents=True, exist_ok=True)
        (Path(output) / "steps.csv").write_text(
            "step,epoch,lr,batch_loss\n" + "".join(f"{s},1,0.1,{code + s / 1000}\n" for s in (1, 2, 3)))
        return result


def test_the_report_draws_the_training_loss_of_each_final_run(tmp_path, protocol):
    out = tmp_path / "out"
    run_protocol(protocol, out, None, train_fn=TracingTrain(), log=quiet)
    written = {p.name for p in write_report(protocol, out)}
    assert {"finals_loss_b100.png", "finals_loss_b300.svg"} <= written
    cells = tune_report.states(protocol, out)
    losses = tune_report.finals_losses(cells, 300, protocol.optimizers, out)
    # the finals' traces (full runs, seeds 1-3) and not the screens'
    assert [seed for seed, _, _ in losses["lars"]] == [1, 2, 3]
    for seed, step, loss in losses["lars"]:
        assert step.tolist() == [1, 2, 3] and loss.tolist() == [10 + seed + 1 + s / 1000 for s in (1, 2, 3)]
    assert [loss[0] for _, _, loss in losses["sgd"]] == [2.001, 3.001, 4.001]
    # summary.md links the figures that were written
    text = (out / "summary.md").read_text()
    for batch in (300, 100):
        assert (f"Figures: [finals](finals_b{batch}.png), [training loss of the finals](finals_loss_b{batch}.png), "
                f"[best so far vs number of trials](best_so_far_b{batch}.png).") in text
    # runs without a trace (FakeTrain's) give no such figure, and summary.md links none
    plain = tmp_path / "plain"
    run_protocol(protocol, plain, None, train_fn=FakeTrain(), log=quiet)
    assert not any(p.name.startswith("finals_loss") for p in write_report(protocol, plain))
    assert "finals_loss" not in (plain / "summary.md").read_text()


def test_compute_counts_the_earlier_attempts_of_a_resumed_run():
    from lars_systemml.tune_report import run_seconds

    assert run_seconds({"wall_seconds": "900.5", "train_seconds": "880.0"}) == 900.5
    # resumed: the last attempt's wall time, the training time of all attempts
    assert run_seconds({"wall_seconds": "85.4", "train_seconds": "1763.2"}) == 1763.2
    assert run_seconds({"wall_seconds": "", "train_seconds": ""}) == 0.0


def test_the_verdict_follows_the_intervals(tmp_path, protocol):
    """lars clearly ahead of sgd: "ahead"; equal means: "not separated"; diverged finals: ahead."""
    def accuracy(gap):
        return lambda c: (0.9 + (gap if c.optimizer == "lars" else 0.0) + 0.002 * c.seed
                          + 0.001 * math.log10(c.lr) * (c.epochs < 4))

    def verdict(name, fake):
        out = tmp_path / name
        run_protocol(protocol, out, None, train_fn=fake, log=quiet)
        write_report(protocol, out)
        return (out / "summary.md").read_text()

    assert "Verdict at batch 300 (3 or more seeds per compared optimizer): lars is ahead of sgd (95% CI above 0)" \
        in verdict("ahead", FakeTrain(accuracy(0.05)))
    # no gap, but the seeds spread differently per optimizer so that the test runs
    level = FakeTrain(lambda c: 0.9 + (0.004 if c.optimizer == "lars" else 0.002) * (c.seed - 2))
    assert "lars is not separated from sgd (95% CI includes 0)" in verdict("level", level)
    diverged = FakeTrain(accuracy(0.0), diverge=lambda c: c.optimizer == "sgd" and c.epochs == 4)
    text = verdict("diverged", diverged)
    assert re.search(r"^\| sgd \| 4/4 \| t\d .*\| diverged \(3\) \|\s+\|$", text, re.M)
    assert "best of the others: none (their finals diverged)" in text
    assert "Verdict at batch 300 (3 or more seeds per compared optimizer): the finals of sgd diverged." in text


@pytest.mark.parametrize("fraction, text", [(0.0431, "+4.31"), (-0.0673, "-6.73"), (0.0, "+0.00"),
                                            (2.02e-05, "+0.002"), (-3e-06, "-0.0003")])
def test_a_bound_near_zero_keeps_its_sign(fraction, text):
    """A CI bound of +0.002 points is shown as such, not as +0.00 beside "95% CI above 0"."""
    assert tune_report._points(fraction) == text


def test_each_layerwise_optimizer_gets_its_own_comparison(tmp_path):
    text = PROTO.replace('["sgd", "lars"]', '["sgd", "lars", "lamb"]').replace(
        'lars = { log_uniform = [0.1, 100.0] }', 'lars = { log_uniform = [0.1, 100.0] }\nlamb = { log_uniform = [0.001, 1.0] }')
    protocol = load_protocol(write(tmp_path, text, "three.toml"))
    gap = {"sgd": 0.0, "lars": 0.05, "lamb": 0.0}
    fake = FakeTrain(lambda c: 0.9 + gap[c.optimizer] + (0.002 if c.optimizer == "lamb" else 0.001) * c.seed)
    out = tmp_path / "out"
    run_protocol(protocol, out, None, train_fn=fake, log=quiet)
    write_report(protocol, out)
    batch300 = (out / "summary.md").read_text().split("## Batch 300")[1].split("## Batch 100")[0]
    verdicts = [line for line in batch300.splitlines() if line.startswith("Verdict at batch 300")]
    assert verdicts == ["Verdict at batch 300 (3 or more seeds per compared optimizer): lars is ahead of sgd "
                        "(95% CI above 0).",
                        "Verdict at batch 300 (3 or more seeds per compared optimizer): lamb is not separated "
                        "from sgd (95% CI includes 0)."]
    assert batch300.index("lars against each other optimizer") < batch300.index("lamb against each other optimizer")


def test_the_report_shows_reference_runs_of_the_same_task(tmp_path, protocol, monkeypatch):
    import dataclasses

    from lars_systemml.experiment import Cell

    monkeypatch.chdir(tmp_path)  # reference folders are paths from the working directory
    ref = tmp_path / "ref"
    ref.mkdir()
    base = protocol.full_run("sgd", 300, 1).config
    same = [dataclasses.replace(base, lr=0.5, poly_power=0.25, seed=s) for s in (1, 2)]
    other_task = [dataclasses.replace(base, lr=0.5, epochs=9), dataclasses.replace(base, batch_size=100, lr=0.7)]
    for i, (config, acc) in enumerate(zip(same + other_task, [0.91, 0.93, 0.5, 0.5])):
        append_result(ref / "results.csv", result_row(protocol, Cell(f"r{i}", config), metrics(config, acc), "abc"))
    text = PROTO.replace('batch_sizes = [100, 300]', 'batch_sizes = [100, 300]\nreference = ["ref", "nope"]')
    referenced = load_protocol(write(tmp_path, text, "ref.toml"))
    out = tmp_path / "out"
    run_protocol(referenced, out, None, train_fn=FakeTrain(), log=quiet)
    write_report(referenced, out)
    batch300 = (out / "summary.md").read_text().split("## Batch 300")[1].split("## Batch 100")[0]
    rows = [line for line in batch300.splitlines() if line.startswith("| sgd | ref |")]
    assert rows == [f"| sgd | ref | 0.5 | {base.warmup_epochs:g} | 92.00 ± 1.41 (2) |"]
    assert "(no results.csv in nope)" in batch300 and "not part of the protocol" in batch300
    with pytest.raises(UserError, match="'reference' must be a list of results folders"):
        load_protocol(write(tmp_path, text.replace('["ref", "nope"]', '"ref"'), "bad.toml"))


def test_cli_dry_run_and_report(tmp_path, protocol, capsys):
    config = write(tmp_path, PROTO)
    out = tmp_path / "cli"
    assert main(["tune", "--config", str(config), "--output", str(out), "--dry-run"]) == 0
    assert not out.exists() and "sgd-b300-s1-t01-e2" in capsys.readouterr().out
    run_protocol(protocol, out, None, train_fn=FakeTrain(), log=quiet)
    assert main(["tune", "--config", str(config), "--output", str(out), "--report"]) == 0
    assert (out / "summary.md").is_file() and (out / "best_so_far_b300.png").is_file()
    assert main(["tune", "--config", str(tmp_path / "nope.toml")]) == 2


@pytest.mark.slow
def test_one_tiny_real_trial_end_to_end(tmp_path, mnist_dir):
    text = """
name = "tiny_tune"
train_size = 300
test_size = 100
epochs = 1
optimizers = ["sgd"]
batch_sizes = [150]
[search]
trials = 1
sampler_seed = 1
seed = 1
final_seeds = [1]
[search.space]
lr = { log_uniform = [0.01, 0.1] }
"""
    config = write(tmp_path, text)
    out = tmp_path / "tiny"
    argv = ["tune", "--config", str(config), "--output", str(out), "--data-dir", str(mnist_dir),
            "--no-progress", "--heap", "2g"]
    assert main(argv) == 0
    [row] = read_results(out / "results.csv")
    assert (row["run_id"], row["stage"], row["trial"], row["epochs"]) == ("sgd-b150-s1-t01", "full", "1", "1")
    assert 0.0 <= float(row["test_accuracy"]) <= 1.0 and (out / "runs" / row["run_id"] / "metrics.json").is_file()
    for name in ("summary.md", "best_so_far_b150.png", "config.toml", "commands.txt"):
        assert (out / name).is_file(), name
    assert main(argv) == 0 and len(read_results(out / "results.csv")) == 1  # done: nothing runs again
