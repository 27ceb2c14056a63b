"""SystemDS settings: native BLAS when OpenBLAS is there, the Java kernels otherwise."""
import pytest

from lars_systemml import runtime
from lars_systemml.errors import UserError


def test_no_openblas_means_java_kernels(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.OPENBLAS_ENV, "none")
    assert runtime.find_openblas() is None
    settings = runtime.tuned_settings(tmp_path)
    assert "sysds.native.blas" not in settings
    assert settings["sysds.caching.bufferpoollimit"] == "50"


def test_openblas_is_linked_where_systemds_looks(tmp_path, monkeypatch):
    library = tmp_path / "libopenblas.so.0"
    library.write_bytes(b"")
    monkeypatch.setenv(runtime.OPENBLAS_ENV, str(library))
    monkeypatch.setattr(runtime, "system_library", lambda name: tmp_path / name)  # the glue's libgomp etc.
    settings = runtime.tuned_settings(tmp_path / "run")
    assert settings["sysds.native.blas"] == "openblas"
    link = tmp_path / "run" / "native-blas" / "liblibopenblas.so"  # System.mapLibraryName("libopenblas")
    assert settings["sysds.native.blas.directory"] == str(link.parent)
    assert link.resolve() == library.resolve()


def test_run_settings_keep_temporary_files_in_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.OPENBLAS_ENV, "none")
    settings = runtime.run_settings(tmp_path, "single")
    assert settings["sysds.scratch"] == str(tmp_path / "scratch")
    assert settings["sysds.localtmpdir"] == str(tmp_path / "localtmp")
    assert settings["sysds.caching.bufferpoollimit"] == "50"
    assert settings[runtime.PRECISION_KEY] == "single"
    assert runtime.PRECISION_KEY not in runtime.run_settings(tmp_path)


def test_bad_openblas_path_is_a_user_error(monkeypatch):
    monkeypatch.setenv(runtime.OPENBLAS_ENV, "/nonexistent/libopenblas.so.0")
    with pytest.raises(UserError, match="LARS_SYSTEMML_OPENBLAS"):
        runtime.find_openblas()


@pytest.mark.parametrize("lines, message", [
    (["26/12/02 12:21:41 ERROR api.DMLScript: Parsing Exception Invalid argument specified for -nvargs option"],
     "Parsing Exception Invalid argument specified for -nvargs option"),
    (["WARNING: Using incubator modules", 'java.lang.NullPointerException: Cannot invoke "x"'],
     'java.lang.NullPointerException: Cannot invoke "x"'),
    (["@@epoch 1 2 0.5", "done"], None),
])
def test_failures_systemds_reports_without_its_marker_are_found(lines, message):
    # SystemDS exits 0 after both: a rejected argument and an exception it did not catch
    assert runtime._error_message(lines) == message
