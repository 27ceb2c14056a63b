"""The data-set registry and bring-your-own data: which data sets exist, their shapes,
and image/label arrays from a folder (or a file for ``predict``) checked against a shape.

A data set is either a known name (``KNOWN``: MNIST and Fashion-MNIST, IDX files read
by ``data.py``) or the path of a folder laid out as::

    my-set/
      dataset.json   {"channels": C, "height": H, "width": W, "classes": K, "name": "..."}
      train_x.npy    images: (N, C*H*W), (N, C, H, W), or (N, H, W) when C == 1
      train_y.npy    labels: integer class ids 0..K-1, shape (N,) or (N, 1)
      test_x.npy
      test_y.npy

Each array may instead be a ``.csv`` (numeric, comma-separated, no header; images one
row per image of C*H*W values); a ``.npy`` wins when both exist. ``"name"`` is optional
(default: the folder's name).

Images are rows of C*H*W values, channel-major (all of channel 0, then channel 1, ...;
each channel row by row) as SystemDS's ``conv2d`` expects, which is what a C-order
reshape of (N, C, H, W) gives. ``uint8`` pixels are scaled to [0, 1] by 1/255 as for
MNIST; float pixels (and every CSV) are used as given; other dtypes are refused rather
than guessed at.

This module reads no IDX file and starts no JVM: ``describe`` and ``validate_choice``
are cheap enough for the driver to call before SystemDS starts.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .models import Shape

# The built-in data sets (their files, checksums and download mirrors are in data.DATASETS).
KNOWN: dict[str, Shape] = {
    "mnist": Shape(1, 28, 28, 10),
    "fashion-mnist": Shape(1, 28, 28, 10),
}
SPEC_FILE = "dataset.json"
ROLES = ("train_x", "train_y", "test_x", "test_y")
SHAPE_KEYS = ("channels", "height", "width", "classes")
LAYOUT = ("a folder with dataset.json {\"channels\": C, \"height\": H, \"width\": W, \"classes\": K} "
          "and train_x, train_y, test_x, test_y as .npy or .csv")


@dataclass(frozen=True)
class FolderSpec:
    """A bring-your-own data set: its folder, name, shape and the four array files (role -> path)."""

    folder: Path
    name: str
    shape: Shape
    files: dict[str, Path]

    @property
    def spec_path(self) -> Path:
        return self.folder / SPEC_FILE

    def checksums(self) -> dict[Path, str]:
        """The MD5 of dataset.json and of each of the four files, in that order."""
        return {path: file_md5(path) for path in [self.spec_path, *(self.files[r] for r in ROLES)]}

    def fingerprint(self) -> str:
        """10 hex digits over the contents of dataset.json and the four files (the cache key)."""
        h = hashlib.sha1()
        for digest in self.checksums().values():
            h.update(digest.encode())
        return h.hexdigest()[:10]


def file_md5(path: Path, decompress: bool = False) -> str:
    """The MD5 hex digest of a file's bytes (``decompress``: of a .gz file's decompressed
    bytes), read in 1 MiB blocks.

    Large files' digests are cached by (path, size, mtime, ctime, inode) in the user cache
    (``checksums.json``), so that identifying a data set's files by content costs a stat
    per file once they were hashed. A file changed within the last few seconds is hashed
    every time (a timestamp's resolution could hide a second change, as git's index knows).
    Unreadable and corrupt files raise OSError, EOFError or zlib.error.
    """
    path = Path(path)
    st = path.stat()
    key = f"{'gunzip:' if decompress else ''}{path.resolve()}"
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    cacheable = st.st_size >= CACHE_MIN_BYTES and time.time() - st.st_mtime > SETTLED_S
    if cacheable:
        hit = _digests().get(key)
        if isinstance(hit, list) and hit[:-1] == stamp:
            return hit[-1]
    h = hashlib.md5()
    opener = gzip.open if decompress else open
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if cacheable:
        _digests()[key] = [*stamp, digest]
        _save_digests()
    return digest


CACHE_MIN_BYTES = 1 << 20  # smaller files hash faster than the cache is read
SETTLED_S = 3.0
_DIGESTS: dict[str, dict] = {}  # cache file -> its entries, read once per process


def _digest_file() -> Path:
    from .data import cache_dir  # data imports this module

    return cache_dir() / "checksums.json"


def _digests() -> dict:
    path = str(_digest_file())
    if path not in _DIGESTS:
        try:
            entries = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            entries = {}
        _DIGESTS[path] = entries if isinstance(entries, dict) else {}
    return _DIGESTS[path]


def _save_digests() -> None:
    """Write the cache (atomically; a cache that cannot be written is no error)."""
    path = _digest_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(_digests()))
        tmp.replace(path)
    except OSError:
        pass


# ---------------------------------------------------------------- choosing a data set


def is_known(dataset: str) -> bool:
    return dataset in KNOWN


def validate_choice(dataset: str) -> None:
    """Raise a one-line UserError unless ``dataset`` is a known name or a folder with dataset.json.

    A known name wins over a folder of that name in the working directory (pass ``./mnist``
    for the folder).
    """
    if not isinstance(dataset, str) or not dataset:
        raise UserError(f"dataset must be a name or a folder path, got {dataset!r}: "
                        f"choose one of {', '.join(KNOWN)} or {LAYOUT}")
    if is_known(dataset):
        return
    folder = Path(dataset).expanduser()
    if folder.is_dir() and (folder / SPEC_FILE).is_file():
        return
    if folder.is_dir():
        raise UserError(f"data set folder {folder} has no {SPEC_FILE}: write one with "
                        f"{{\"channels\": C, \"height\": H, \"width\": W, \"classes\": K}}")
    raise UserError(f"unknown dataset '{dataset}' (no such name or folder): choose one of "
                    f"{', '.join(KNOWN)} or {LAYOUT}")


def read_spec(dataset: str | os.PathLike) -> FolderSpec:
    """The folder data set at ``dataset``: dataset.json validated, the four files found (not read)."""
    if is_known(str(dataset)):
        raise UserError(f"{dataset} is a built-in data set, not a folder: pass a folder path (e.g. ./{dataset})")
    folder = Path(dataset).expanduser()
    validate_choice(str(dataset))
    path = folder / SPEC_FILE
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path} is not readable JSON ({exc}): write "
                        f"{{\"channels\": C, \"height\": H, \"width\": W, \"classes\": K}}") from None
    if not isinstance(spec, dict):
        raise UserError(f"{path} must hold a JSON object like "
                        f"{{\"channels\": C, \"height\": H, \"width\": W, \"classes\": K}}")
    missing = [k for k in SHAPE_KEYS if k not in spec]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: it needs "
                        f"{{\"channels\": C, \"height\": H, \"width\": W, \"classes\": K}}")
    unknown = sorted(set(spec) - set(SHAPE_KEYS) - {"name"})
    if unknown:
        raise UserError(f"{path} has unknown key(s) {', '.join(unknown)}: "
                        f"its keys are {', '.join(SHAPE_KEYS)} and an optional name")
    for key in SHAPE_KEYS:
        value = spec[key]
        low = 2 if key == "classes" else 1  # one class leaves nothing to classify
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UserError(f"{path}: {key} must be an integer >= {low}, got {value!r}")
    name = spec.get("name", folder.resolve().name)
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{path}: name must be a non-empty string, got {name!r}")
    if name in KNOWN:
        raise UserError(f"{path}: name '{name}' (from dataset.json or the folder's name) is a built-in "
                        f"data set's name: set another \"name\" in dataset.json")
    files = {}
    for role in ROLES:
        found = [folder / f"{role}{ext}" for ext in (".npy", ".csv") if (folder / f"{role}{ext}").is_file()]
        if not found:
            raise UserError(f"data set folder {folder} lacks {role}.npy (or {role}.csv): it needs "
                            f"{', '.join(ROLES)} as .npy or .csv")
        files[role] = found[0]
    return FolderSpec(folder, name.strip(), Shape(*(spec[k] for k in SHAPE_KEYS)), files)


def describe(dataset: str, data_dir=None) -> Shape:
    """The data set's shape, cheaply: before SystemDS starts, to check that the model fits.

    Known sets: their registered shape, no file read (``data_dir`` only matters for
    where their files are, not their shape). Folders: dataset.json plus the arrays'
    headers (.npy opened with mmap, the first line of a .csv), checked against it;
    prepare() validates the values.
    """
    validate_choice(dataset)
    if is_known(dataset):
        return KNOWN[dataset]
    spec = read_spec(dataset)
    rows = {}
    for role in ROLES:
        path = spec.files[role]
        dims = _header_shape(path)
        if role.endswith("_x"):
            check_image_dims(dims, spec.shape, path)
        else:
            _check_label_dims(dims, path)
        rows[role] = dims[0]
    for split in ("train", "test"):
        _check_counts(spec.files[f"{split}_x"], rows[f"{split}_x"], spec.files[f"{split}_y"], rows[f"{split}_y"])
    return spec.shape


def folder_counts(spec: FolderSpec) -> tuple[int | None, int | None]:
    """Training and test images of a folder data set from the arrays' headers (None for a .csv)."""
    return tuple(_header_shape(spec.files[f"{split}_x"])[0] for split in ("train", "test"))


