"""Readers for the supported real-data sources. Each returns (train, test) ImageSets (image folders:
rayflow/data/folder.py).

Every problem with a user's file becomes one DataError naming the file and what is wrong, raised
while the data loads, before any compute.
"""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from rayflow.data.imageset import DataError, ImageSet, as_images, labelled
from rayflow.data.images import stack

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGITS_CLASSES = [str(d) for d in range(10)]


def data_dir() -> Path:
    return Path(os.environ.get("RAYFLOW_DATA_DIR", FASHION_MNIST_DIR))


def read_idx(path: Path) -> np.ndarray:
    """Standard MNIST IDX format (optionally gzipped)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            b = f.read()
        nd = b[3]
        shape = [int.from_bytes(b[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd)]
        return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(shape)
    except (OSError, ValueError, IndexError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}. Install the Debian package "
        f"(`sudo apt-get install dataset-fashion-mnist`) or point RAYFLOW_DATA_DIR at a folder "
        f"holding the IDX files.")


def load_fashion_mnist() -> tuple[ImageSet, ImageSet]:
    root = data_dir()
    out = []
    for split in ("train", "t10k"):
        x = read_idx(_find(root, f"{split}-images-idx3-ubyte"))
        y = read_idx(_find(root, f"{split}-labels-idx1-ubyte")).astype(np.int64)
        out.append(ImageSet(np.ascontiguousarray(x[:, None]), y, 10))
    return out[0], out[1]


def load_digits(test_fraction: float = 0.3, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """sklearn's bundled 8x8 digits (1,797 images): real data small enough for fast tests."""
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test_idx.extend(rng.choice(idx, int(round(len(idx) * test_fraction)), replace=False))
    mask = np.zeros(len(y), bool)
    mask[test_idx] = True
    return ImageSet(x[~mask], y[~mask], 10), ImageSet(x[mask], y[mask], 10)


# -- user files ------------------------------------------------------------------------------


def _open_npz(p: Path):
    """np.load unpickles anything that is not a zip or .npy, so the format is checked first: a
    corrupt file must read as 'not an NPZ file', not as 'pickled data'."""
    with open(p, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        raise DataError(f"{p} is a single .npy array, not an NPZ archive (write it with "
                        f"np.savez(path, images=..., labels=...))")
    if not zipfile.is_zipfile(p):
        raise DataError(f"{p} is not a valid NPZ file (not a zip archive)")
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{p} is not a valid NPZ file: {e}") from None
    if not z.files:
        z.close()
        raise DataError(f"NPZ file {p} holds no arrays (expected 'images' and 'labels')")
    return z


def _npz_array(z, key: str, p: Path) -> np.ndarray:
    """Arrays are read lazily, so object arrays and corrupt members surface here."""
    try:
        return z[key]
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise DataError(f"NPZ file {p}: array {key!r} holds object arrays (pickled data), which rayflow "
                            f"does not load") from None
        raise DataError(f"NPZ file {p}: cannot read array {key!r}: {e}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"NPZ file {p}: cannot read array {key!r}: {e}") from None


def _npz_keys(files: list[str], p: Path) -> bool:
    """Checks the key set; True when a test split is present (both test keys or neither)."""
    have = ", ".join(repr(k) for k in sorted(files))
    missing = [k for k in ("images", "labels") if k not in files]
    if missing:
        raise DataError(f"NPZ file {p} has no array {' or '.join(map(repr, missing))} (it has: {have})")
    test = [k for k in ("test_images", "test_labels") if k in files]
    if len(test) == 1:
        other = "test_labels" if test[0] == "test_images" else "test_images"
        raise DataError(f"NPZ file {p} has {test[0]!r} but no {other!r} (it has: {have}); give both or neither")
    return bool(test)


def load_npz(path: str, task: str, num_classes: int | None) -> tuple[ImageSet, ImageSet | None]:
    """NPZ with `images`, `labels` and optionally `test_images`, `test_labels`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"NPZ file not found: {p}")
    with _open_npz(p) as z:
        has_test = _npz_keys(z.files, p)
        train = labelled(as_images(_npz_array(z, "images", p), str(p)), _npz_array(z, "labels", p), task,
                         num_classes, str(p))
        test = None
        if has_test:
            where = f"{p} (test split)"
            test = labelled(as_images(_npz_array(z, "test_images", p), where), _npz_array(z, "test_labels", p),
                            task, train.num_classes, where, is_test=True)
    return train, test


def read_labels(name: str, path: str) -> np.ndarray:
    """Only the training labels of an npz or parquet file (the label range of a regression set)."""
    p = Path(path)
    if name == "npz":
        with _open_npz(p) as z:
            _npz_keys(z.files, p)
            return np.asarray(_npz_array(z, "labels", p))
    import pyarrow.parquet as pq

    try:
        return pq.read_table(p, columns=["label"]).column("label").to_numpy()
    except Exception as e:  # pyarrow raises several types for corrupt files or a missing column
        raise DataError(f"cannot read the label column of Parquet {p}: {e}") from None


def load_parquet(path: str, task: str, num_classes: int | None,
                 image_size: int | None = None) -> tuple[ImageSet, ImageSet | None]:
    """Parquet file/folder with an `image` column (encoded PNG/JPEG bytes or nested arrays) and `label`;
    encoded pictures may differ in size and mode (see rayflow/data/images.py)."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.exists():
        raise DataError(f"Parquet path not found: {p}")
    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"cannot read Parquet {p}: {e}") from None
    for k in ("image", "label"):
        if k not in table.column_names:
            raise DataError(f"Parquet {p} has no column {k!r} (found: {table.column_names})")
    col = table.column("image")
    first = col[0].as_py() if len(col) else None
    if isinstance(first, (bytes, bytearray)):
        rows = [f"{p} row {i}" for i in range(len(col))]
        x = stack([io.BytesIO(b) for b in col.to_pylist()], rows, image_size, str(p))
    else:
        x = np.asarray(col.to_pylist())
    return labelled(as_images(x, str(p)), table.column("label").to_numpy(), task, num_classes, str(p)), None
