"""Hyperparameter validation: one-line errors before any JVM starts; the --help texts."""
import argparse
import re
import subprocess
import sys

import pytest

from lars_systemml.cli import main
from lars_systemml.config import TrainConfig
from lars_systemml.errors import UserError


@pytest.mark.parametrize("change, message", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"parallel_batches": 0}, "parallel_batches must be an integer >= 1"),
    ({"lr": -0.1}, "lr must be > 0"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ({"weight_decay": -1e-4}, "weight_decay must be >= 0"),
    ({"trust_coef": 0.0}, "trust_coef must be > 0"),
    ({"lr_decay": -1.0}, "lr_decay must be >= 0"),
    ({"beta2": 1.0}, r"beta2 must be in \[0, 1\)"),
    ({"optimizer": "adam"}, "unknown optimizer 'adam'"),
    ({"dataset": "cifar"}, "unknown dataset 'cifar'"),
    ({"train_size": 0}, "train_size must be an integer >= 1"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"schedule": "cosine"}, "unknown schedule 'cosine'"),
    ({"schedule": "warmup_poly", "warmup_epochs": 11}, r"warmup_epochs must be in \[0, epochs=10\]"),
    ({"warmup_epochs": 1}, "warmup_epochs needs schedule warmup_poly"),
    ({"schedule": "warmup_poly", "poly_power": 0}, "poly_power must be > 0"),
    ({"lr_scaling": "cube"}, "unknown lr_scaling 'cube'"),
    ({"lr_scaling": "linear"}, "lr_scaling linear needs base_batch"),
    ({"lr_scaling": "sqrt", "base_batch": 0}, "base_batch must be an integer >= 1"),
    ({"eval_every": 0}, "eval_every must be an integer >= 1"),
])
def test_invalid_settings(change, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**change).validate()


def test_defaults_are_the_papers_table_1():
    c = TrainConfig().validate()
    assert (c.lr, c.lr_decay, c.weight_decay, c.momentum, c.trust_coef, c.parallel_batches) == \
        (0.01, 0.0001, 0.0001, 0.9, 0.001, 4)


def test_cli_schedule_options_reach_the_config():
    from lars_systemml.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", "--schedule", "warmup_poly", "--warmup-epochs", "2.5",
                                      "--poly-power", "1", "--lr-scaling", "linear", "--base-batch", "256",
                                      "--batch-size", "1024", "--lr", "0.1", "--eval-every", "5"])
    c = config_from_args(args).validate()
    assert (c.schedule, c.warmup_epochs, c.poly_power, c.lr_scaling, c.base_batch) == \
        ("warmup_poly", 2.5, 1.0, "linear", 256)
    assert c.eval_every == 5 and c.dml_args()["eval_every"] == 5
    assert "eval_every" in c.identity() and "eval_every" not in TrainConfig().identity()
    assert c.dml_args()["lr"] == pytest.approx(0.4) and c.dml_args()["warmup_epochs"] == 2.5
    d = config_from_args(build_parser().parse_args(["train"]))
    assert d == TrainConfig()  # no option given: the paper's defaults


def test_cli_bad_hyperparameter_is_one_line_error_without_jvm(capsys, monkeypatch):
    started = []
    monkeypatch.setattr("lars_systemml.runtime.check_java", lambda: started.append(1))
    assert main(["train", "--lr", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: lr must be > 0, got -1.0"
    assert not started


def test_missing_java_is_one_line_error(capsys, monkeypatch, tmp_path):
    from lars_systemml import runtime

    runtime.java_executable.cache_clear()
    runtime.check_java.cache_clear()
    monkeypatch.setenv(runtime.JAVA_ENV, str(tmp_path / "no-java"))
    try:
        assert main(["train", "--train-size", "100", "--output", str(tmp_path / "out")]) == 2
    finally:
        runtime.java_executable.cache_clear()
        runtime.check_java.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "install Java 17" in err[0]


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "lars_systemml", "train", "--batch-size", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: batch_size must be an integer >= 1, got 0"


def test_help_gives_every_option_a_text_and_its_default_without_markup():
    from lars_systemml.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"train", "evaluate", "predict", "export", "sweep", "max-batch", "tune", "plot", "doctor"} <= set(commands)
    for name, command in [("lars-systemml", parser), *commands.items()]:
        text = command.format_help()
        assert not re.search(r"``|:(func|class|meth|ref|math):`", text), f"reStructuredText in {name} --help"
        formatter = command._get_formatter()
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):  # its commands have help texts, checked here
                assert all(a.help for a in action._choices_actions), name
                continue
            assert action.help, f"{name} {'/'.join(action.option_strings) or action.dest} has no help text"
            default = action.default
            if default in (None, False, argparse.SUPPRESS) or isinstance(default, list):
                continue
            shown = formatter._expand_help(action)
            spellings = {str(default)} | ({repr(default), f"{default:g}"} if isinstance(default, float) else set())
            assert any(s in shown for s in spellings), f"{name} {action.option_strings}: default {default!r} not in {shown!r}"
