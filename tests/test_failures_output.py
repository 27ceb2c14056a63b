"""Issue 21, part 1: file-system failures are one-line errors found before training, an earlier
result is never destroyed (train's partial folder and swap, atomic figures and summaries,
durable results.csv appends), and a garbled results.csv is a one-line error naming file and line."""
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lars_systemml import fsutil, plot, results
from lars_systemml.cli import main
from lars_systemml.config import TrainConfig
from lars_systemml.errors import DMLError, UserError
from lars_systemml.results import RESULT_COLUMNS, append_result, read_results
from lars_systemml.runfolder import RunFolder

TINY_TRAIN = ["--optimizer", "sgd", "--batch-size", "100", "--train-size", "200", "--test-size", "100",
              "--heap", "2g", "--no-progress"]
EXPERIMENT = ('name = "tiny"\ntrain_size = 200\ntest_size = 100\nepochs = 1\nseeds = [1]\n'
              'optimizers = ["sgd"]\nbatch_sizes = [100]\n')
PROTOCOL = ('name = "tiny"\ntrain_size = 200\ntest_size = 100\nepochs = 1\noptimizers = ["sgd"]\n'
            'batch_sizes = [100]\n[search]\ntrials = 2\nsampler_seed = 1\nseed = 1\nfinal_seeds = [1]\n'
            '[search.space.lr]\nsgd = { log_uniform = [0.001, 1.0] }\n')


def configs(folder: Path) -> tuple[Path, Path]:
    """An experiment (for sweep, max-batch) and a tuning protocol (for tune) of one tiny cell."""
    experiment, protocol = folder / "exp.toml", folder / "proto.toml"
    experiment.write_text(EXPERIMENT)
    protocol.write_text(PROTOCOL)
    return experiment, protocol


def one_error_line(err: str) -> str:
    """The stderr of a failed command: exactly one line, ``error: ...``."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def row(optimizer="sgd", batch=100, seed=1, test=0.9, train=0.95, **extra):
    config = TrainConfig(optimizer=optimizer, batch_size=batch, seed=seed, epochs=1, train_size=200,
                         test_size=100)
    return {**config.as_dict(), "config_name": "tiny", "run_id": f"{optimizer}-b{batch}-s{seed}",
            "config_hash": "h", "train_accuracy": train, "test_accuracy": test,
            "generalization_error": train - test, "diverged": False, "steps": 2, "epochs_run": 1,
            "train_size_used": 200, "test_size_used": 100, "wall_seconds": 1.0, **extra}


def results_file(folder: Path, rows: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.csv"
    for i in range(rows):
        append_result(path, row(batch=100 * (i + 1)))
    return path


def garble(path: Path, line: int, column: str, value: str) -> None:
    """Set ``column`` of the 1-based physical ``line`` (a data row) to ``value``."""
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[line - 1].rstrip("\n").split(",")
    fields[RESULT_COLUMNS.index(column)] = value
    lines[line - 1] = ",".join(fields) + "\n"
    path.write_text("".join(lines))


def earlier_run(folder: Path) -> dict[str, bytes]:
    """An earlier finished run's files in ``folder`` (as `train` leaves them); their bytes by name."""
    (folder / "model").mkdir(parents=True)
    files = {"metrics.json": b'{"test_accuracy": 0.5}\n', "steps.csv": b"step,epoch,lr,batch_loss\n1,1,0.1,2.3\n",
             "systemds.log": b"the earlier run's log\n", "model/model.json": b'{"format": 1}\n'}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def assert_unchanged(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (folder / name).read_bytes() == data, name
    assert not (folder / "checkpoint").exists() or (folder / "checkpoint" / "latest.json").is_file()
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]
    assert leftovers == [], leftovers


def fail_with(code: int):
    def raiser(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return raiser


# --- the output folder: created and probed before any work ----------------------------------

def test_an_output_under_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(fsutil.FileSystemError, match=r"file/out is \(or lies under\) an existing file"):
        fsutil.prepare_output_folder(tmp_path / "file" / "out")
    with pytest.raises(fsutil.FileSystemError, match="is an existing file, not a folder"):
        fsutil.prepare_output_folder(tmp_path / "file")


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on the device holding"),
                                         (errno.EROFS, "is on a read-only file system"),
                                         (errno.EACCES, "permission denied for"),
                                         (errno.EPERM, "permission denied for")])
