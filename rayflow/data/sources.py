"""Readers for the supported real-data sources. Each returns (train, test) ImageSets."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from rayflow.data.imageset import DataError, ImageSet

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}


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


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4:
        raise DataError(f"{where}: images must be (N,H,W), (N,H,W,C) or (N,C,H,W), got shape {x.shape}")
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating) and x.size and x.max() <= 1.0 and x.min() >= 0.0:
            x = x * 255.0
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x)


def _labelled(x: np.ndarray, y: np.ndarray, task: str, num_classes: int | None, where: str) -> ImageSet:
    if task == "regression":
        return ImageSet(x, np.asarray(y, np.float32), None)
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{where}: classification labels must be integers, got {y.dtype}")
    if y.size and y.min() < 0:
        raise DataError(f"{where}: label {int(y.min())} is out of range (labels must be >= 0)")
    return ImageSet(x, y.astype(np.int64), num_classes or int(y.max()) + 1)


def load_npz(path: str, task: str, num_classes: int | None) -> tuple[ImageSet, ImageSet | None]:
    """NPZ with `images`, `labels` and optionally `test_images`, `test_labels`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"NPZ file not found: {p}")
    try:
        z = np.load(p, allow_pickle=False)
        files = set(z.files)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read NPZ file {p}: {e}") from None
    for k in ("images", "labels"):
        if k not in files:
            raise DataError(f"NPZ file {p} has no array {k!r} (found: {sorted(files)})")
    train = _labelled(_to_nchw(z["images"], str(p)), z["labels"], task, num_classes, str(p))
    test = None
    if "test_images" in files:
        test = _labelled(_to_nchw(z["test_images"], str(p)), z["test_labels"], task,
                         train.num_classes if task == "classification" else None, str(p))
    return train, test


def load_parquet(path: str, task: str, num_classes: int | None) -> tuple[ImageSet, ImageSet | None]:
    """Parquet file/folder with an `image` column (encoded PNG/JPEG bytes or nested arrays) and `label`."""
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
        x = np.stack([_decode_image(b, f"{p} row {i}") for i, b in enumerate(col.to_pylist())])
    else:
        x = np.asarray(col.to_pylist())
    return _labelled(_to_nchw(x, str(p)), table.column("label").to_numpy(), task, num_classes, str(p)), None


def _decode_image(data: bytes, where: str) -> np.ndarray:
    import io

    from PIL import Image

    try:
        return np.asarray(Image.open(io.BytesIO(data)))
    except Exception as e:
        raise DataError(f"cannot decode image at {where}: {e}") from None


def load_folder(path: str, num_classes: int | None) -> tuple[ImageSet, list[str]]:
    """`path/<class name>/*.png`: class ids follow the sorted folder names."""
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders (expected {root}/<class>/<image>.png)")
    xs, ys, shape, first = [], [], None, None
    for c, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() not in _IMAGE_EXT:
                continue
            try:
                a = np.asarray(Image.open(f))
            except Exception as e:
                raise DataError(f"cannot read image {f}: {e}") from None
            if shape is None:
                shape, first = a.shape, f
            elif a.shape != shape:
                raise DataError(f"image shape mismatch: {f} is {a.shape} but {first} is {shape}")
            xs.append(a)
            ys.append(c)
    if not xs:
        raise DataError(f"image folder {root} holds no images ({', '.join(sorted(_IMAGE_EXT))})")
    n = num_classes or len(classes)
    return _labelled(_to_nchw(np.stack(xs), str(root)), np.array(ys), "classification", n, str(root)), classes
