"""IDX parsing, validation of bad files, data-folder resolution and subsets."""
import gzip
import hashlib
import json
import os
import struct
import time

import numpy as np
import pytest

from lars_systemml import data, datasets, locks
from lars_systemml.errors import UserError
from lars_systemml.runtime import FatalError


def write_idx(path, array, magic=None, gz=False, truncate=0):
    array = np.asarray(array, dtype=np.uint8)
    magic = magic if magic is not None else (0x0800 | array.ndim)
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    payload = payload[: len(payload) - truncate]
    if gz:
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_dataset(folder, n_train=40, n_test=20, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz=gz)
    return folder


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28))
    path = write_idx(tmp_path / ("x.gz" if gz else "x"), images, gz=gz)
    np.testing.assert_array_equal(data.read_idx(path, data.IMAGE_MAGIC), images)


def test_truncated_file_is_named(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28)), truncate=10)
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte.*truncated or corrupt"):
        data.read_idx(path, data.IMAGE_MAGIC)


def test_truncated_header(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(UserError, match="truncated"):
        data.read_idx(path)


def test_wrong_magic_says_swapped(tmp_path):
    path = write_idx(tmp_path / "labels", np.zeros(4))
    with pytest.raises(UserError, match="magic 2049, expected 2051"):
        data.read_idx(path, data.IMAGE_MAGIC)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(UserError, match="not an unsigned-byte IDX file"):
        data.read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    good = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x64" + bytes(range(100)))
    path.write_bytes(good[:12] + b"\xff" * 20 + good[32:])  # damaged deflate data
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz is corrupt or truncated"):
        data.read_idx(path)


def test_label_out_of_range(tmp_path):
    make_dataset(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(40, 12), gz=True)
    with pytest.raises(UserError, match="label 12, outside 0..9"):
        data.load_split(tmp_path, "train")


def test_images_and_labels_count_mismatch(tmp_path):
    make_dataset(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(7), gz=True)
    with pytest.raises(UserError, match="7 labels for 20 images"):
        data.load_split(tmp_path, "t10k")


def test_missing_files_in_data_dir(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(UserError, match="lacks t10k-images-idx3-ubyte"):
        data.resolve_data_dir("mnist", tmp_path)


def test_missing_data_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        data.resolve_data_dir("mnist", tmp_path / "nope")


def test_env_variable_is_used(tmp_path, monkeypatch):
    make_dataset(tmp_path, gz=False)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert data.resolve_data_dir("mnist") == tmp_path


def test_no_download_without_permission(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    with pytest.raises(UserError, match="not in the cache"):
        data.resolve_data_dir("mnist", download=False)


def test_failed_download_is_one_short_fatal_error(tmp_path, monkeypatch):
    monkeypatch.setitem(data.DATASETS["mnist"], "mirrors", ["http://127.0.0.1:9/", "http://localhost:9/"])
    with pytest.raises(FatalError) as error:
        data.download_dataset("mnist", tmp_path)
    message = str(error.value)
    assert message.startswith("cannot download mnist (127.0.0.1: ") and "and 1 other mirror(s)" in message
    assert "--data-dir DIR" in message and "\n" not in message
    assert len(message) < 200, message  # was 420 characters, printed once per cell of a sweep
    assert not list(tmp_path.glob("*.part"))


def test_no_internet_says_so_briefly(tmp_path, monkeypatch):
    import socket
    import urllib.error

    def offline(url, timeout=None):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(FatalError, match=r"^cannot download fashion-mnist \(fashion-mnist\.s3-website\."
                       r"eu-central-1\.amazonaws\.com: Temporary failure in name resolution\): put its four IDX "
                       r"files in a folder and pass --data-dir DIR \(or set LARS_SYSTEMML_FASHION_DIR\)$"):
        data.download_dataset("fashion-mnist", tmp_path)


def test_cached_download_is_verified_and_reused(tmp_path, mnist_dir, monkeypatch):
    # a verified copy in the cache is found without any network access
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    (tmp_path / "mnist").mkdir()
    for f in mnist_dir.glob("*.gz"):
        (tmp_path / "mnist" / f.name).write_bytes(f.read_bytes())
    monkeypatch.setitem(data.DATASETS["mnist"], "mirrors", ["http://127.0.0.1:9/"])
    data.download_dataset("mnist", tmp_path / "mnist")  # checksums match: nothing fetched
    assert data.resolve_data_dir("mnist") == tmp_path / "mnist"


def test_real_mnist_files(mnist_dir):
    train = data.load_split(mnist_dir, "train")
    test = data.load_split(mnist_dir, "t10k")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    for name, (gz_md5, _) in data.DATASETS["mnist"]["files"].items():
        assert datasets.file_md5(mnist_dir / f"{name}.gz") == gz_md5


def test_stratified_subset_keeps_class_shares():
    labels = np.repeat(np.arange(10), [100, 200, 50, 50, 100, 100, 100, 100, 100, 100])
    idx = data.subset_indices(labels, 100, "stratified")
    assert len(idx) == 100 and len(set(idx)) == 100 and np.all(np.diff(idx) > 0)
    assert np.bincount(labels[idx]).tolist() == [10, 20, 5, 5, 10, 10, 10, 10, 10, 10]
    np.testing.assert_array_equal(idx, data.subset_indices(labels, 100, "stratified"))  # seeded


def test_first_subset_and_full():
    labels = np.arange(50) % 10
    np.testing.assert_array_equal(data.subset_indices(labels, 7, "first"), np.arange(7))
    assert len(data.subset_indices(labels, None)) == 50 and len(data.subset_indices(labels, 50)) == 50
    with pytest.raises(UserError, match="subset size 500 is more than the 50 rows"):
        data.subset_indices(labels, 500)


def test_to_matrices_scaling_and_one_hot():
    split = data.Split(np.full((2, 28, 28), 255, dtype=np.uint8), np.array([3, 0], dtype=np.uint8))
    x, y = data.to_matrices(split)
    assert x.shape == (2, 784) and x.max() == 1.0
    assert y.tolist()[0] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0] and y.sum() == 2


def test_fashion_folder_next_to_the_mnist_env_folder(tmp_path, monkeypatch):
    # LARS_SYSTEMML_DATA_DIR names the MNIST folder; Fashion-MNIST is looked up beside it
    mnist, fashion = make_dataset(tmp_path / "mnist"), make_dataset(tmp_path / "fashion-mnist")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(mnist))
    monkeypatch.delenv(data.FASHION_DIR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    assert data.resolve_data_dir("mnist") == mnist
    assert data.resolve_data_dir("fashion-mnist") == fashion
    # its own variable comes first
    other = make_dataset(tmp_path / "elsewhere")
    monkeypatch.setenv(data.FASHION_DIR_ENV, str(other))
    assert data.resolve_data_dir("fashion-mnist") == other
    # no fashion folder beside it: the cache (here empty, no download allowed)
    monkeypatch.delenv(data.FASHION_DIR_ENV)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(make_dataset(tmp_path / "solo" / "mnist")))
    with pytest.raises(UserError, match="fashion-mnist is not in the cache .*LARS_SYSTEMML_FASHION_DIR"):
        data.resolve_data_dir("fashion-mnist", download=False)


def test_a_folder_of_the_other_dataset_is_refused(mnist_dir, fashion_dir):
    assert data.identify(mnist_dir).dataset == "mnist" and data.identify(fashion_dir).dataset == "fashion-mnist"
    with pytest.raises(UserError, match="holds mnist, not fashion-mnist: .*LARS_SYSTEMML_FASHION_DIR"):
        data.resolve_data_dir("fashion-mnist", mnist_dir)
    with pytest.raises(UserError, match="holds fashion-mnist, not mnist"):
        data.resolve_data_dir("mnist", fashion_dir)


def test_real_fashion_mnist_files(fashion_dir):
    test = data.load_split(fashion_dir, "t10k")
    assert test.images.shape == (10000, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10  # balanced, unlike MNIST


def test_to_matrices_float_pixels_and_other_class_counts():
    # a folder data set's images arrive as float rows, already scaled: used as given
    split = data.Split(np.array([[0.5, -2.0, 7.0], [1.0, 0.0, 0.25]]), np.array([2, 0]))
    x, y = data.to_matrices(split, classes=3)
    np.testing.assert_array_equal(x, [[0.5, -2.0, 7.0], [1.0, 0.0, 0.25]])
    assert y.tolist() == [[0, 0, 1], [1, 0, 0]]


def test_unknown_dataset_names_the_folder_layout():
    with pytest.raises(UserError, match=r"unknown dataset 'svhn'.*mnist, fashion-mnist or a folder with dataset\.json"):
        data.prepare("svhn")


# ---------------------------------------------------------------- data identity by content


def _regzip(src, dst, level=1):
    """src's four files, decompressed and gzipped again at ``level`` (other bytes, same content)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in data.FILE_NAMES:
        (dst / f"{name}.gz").write_bytes(gzip.compress(gzip.decompress((src / f"{name}.gz").read_bytes()), level))
    return dst


def test_a_regzipped_copy_is_identified_by_its_content(tmp_path, mnist_dir, fashion_dir):
    copy = _regzip(fashion_dir, tmp_path / "looks-like-mnist")
    name = "train-images-idx3-ubyte"
    assert datasets.file_md5(copy / f"{name}.gz") != data.DATASETS["fashion-mnist"]["files"][name][0]
    with pytest.raises(FatalError, match=r"holds fashion-mnist, not mnist: pass the mnist folder"):
        data.resolve_data_dir("mnist", copy)
    assert data.resolve_data_dir("fashion-mnist", copy) == copy
    # raw (not gzipped) files are the same content: the same identity and fingerprint
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in data.FILE_NAMES:
        (raw / name).write_bytes(gzip.decompress((copy / f"{name}.gz").read_bytes()))
    assert data.locate("fashion-mnist", raw).fingerprint == data.locate("fashion-mnist", fashion_dir).fingerprint


def test_files_of_two_data_sets_in_one_folder_are_an_error_naming_each(tmp_path, mnist_dir, fashion_dir):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in data.FILE_NAMES:
        (mixed / f"{name}.gz").symlink_to((mnist_dir if name.startswith("train") else fashion_dir) / f"{name}.gz")
    with pytest.raises(FatalError) as error:
        data.resolve_data_dir("mnist", mixed)
    assert str(error.value) == (
        f"data folder {mixed} (from --data-dir) mixes data sets: train-images-idx3-ubyte.gz, "
        f"train-labels-idx1-ubyte.gz are mnist; t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz are "
        f"fashion-mnist: put the four files of one data set in a folder")
    # one altered file among a known set's is a mix too (with a file of no known set)
    altered = make_dataset(tmp_path / "altered")
    for name in data.FILE_NAMES[:3]:
        (altered / f"{name}.gz").unlink()
        (altered / f"{name}.gz").symlink_to(mnist_dir / f"{name}.gz")
    with pytest.raises(FatalError, match=r"t10k-labels-idx1-ubyte.gz is no known data set's file"):
        data.resolve_data_dir("mnist", altered)


def test_a_folder_of_no_known_data_set_is_custom_data_with_one_warning(tmp_path, capsys, monkeypatch):
    folder = make_dataset(tmp_path / "mine")
    first = data.locate("mnist", folder)
    again = data.locate("mnist", folder)
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {folder} holds IDX files of no known data set")
    assert first.identity == again.identity == data.CUSTOM
    assert first.checksums == {n: hashlib.md5(gzip.decompress((folder / f"{n}.gz").read_bytes())).hexdigest()
                               for n in data.FILE_NAMES}
    # prepare records it (no JVM here: the SystemDS writer is stubbed)
    monkeypatch.setattr(data, "write_binary", lambda matrices, target: None)
    prepared = data.prepare("mnist", folder, prepared_root=tmp_path / "prepared")
    assert (prepared.identity, prepared.checksums, prepared.train_size) == (data.CUSTOM, first.checksums, 40)
    info = json.loads((prepared.folder / "prepared.json").read_text())
    assert info["identity"] == data.CUSTOM and info["checksums"] == first.checksums
    assert not (prepared.folder / "owner.json").exists()


def test_prepared_data_says_what_the_files_are(tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setattr(data, "write_binary", lambda matrices, target: None)
    prepared = data.prepare("mnist", mnist_dir, train_size=100, test_size=50, prepared_root=tmp_path)
    assert prepared.identity == "mnist" and prepared.fingerprint in prepared.folder.name
    assert prepared.checksums == {n: raw for n, (_, raw) in data.DATASETS["mnist"]["files"].items()}


def test_the_download_cache_must_hold_the_data_set_itself(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    make_dataset(tmp_path / "mnist")
    with pytest.raises(FatalError, match=r"\(the download cache\) holds files of no known data set, not mnist: "
                                         r"delete that folder"):
        data.resolve_data_dir("mnist", download=False)


def test_identity_is_cached_by_file_stat(tmp_path, mnist_dir, monkeypatch):
    data.locate("mnist", mnist_dir)  # hashed (or found in the cache)

    def no_reading(path, *args, **kwargs):
        assert os.path.getsize(path) < datasets.CACHE_MIN_BYTES, f"{path}: its digest is cached"
        return opener(path, *args, **kwargs)

    started = time.perf_counter()
    opener = gzip.open
    monkeypatch.setattr(datasets.gzip, "open", no_reading)
    datasets._DIGESTS.clear()  # as a new process: from the cache file
    source = data.locate("mnist", mnist_dir)
    assert source.identity == "mnist" and time.perf_counter() - started < 0.5
    # a file changed in place is hashed again
    copy = tmp_path / "copy"
    copy.mkdir()
    big = copy / "train-images-idx3-ubyte.gz"
    big.write_bytes(gzip.compress(bytes(2 << 20), 1))
    monkeypatch.undo()
    os.utime(big, (time.time() - 60, time.time() - 60))  # settled: cacheable
    assert datasets.file_md5(big, decompress=True) == hashlib.md5(bytes(2 << 20)).hexdigest()
    big.write_bytes(gzip.compress(b"\x01" * (2 << 20), 1))
    os.utime(big, (time.time() - 30, time.time() - 30))
    assert datasets.file_md5(big, decompress=True) == hashlib.md5(b"\x01" * (2 << 20)).hexdigest()


@pytest.mark.parametrize("sizes, message", [
    ({"train_size": 70000}, r"train_size 70000 is more than the 60000 training images of mnist .*at most 60000"),
    ({"test_size": 20000}, r"test_size 20000 is more than the 10000 test images of mnist .*at most 10000"),
])
def test_sizes_larger_than_the_data_are_an_error_before_any_jvm(mnist_dir, monkeypatch, sizes, message):
    def no_jvm(*args):
        raise AssertionError("no JVM before the sizes are checked")

    monkeypatch.setattr(data, "write_binary", no_jvm)
    monkeypatch.setattr(data, "load_matrices", no_jvm)  # the published counts suffice, no file is read
    with pytest.raises(FatalError, match=message):
        data.prepare("mnist", mnist_dir, **sizes)


def test_sizes_of_custom_idx_data_come_from_its_headers(tmp_path, monkeypatch):
    folder = make_dataset(tmp_path / "mine", n_train=40, n_test=20)
    monkeypatch.setattr(data, "write_binary", lambda matrices, target: None)
    with pytest.raises(FatalError, match=r"test_size 21 is more than the 20 test images"):
        data.prepare("mnist", folder, test_size=21, prepared_root=tmp_path / "p")
    assert data.prepare("mnist", folder, train_size=40, test_size=20, prepared_root=tmp_path / "p").test_size == 20


def test_a_killed_prepare_leaves_no_half_written_folder(tmp_path, monkeypatch):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "prepared"
    stale = root / ".mnist-x-all-all-stratified-abc123"
    stale.mkdir(parents=True)
    (stale / "owner.json").write_text(json.dumps({"pid": dead.pid, "host": locks.host(), "started": "then"}))
    live = root / ".mnist-y-all-all-stratified-def456"
    live.mkdir()
    locks.write_owner(live)
    monkeypatch.setattr(data, "write_binary", lambda matrices, target: None)
    data.prepare("mnist", make_dataset(tmp_path / "mine"), prepared_root=root)
    assert not stale.exists() and live.exists()