def test_the_probe_turns_each_failure_into_one_line(tmp_path, monkeypatch, code, words):
    monkeypatch.setattr(fsutil.os, "write", fail_with(code))
    with pytest.raises(fsutil.FileSystemError) as info:
        fsutil.prepare_output_folder(tmp_path / "out")
    message = str(info.value)
    assert words in message and str(tmp_path / "out") in message and "\n" not in message
    assert fsutil.PROBE_PREFIX not in message  # the folder the user chose, not our probe file
    assert list((tmp_path / "out").iterdir()) == []  # the probe file is gone


@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_real_full_disk_and_a_real_read_only_one_fail_at_the_probe(tmp_path):
    with tmpfs(tmp_path / "full", "size=64k") as full:
        with open(full / "filler", "wb") as f:
            with contextlib.suppress(OSError):
                f.write(b"\0" * 65536 * 2)
        with pytest.raises(fsutil.FileSystemError, match="no space left"):
            fsutil.prepare_output_folder(full / "out")
        (full / "filler").unlink()
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "theta").write_bytes(b"\0" * 200_000)
        with pytest.raises(fsutil.FileSystemError, match=f"no space left on the device holding {full}/model/theta"):
            with fsutil.translate_os_errors():  # copytree gathers its errors in one shutil.Error
                shutil.copytree(tmp_path / "model", full / "model")
    with tmpfs(tmp_path / "ro", "size=64k,ro") as ro:
        with pytest.raises(fsutil.FileSystemError, match="read-only file system"):
            fsutil.prepare_output_folder(ro / "out")


def test_train_onto_a_read_only_file_system_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    # the first row, through the command: was exit 1 and an OSError traceback (EROFS) after training
    from lars_systemml import data, runtime

    monkeypatch.setattr(runtime, "check_java", lambda: None)  # no JVM: the probe comes first
    monkeypatch.setattr(data, "prepare", lambda *a, **k: pytest.fail("prepared the data before probing the output"))
    with tmpfs(tmp_path / "ro", "size=64k,ro") as ro:
        assert main(["train", *TINY_TRAIN, "--output", str(ro / "run")]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert not (ro / "run").exists()
    assert f"{ro} is on a read-only file system: choose an output folder on a writable disk" in line


def test_commands_refuse_an_output_under_a_file_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    bad = str(tmp_path / "file" / "out")
    config, protocol = configs(tmp_path)
    results_file(tmp_path / "res")
    commands = [["sweep", "--config", str(config), "--output", bad],
                ["tune", "--config", str(protocol), "--output", bad],
                ["tune", "--config", str(protocol), "--output", bad, "--report"],
                ["max-batch", "--optimizer", "sgd", "--target", "0.5", "--config", str(config), "--output", bad],
                ["plot", "--input", str(tmp_path / "res"), "--output", bad]]
    for argv in commands:
        assert main(argv) == 2, argv
        assert "lies under) an existing file" in one_error_line(capsys.readouterr().err), argv
    assert not (tmp_path / "res" / "summary.md").exists()


def fake_model(folder: Path) -> Path:
    """A model folder that saved_model.load accepts (its weights are never read here)."""
    folder.mkdir(parents=True)
    for name in ("theta", "state", "scaling.csv"):
        (folder / name).write_text("")
    info = {"format": 1, "model": "lenet5", "model_options": {}, "npar": 1, "tensors": [],
            "shape": {"channels": 1, "height": 28, "width": 28, "classes": 10},
            "dataset": {"dataset": "mnist", "source": None, "train_size": 200, "test_size": 100,
                        "subset": "stratified"}, "config": {}}
    (folder / "model.json").write_text(json.dumps(info))
    return folder


def test_evaluate_predict_export_probe_their_output_before_the_jvm(tmp_path, capsys, monkeypatch):
    from lars_systemml import saved_model

    def no_jvm(*args, **kwargs):
        raise AssertionError("started work before probing the output")

    for name in ("evaluate", "predict", "export_npz"):
        monkeypatch.setattr(saved_model, name, no_jvm)
    model = fake_model(tmp_path / "run" / "model")
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28), dtype=np.uint8))
    (tmp_path / "file").write_text("x")
    bad = str(tmp_path / "file" / "out.csv")
    for argv in (["evaluate", "--model-dir", str(model), "--output", bad],
                 ["predict", "--model-dir", str(model), "--input", str(tmp_path / "x.npy"), "--output", bad],
                 ["export", "--model-dir", str(model), "--output", bad]):
        assert main(argv) == 2, argv
        assert f"{tmp_path / 'file'} is an existing file, not a folder" in one_error_line(capsys.readouterr().err)


