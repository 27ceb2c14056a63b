"""IDX parsing, validation of bad files, data-folder resolution and subsets."""
import gzip
import struct

import numpy as np
import pytest

from lars_systemml import data, datasets
from lars_systemml.errors import UserError


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


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(data.DATASETS["mnist"], "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(UserError, match="could not download .*--data-dir"):
        data.download_dataset("mnist", tmp_path)
    assert not list(tmp_path.glob("*.part"))


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
    assert len(data.subset_indices(labels, None)) == 50
    assert len(data.subset_indices(labels, 500)) == 50


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
    assert data.identify(mnist_dir) == "mnist" and data.identify(fashion_dir) == "fashion-mnist"
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
