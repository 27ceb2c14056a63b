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
    settings = runtime.tuned_settings(tmp_path / "run")
    assert settings["sysds.native.blas"] == "openblas"
    link = tmp_path / "run" / "native-blas" / "liblibopenblas.so"  # System.mapLibraryName("libopenblas")
    assert settings["sysds.native.blas.directory"] == str(link.parent)
    assert link.resolve() == library.resolve()


def test_bad_openblas_path_is_a_user_error(monkeypatch):
    monkeypatch.setenv(runtime.OPENBLAS_ENV, "/nonexistent/libopenblas.so.0")
    with pytest.raises(UserError, match="LARS_SYSTEMML_OPENBLAS"):
        runtime.find_openblas()