def test_any_os_error_in_a_command_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    results_file(tmp_path)

    def read_only(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(fsutil.os, "replace", read_only)
    assert main(["plot", "--input", str(tmp_path)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "read-only file system" in line and str(tmp_path) in line


# --- write then rename: figures and summary.md ------------------------------------------------

def test_a_failed_report_keeps_the_earlier_figures_and_summary(tmp_path, monkeypatch):
    results_file(tmp_path)
    plot.make_report([tmp_path])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".md", ".png", ".svg")}
    assert "summary.md" in before and "test_accuracy.png" in before
    append_result(tmp_path / "results.csv", row(batch=400, test=0.1))
    monkeypatch.setattr(fsutil.os, "replace", fail_with(errno.ENOSPC))
    with pytest.raises(OSError):
        plot.make_report([tmp_path])
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".md", ".png", ".svg")}
    assert after == before  # nothing half-written, no temporary file left
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


# --- results.csv: durable appends, one-line errors naming file and line ------------------------

def test_a_full_disk_during_an_append_keeps_the_earlier_rows(tmp_path, monkeypatch):
    path = results_file(tmp_path)
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # the disk fills in the middle of the row
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results.os, "write", half_then_full)
    with pytest.raises(OSError) as info:
        append_result(path, row(batch=400))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert len(read_results(path)) == 3


def test_a_garbled_row_is_one_line_naming_file_and_line(tmp_path):
    path = results_file(tmp_path)
    garble(path, 3, "batch_size", "2OO")
    with pytest.raises(UserError, match=rf"^{path}, line 3: batch_size = '2OO' is not an integer: fix or delete"):
        read_results(path)
    garble(path, 3, "batch_size", "200")
    garble(path, 4, "test_accuracy", "0.9x")
    with pytest.raises(UserError, match=r"line 4: test_accuracy = '0.9x' is not a number"):
        read_results(path)
    garble(path, 4, "test_accuracy", "0.9")
    garble(path, 2, "diverged", "maybe")
    with pytest.raises(UserError, match=r"line 2: diverged = 'maybe' is not True or False"):
        read_results(path)
    garble(path, 2, "diverged", "False")
    assert len(read_results(path)) == 3
    with open(path, "a") as f:
        f.write("tiny,sgd-b9-s1,h,sgd,9\n")  # a row cut short, then a newline
    with pytest.raises(UserError, match=rf"line 5: 5 fields, the header has {len(RESULT_COLUMNS)}"):
        read_results(path)


def test_an_empty_value_is_an_error_for_reports_only(tmp_path):
    path = results_file(tmp_path)
    garble(path, 2, "batch_size", "")
    assert len(read_results(path)) == 3  # a sweep's plan only needs run ids and hashes
    with pytest.raises(UserError, match=r"line 2: batch_size is empty, expected an int"):
        read_results(path, complete=True)