# ---------------------------------------------------------------- reading arrays


def _header_shape(path: Path) -> tuple:
    """The array's shape without reading its values (.csv: rows unknown, as None)."""
    if path.suffix == ".npy":
        return _load_npy(path, mmap=True).shape
    try:
        with open(path) as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a readable CSV file ({exc}): write numbers, comma-separated, no header") from None
    if not first.strip():
        raise UserError(f"{path} is empty: write one row per image (or label), comma-separated, no header")
    return (None, len(first.split(",")))


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npy file ({str(exc).splitlines()[0]}): "
                        f"save it with numpy.save (a numeric array, no pickled objects)") from None
    if not isinstance(array, np.ndarray):  # an .npz saved under an .npy name
        raise UserError(f"{path} is not a single .npy array: save it with numpy.save")
    return array


def load_array(path: str | os.PathLike) -> np.ndarray:
    """A whole .npy (any dtype, as saved) or .csv (float64, 2-D) file, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist: give an existing .npy or .csv file")
    if path.suffix == ".npy":
        return _load_npy(path)
    if path.suffix != ".csv":
        raise UserError(f"{path} is neither .npy nor .csv: save the array with numpy.save")
    try:
        array = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not numeric CSV ({str(exc).splitlines()[0]}): "
                        f"write numbers only, comma-separated, no header") from None
    if array.size == 0:
        raise UserError(f"{path} is empty: write one row per image (or label), comma-separated, no header")
    return array


def check_image_dims(dims: tuple, shape: Shape, path) -> None:
    """Raise unless ``dims`` is (N, C*H*W), (N, C, H, W) or, when C == 1, (N, H, W)."""
    c, h, w = shape.channels, shape.height, shape.width
    d = c * h * w
    forms = f"(N, {d}), (N, {c}, {h}, {w})" + (f" or (N, {h}, {w})" if c == 1 else "")
    rest = tuple(dims[1:])
    if rest in {(d,), (c, h, w)} or (c == 1 and rest == (h, w)):
        if dims[0] == 0:
            raise UserError(f"{path} holds no images: it needs at least one")
        return
    hint = ""
    if c > 1 and rest == (h, w, c):
        hint = " (channels last? transpose with x.transpose(0, 3, 1, 2))"
    shown = "(" + ", ".join("N" if n is None else str(n) for n in dims) + ("," if len(dims) == 1 else "") + ")"
    raise UserError(f"{path} has images of shape {shown}, expected {forms} for {shape}{hint}: "
                    f"fix the array or dataset.json")


def _check_label_dims(dims: tuple, path) -> None:
    if len(dims) == 1 or (len(dims) == 2 and dims[1] == 1):
        if dims[0] == 0:
            raise UserError(f"{path} holds no labels: it needs one per image")
        return
    raise UserError(f"{path} has labels of shape {tuple(dims)}, expected (N,) or (N, 1) "
                    f"integer class ids (not one-hot): save labels.argmax(axis=1) if one-hot")


def _check_counts(x_path, nx, y_path, ny) -> None:
    if nx is not None and ny is not None and nx != ny:
        raise UserError(f"{x_path} has {nx} images but {y_path} has {ny} labels: "
                        f"the files do not belong together")


def to_pixels(array: np.ndarray, shape: Shape, path) -> np.ndarray:
    """Images in any accepted layout -> float64 (N, C*H*W), channel-major; uint8 scaled by 1/255.

    ``path`` names the file in the errors: wrong layout, a dtype other than uint8 or
    float, NaN or infinite pixels.
    """
    check_image_dims(array.shape, shape, path)
    if array.dtype == np.uint8:
        x = array.reshape(array.shape[0], -1).astype(np.float64) / 255.0
    elif array.dtype.kind == "f":
        x = np.array(array.reshape(array.shape[0], -1), dtype=np.float64)
    else:
        raise UserError(f"{path} has pixels of dtype {array.dtype}: save uint8 pixels 0..255 "
                        f"(scaled by 1/255) or floats (used as given)")
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise UserError(f"{path} has {int(bad.sum())} NaN or infinite pixels (first in image {row}): "
                        f"replace them with finite values")
    return x


def to_labels(array: np.ndarray, classes: int, path) -> np.ndarray:
    """Class ids (N,) or (N, 1) -> int64 (N,), checked to be integers in 0..classes-1."""
    _check_label_dims(array.shape, path)
    y = array.reshape(-1)
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            bad = y[~np.isfinite(y) | (y != np.round(y))][0]
            raise UserError(f"{path} has non-integer label {bad}: labels are class ids 0..{classes - 1}")
    elif y.dtype.kind not in "iu":
        raise UserError(f"{path} has labels of dtype {y.dtype}: save integer class ids 0..{classes - 1}")
    low, high = y.min(), y.max()
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise UserError(f"{path} has label {int(bad)}, outside 0..{classes - 1}: fix the labels "
                        f"or \"classes\" in dataset.json")
    return y.astype(np.int64)


def load_folder(spec: FolderSpec) -> dict[str, np.ndarray]:
    """All four arrays of a folder data set, fully validated: ``train_x``/``test_x`` float64
    (N, C*H*W) pixels, ``train_y``/``test_y`` int64 (N,) class ids."""
    out = {}
    for role in ROLES:
        path = spec.files[role]
        array = load_array(path)
        if role.endswith("_x"):
            out[role] = to_pixels(array, spec.shape, path)
        else:
            out[role] = to_labels(array, spec.shape.classes, path)
    for split in ("train", "test"):
        _check_counts(spec.files[f"{split}_x"], len(out[f"{split}_x"]),
                      spec.files[f"{split}_y"], len(out[f"{split}_y"]))
    return out


def read_images(path: str | os.PathLike, shape: Shape) -> np.ndarray:
    """Images to classify (``predict --input``): float64 (N, C*H*W) in the model's shape.

    The same rules as a data set's images: a .npy of (N, C*H*W), (N, C, H, W) or (N, H, W)
    when C == 1 (uint8 scaled by 1/255, floats as given), or a .csv of N rows of C*H*W values.
    """
    path = Path(path)
    return to_pixels(load_array(path), shape, path)
