"""Which failures are fatal (every run would hit them, so sweep and tune stop at the first
run): no Java, a JVM that cannot start, no data and no download, an unreachable Spark
master, sizes larger than the data; and which are not (a DML failure of one run)."""
import sys

import pytest

from lars_systemml import data, runtime, spark
from lars_systemml.errors import DMLError, UserError
from lars_systemml.experiment import load_experiment
from lars_systemml.runtime import FatalError, JVMStartError
from lars_systemml.train import RunOptions


@pytest.fixture
def fresh_java(monkeypatch):
    """java_executable/check_java forget what they found (they cache it), before and after."""
    runtime.java_executable.cache_clear()
    runtime.check_java.cache_clear()
    yield
    runtime.java_executable.cache_clear()
    runtime.check_java.cache_clear()


def test_no_java_is_fatal(tmp_path, monkeypatch, fresh_java):
    monkeypatch.setenv(runtime.JAVA_ENV, str(tmp_path / "no-java"))
    with pytest.raises(FatalError, match="cannot run .*no-java .*install Java 17"):
        runtime.check_java()


def _fake_jvm(tmp_path, text: str, status: int) -> list[str]:
    """A command that prints ``text`` and exits with ``status``, as a JVM would."""
    script = tmp_path / "fake.py"
    script.write_text(f"import sys\nprint({text!r})\nsys.exit({status})\n")
    return [sys.executable, str(script)]


def test_a_jvm_that_cannot_start_is_fatal_and_a_dml_error_is_not(tmp_path):
    cmd = _fake_jvm(tmp_path, "Error: Could not find or load main class org.apache.sysds.api.DMLScript", 1)
    with pytest.raises(JVMStartError, match=r"^the JVM could not start: Error: Could not find or load main class"):
        runtime.run_dml(cmd, cwd=tmp_path)
    assert issubclass(JVMStartError, DMLError)  # train keeps its log like any SystemDS failure's
    dml_failure = _fake_jvm(tmp_path, "An Error Occurred : \n DMLRuntimeException -- out of memory", 0)
    with pytest.raises(DMLError) as error:
        runtime.run_dml(dml_failure, cwd=tmp_path)
    assert not isinstance(error.value, FatalError)


def test_an_unreachable_spark_master_is_fatal():
    with pytest.raises(FatalError, match="cannot reach the Spark master 127.0.0.1:9"):
        spark.check_master(spark.SparkOptions(master="spark://127.0.0.1:9"))


def test_missing_data_is_fatal(tmp_path):
    with pytest.raises(FatalError, match="does not exist"):
        data.resolve_data_dir("mnist", tmp_path / "nope")


def test_a_sweep_without_its_data_stops_at_the_first_run(tmp_path, capsys):
    # the real trainer: it fails in its checks, before any SystemDS JVM starts
    from lars_systemml.sweep import run_sweep

    config = tmp_path / "exp.toml"
    config.write_text('name = "nodata"\ntrain_size = 100\ntest_size = 50\nepochs = 1\nseeds = [1, 2]\n'
                      'optimizers = ["sgd", "lars"]\nbatch_sizes = [50, 100]\n[hyperparameters]\nlr = 0.05\n')
    exp = load_experiment(config)
    options = RunOptions(data_dir=str(tmp_path / "no-data"), progress=False)
    with pytest.raises(FatalError) as error:
        run_sweep(exp, exp.cells, tmp_path / "out", options)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"data folder {tmp_path / 'no-data'} (from --data-dir) "
                                                      f"does not exist")
    assert message.endswith("its other 7 run(s) would fail the same way)")
    assert "FAILED" not in capsys.readouterr().err  # said once, by the caller, not once per run
    assert not (tmp_path / "out" / "results.csv").exists()


def test_a_size_larger_than_the_data_is_fatal_and_names_the_count(mnist_dir, monkeypatch):
    monkeypatch.setattr(data, "write_binary", lambda *a: pytest.fail("no JVM for a size error"))
    with pytest.raises(FatalError, match=r"train_size 70000 is more than the 60000 training images of mnist"):
        data.prepare("mnist", mnist_dir, train_size=70000)


def test_fatal_errors_are_user_errors():
    # the CLI prints any UserError as one `error:` line with exit status 2; fatal ones too
    assert issubclass(FatalError, UserError)