def test_a_wrong_header_is_one_line_naming_line_1(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("name,accuracy\nx,0.9\n")
    with pytest.raises(UserError, match=rf"^{path}, line 1: other columns than this version writes "
                                        r"\(unknown column 'name'\)"):
        read_results(path)
    with pytest.raises(UserError, match="line 1"):  # and nothing is appended to it
        append_result(path, row())
    assert path.read_text() == "name,accuracy\nx,0.9\n"


def test_a_truncated_last_line_is_dropped_with_one_warning(tmp_path, capsys):
    path = results_file(tmp_path)
    with open(path, "a") as f:
        f.write("tiny,sgd-b400-s1,h,sgd,40")  # a crash in the middle of an append
    assert [r["run_id"] for r in read_results(path)] == ["sgd-b100-s1", "sgd-b200-s1", "sgd-b300-s1"]
    read_results(path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {path}, line 5: dropped an incomplete last row")
    plot.make_report([tmp_path])  # the report is made from the three finished rows
    assert "| 300 |" in (tmp_path / "summary.md").read_text()
    append_result(path, row(batch=400))  # the next append cuts the partial line off first
    assert [r["batch_size"] for r in read_results(path)] == ["100", "200", "300", "400"]


def test_plot_sweep_max_batch_and_tune_report_a_garbled_row_in_one_line(tmp_path, capsys):
    config, protocol = configs(tmp_path)
    out = tmp_path / "res"
    path = results_file(out)
    garble(path, 2, "seed", "1.5")
    for argv in (["plot", "--input", str(out)],
                 ["sweep", "--config", str(config), "--output", str(out)],
                 ["max-batch", "--optimizer", "sgd", "--target", "0.5", "--config", str(config), "--output", str(out)],
                 ["tune", "--config", str(protocol), "--output", str(out)],
                 ["tune", "--config", str(protocol), "--output", str(out), "--report"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, argv
        assert one_error_line(err) == (f"error: {path}, line 2: seed = '1.5' is not an integer: fix or delete "
                                       f"that line (each line is one finished run; a deleted run runs again)")
    assert not (out / "runs").exists()  # the sweep stopped before running anything


# --- figures: the batch sizes labelled, accuracy in percent; summaries say when no verdict applies --

def test_figures_label_the_batch_sizes_and_show_percent(tmp_path, monkeypatch):
    for batch, acc in ((100, 0.9), (300, 0.8), (2000, 0.5)):
        append_result(tmp_path / "results.csv", row(batch=batch, test=acc, train=acc))
    figures = {}
    monkeypatch.setattr(plot, "_save", lambda fig, out, stem: figures.setdefault(stem, fig) and [])
    plot.make_report([tmp_path])
    ax = figures["test_accuracy"].axes[0]
    assert list(ax.get_xticks()) == [100, 300, 2000]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100", "300", "2000"]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([90.0, 80.0, 50.0])
    assert ax.get_ylabel() == "Test accuracy (%)"


def test_a_subset_run_is_not_comparable_with_the_paper(tmp_path):
    for batch, acc in ((512, 0.95), (28000, 0.3)):
        append_result(tmp_path / "results.csv", row(batch=batch, test=acc, train=acc,
                                                    train_size_used=5000, test_size_used=1000))
    plot.make_report([tmp_path])
    text = (tmp_path / "summary.md").read_text()
    assert ("Not comparable with the paper, so no agree/differ verdicts: the paper's numbers are for full MNIST "
            "(60000 training and 10000 test images) trained to convergence (this project's reproduction: 10 "
            "epochs or more); these runs used 5000 training and 1000 test images and 1 epochs.") in text
    assert "| batch | steps | sgd test | sgd train | sgd gen | sgd n | paper |\n" in text  # no "vs paper"
    assert "sgd differ" not in text and "sgd agree" not in text and "`agree`/`differ` compares" not in text
    assert "| 512 | 2 | 95.00 | 95.00 | +0.00 | 1 | ~99% both |" in text


# --- train: the partial folder and the swap -----------------------------------------------------

def test_a_swap_replaces_the_whole_folder(tmp_path):
    out = tmp_path / "run"
    earlier_run(out)
    (out / "evaluation.json").write_text("{}")  # of the old model
    (out / "checkpoint").mkdir()
    folder = RunFolder(out)
    partial = folder.prepare()
    (partial / "metrics.json").write_text("new")
    assert (out / "metrics.json").read_bytes() == b'{"test_accuracy": 0.5}\n'  # untouched until the swap
    folder.commit()
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "run"
    files = earlier_run(out)
    folder = RunFolder(out)
    partial = folder.prepare()
    (partial / "metrics.json").write_text("new")
    real_rename = os.rename

    def second_fails(src, dst):
        if Path(src) == partial:
            raise OSError(errno.EIO, "Input/output error", str(dst))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", second_fails)
    with pytest.raises(fsutil.FileSystemError, match="Input/output error"):
        folder.commit()
    monkeypatch.undo()
    folder.discard()
    assert_unchanged(out, files)


def test_the_left_overs_of_a_killed_run_are_tidied(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    tag = f"{socket.gethostname()}-{dead.pid}"
    out = tmp_path / "run"
    files = earlier_run(tmp_path / f".run.old-{tag}")  # killed between the two renames of a swap
    (tmp_path / f".run.partial-{tag}").mkdir()
    (tmp_path / ".run.partial-otherhost-1").mkdir()  # another machine's: not ours to judge
    RunFolder(out).prepare()
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".run.partial-otherhost-1", f".run.partial-{socket.gethostname()}-{os.getpid()}", "run"]


def test_train_refuses_folders_that_are_no_run_folder(tmp_path, monkeypatch):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match=r"holds files that are not a training run's \(thesis.tex\)"):
        RunFolder(tmp_path / "notes").prepare()
    monkeypatch.chdir(tmp_path / "notes")
    with pytest.raises(UserError, match="is the working folder or holds it"):
        RunFolder(tmp_path).prepare()
    (tmp_path / "file").write_text("x")
    with pytest.raises(fsutil.FileSystemError, match="is an existing file, not a folder"):
        RunFolder(tmp_path / "file").prepare()


# --- train end to end (SystemDS) ----------------------------------------------------------------

@pytest.mark.slow
def test_train_into_an_existing_file_is_one_line(tmp_path, capsys, mnist_dir):
    (tmp_path / "file").write_text("x")
    assert main(["train", *TINY_TRAIN, "--data-dir", str(mnist_dir), "--output", str(tmp_path / "file")]) == 2
    assert "is an existing file, not a folder" in one_error_line(capsys.readouterr().err)
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.slow
def test_a_mistyped_data_dir_keeps_the_earlier_run(tmp_path, capsys):
    out = tmp_path / "run"
    files = earlier_run(out)
    assert main(["train", *TINY_TRAIN, "--data-dir", str(tmp_path / "no-such-folder"), "--output", str(out)]) == 2
    one_error_line(capsys.readouterr().err)
    assert_unchanged(out, files)


@pytest.mark.slow
def test_a_systemds_failure_keeps_the_earlier_run_and_names_its_log(tmp_path, mnist_dir):
    from lars_systemml.train import RunOptions, train

    out = tmp_path / "run"
    files = earlier_run(out)
    options = RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g", dml_overrides={"fmt": "nonsense"})
    with pytest.raises(DMLError) as info:
        train(TrainConfig(batch_size=100, epochs=1, train_size=200, test_size=100), out, options)
    assert f"(full log: {out / 'systemds-failed.log'})" in str(info.value)
    assert (out / "systemds-failed.log").stat().st_size > 0
    assert_unchanged(out, files)
    assert not (out / "checkpoint").exists()  # no epoch finished: nothing to resume


@pytest.mark.slow
def test_a_disk_that_fills_during_the_run_keeps_the_earlier_run(tmp_path, mnist_dir):
    """A real full disk: the output's tmpfs holds the earlier run and the probe, not the new model."""
    from lars_systemml.train import RunOptions, train

    with tmpfs(tmp_path / "disk", "size=256k") as disk:
        out = disk / "run"
        files = earlier_run(out)
        options = RunOptions(data_dir=str(mnist_dir), progress=False, heap="2g", checkpoint_every=0)
        with pytest.raises(fsutil.FileSystemError, match="no space left on the device holding"):
            train(TrainConfig(batch_size=100, epochs=1, train_size=200, test_size=100), out, options)
        assert_unchanged(out, files)


@pytest.mark.slow
def test_an_interrupted_train_keeps_the_earlier_run_and_resumes(tmp_path, mnist_dir):
    out = tmp_path / "run"
    files = earlier_run(out)
    (out / "evaluation.json").write_text("{}")
    files["evaluation.json"] = b"{}"
    argv = ["train", *TINY_TRAIN, "--epochs", "3", "--data-dir", str(mnist_dir), "--output", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "lars_systemml", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    latest = out / "checkpoint" / "latest.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not latest.is_file():
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert_unchanged(out, files)
    assert latest.is_file()  # resumable

    assert main([*argv, "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] >= 1 and metrics["epochs_run"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model", "steps.csv", "systemds.log"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_header_cut_short_is_replaced_by_a_whole_one(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("config_name,run_id,con")  # a crash while the first row's header was written
    assert read_results(path) == []
    append_result(path, row())
    assert path.read_text().splitlines()[0].split(",") == RESULT_COLUMNS
    assert [r["run_id"] for r in read_results(path)] == ["sgd-b100-s1"]


def test_a_row_keeps_what_the_data_was_and_older_files_read_without_it(tmp_path):
    path = tmp_path / "results.csv"
    older = [c for c in RESULT_COLUMNS if c not in results.LATER_FACTS]  # written before these columns
    path.write_text(",".join(older) + "\n")
    append_result(path, row(data_identity="custom", data_checksums="train-images-idx3-ubyte:6bbc"))
    [read] = read_results(path, complete=True)
    assert (read["data_identity"], read["data_checksums"]) == ("custom", "train-images-idx3-ubyte:6bbc")
    assert path.read_text().splitlines()[0].split(",") == RESULT_COLUMNS


@pytest.mark.slow
def test_a_sweep_stops_at_the_first_run_it_cannot_write(tmp_path, capsys, mnist_dir):
    config = tmp_path / "exp.toml"
    config.write_text(EXPERIMENT.replace("batch_sizes = [100]", "batch_sizes = [100, 200]"))
    out = tmp_path / "res"
    out.mkdir()
    (out / "runs").write_text("not a folder")  # every run folder lies under a file
    assert main(["sweep", "--config", str(config), "--output", str(out), "--data-dir", str(mnist_dir),
                 "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err.replace("tiny: 2 runs", "").split("\n", 1)[1])
    assert f"the folder of sgd-b200-s1 {out / 'runs'} is an existing file" in line
    assert line.endswith("(the sweep stopped at sgd-b200-s1: its other 1 run(s) would fail the same way)")
    assert not (out / "results.csv").exists()
