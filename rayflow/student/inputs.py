"""What `rayflow predict` reads: image files, folders of them, an NPZ with `x` (or `images`), or a
Parquet file with an `image` column; every image becomes uint8 (C, H, W) at the student's size.

A `Source` is a small picklable description (paths, counts): each Ray Data actor reads its own
chunks from it, and the in-process path reads the very same chunks, so both see identical pixels.
Image files are opened with PIL, converted to the student's mode (L or RGB) and sized as a `folder`
source sizes its pictures (`data.images.fit`); arrays go through the data loader's own checks (`as_images`) and its
size rule (`splits.upscale` / `splits.resize`), the rule the student's training images followed.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rayflow.data.imageset import DataError, as_images

STORE_READS = 8  # object-store reads in flight per reader
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def image_to_array(img, channels: int, size: int, where: str) -> np.ndarray:
    """A PIL image -> uint8 (C, size, size) in the student's mode (alpha dropped), sized exactly as a
    `folder` source sizes its training pictures (rayflow/data/images.py `fit`: EXIF orientation, the
    shorter side resized, the longer centre-cropped), so a picture predicts as it would have trained."""
    from PIL import ImageOps

    from rayflow.data.images import fit

    try:
        img = ImageOps.exif_transpose(img).convert("L" if channels == 1 else "RGB")
        a = np.asarray(fit(img, size), dtype=np.uint8)
    except Exception as e:  # PIL raises many types for truncated or odd files
        raise DataError(f"cannot read image {where}: {e}") from None
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def read_image_file(path: str, channels: int, size: int, fs=None, name: str = "") -> np.ndarray:
    """A local file, or (`fs`: a pyarrow filesystem) a file read through it; `name` in messages."""
    from PIL import Image

    where = name or path
    try:
        src = io.BytesIO(_read_bytes(fs, path)) if fs is not None else path
        with Image.open(src) as img:
            img.load()
            return image_to_array(img, channels, size, where)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read image {where}: {e}") from None


def _read_bytes(fs, path: str) -> bytes:
    with fs.open_input_file(path) as f:
        return f.read()


FIT, BUILTIN = "fit", "builtin"  # student.json input.resize: how the student's training images were sized


def fit_arrays(x: np.ndarray, channels: int, size: int, where: str, rule: str = BUILTIN) -> np.ndarray:
    """User arrays (any layout `as_images` takes) -> uint8 (N, C, size, size), sized by the rule the
    student's training images followed (student.json `input.resize`): FIT, a user's own data
    (data/images.py `resize_array`, as the data loader sizes npz / parquet / folder sets), or BUILTIN,
    a built-in set (nearest-neighbour upscale to a multiple, else centre pad or crop; also what a
    student.json without the field means)."""
    from rayflow.data.images import resize_array
    from rayflow.data.imageset import ImageSet
    from rayflow.data.splits import resize, upscale

    x = as_images(x, where)
    if x.shape[1] != channels:
        raise DataError(f"{where}: images have {x.shape[1]} channel(s) but the student takes {channels}")
    h = x.shape[2]
    if (h, x.shape[3]) == (size, size):
        return x
    if rule == FIT:
        return resize_array(x, size)
    s = ImageSet(x, np.zeros(len(x), np.float32), None)
    fn = upscale if size % h == 0 and size > h else resize
    return fn(s, size).images


@dataclass
class Source:
    """The inputs of one prediction run: `kind` "files" (`paths`), "npz" or "parquet" (`path`), or
    "array" (`array`, images in memory: the Python API). `store`: files on an object store, named by
    its URI (s3://bucket): each reader resolves its own filesystem from it (credentials from the
    worker's environment), so the Source pickles as paths, never as a client or bytes."""

    kind: str
    ids: list[str]
    path: str = ""
    paths: list[str] = field(default_factory=list)
    array: np.ndarray | None = None
    store: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, start: int, stop: int, channels: int, size: int, rule: str = BUILTIN) -> np.ndarray:
        """Images start..stop-1 as uint8 (n, C, size, size); arrays sized by `rule` (`fit_arrays`)."""
        if self.kind == "files" and self.store:
            from concurrent.futures import ThreadPoolExecutor

            from rayflow.store_fs import resolve

            fs = resolve(self.store, what="input")[1]
            with ThreadPoolExecutor(STORE_READS) as pool:  # object-store reads wait on the network
                return np.stack(list(pool.map(lambda i: read_image_file(self.paths[i], channels, size, fs,
                                                                        self.ids[i]), range(start, stop))))
        if self.kind == "files":
            return np.stack([read_image_file(p, channels, size) for p in self.paths[start:stop]])
        if self.kind == "array":
            return fit_arrays(self.array[start:stop], channels, size, "input array", rule)
        if self.kind == "npz":
            return fit_arrays(_npz_images(self.path)[start:stop], channels, size, self.path, rule)
        return _parquet_images(self.path, start, stop, channels, size, rule)


@functools.lru_cache(maxsize=1)
def _npz_images(path: str) -> np.ndarray:
    """Read once per process: every chunk of a run slices the same array."""
    with np.load(path, allow_pickle=False) as z:
        return z[_npz_key(z.files, path)]


@functools.lru_cache(maxsize=1)
def _parquet_column(path: str) -> list:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["image"]).column("image").to_pylist()


def _npz_key(files: list[str], path: str) -> str:
    for k in ("x", "images"):
        if k in files:
            return k
    raise DataError(f"NPZ file {path} has no array 'x' or 'images' (it has: {', '.join(sorted(files)) or 'nothing'})")


def _parquet_images(path: str, start: int, stop: int, channels: int, size: int, rule: str) -> np.ndarray:
    col = _parquet_column(path)[start:stop]
    if col and isinstance(col[0], (bytes, bytearray)):
        from PIL import Image

        return np.stack([_decode(b, channels, size, f"{path} row {start + i}", Image) for i, b in enumerate(col)])
    return fit_arrays(np.asarray(col), channels, size, path, rule)


def _decode(data: bytes, channels: int, size: int, where: str, Image) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as e:
        raise DataError(f"cannot decode image at {where}: {e}") from None
    return image_to_array(img, channels, size, where)


def _image_files(p: Path) -> list[str]:
    """A folder's images, recursively, in sorted order (stable ids across runs)."""
    files = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXT)
    if not files:
        raise DataError(f"folder {p} holds no images ({', '.join(sorted(IMAGE_EXT))})")
    return files


def collect(inputs: list[str | Path] | np.ndarray) -> Source:
    """One Source from the command line's INPUT arguments (or an array of images), checked before any
    model runs."""
    if isinstance(inputs, np.ndarray):
        as_images(inputs[:1], "input array")  # layout, dtype and range fail here, not inside an actor
        return Source("array", ids=[str(i) for i in range(len(inputs))], array=inputs)
    if not inputs:
        raise DataError("no input given (image files, a folder, an NPZ file or a Parquet file)")
    if any("://" in str(i) for i in inputs):
        return _store_source([str(i) for i in inputs])
    paths = [Path(i) for i in inputs]
    for p in paths:
        if not p.exists():
            raise DataError(f"input not found: {p}")
    arrays = [p for p in paths if p.is_file() and p.suffix.lower() in (".npz", ".parquet")]
    if arrays:
        if len(paths) > 1:
            raise DataError(f"give one NPZ or Parquet file alone, not with other inputs ({arrays[0]})")
        return _array_source(arrays[0])
    files: list[str] = []
    for p in paths:
        if p.is_dir():
            files += _image_files(p)
        elif p.suffix.lower() in IMAGE_EXT:
            files.append(str(p))
        else:
            raise DataError(f"{p}: not an image ({', '.join(sorted(IMAGE_EXT))}), folder, .npz or .parquet file")
    return Source("files", ids=files, paths=files)


def _array_source(p: Path) -> Source:
    if p.suffix.lower() == ".npz":
        from rayflow.data.sources import _open_npz  # its format checks: never unpickles

        with _open_npz(p) as z:
            n = len(z[_npz_key(z.files, str(p))])
        return Source("npz", ids=[str(i) for i in range(n)], path=str(p))
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(p)
        names = schema.names
        ids = next((pq.read_table(p, columns=[k]).column(k).to_pylist() for k in ("id", "path") if k in names), None)
        n = pq.ParquetFile(p).metadata.num_rows
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"cannot read Parquet {p}: {e}") from None
    if "image" not in names:
        raise DataError(f"Parquet {p} has no column 'image' (found: {names})")
    return Source("parquet", ids=[str(i) for i in (ids if ids is not None else range(n))], path=str(p))


def _store_source(inputs: list[str]) -> Source:
    """Images under object-store prefixes (any nesting) or single objects, all on one bucket, listed
    through pyarrow.fs (the lister `data: folder` uses) in sorted order; ids are their s3:// URIs."""
    import pyarrow.fs as pafs

    from rayflow.data.folder import entries, info
    from rayflow.store_fs import StoreError, resolve

    paths: list[str] = []
    stores = set()
    for loc in inputs:
        try:
            location, fs, root, local = resolve(loc, what="input")
        except StoreError as e:
            raise DataError(str(e)) from None
        store = location[:len(location) - len(root)] + root.split("/", 1)[0]  # s3://bucket
        stores.add(store)
        kind = info(fs, root, location).type
        if kind == pafs.FileType.File:
            if Path(root).suffix.lower() not in IMAGE_EXT:
                raise DataError(f"{location}: an object-store input must be an image or a prefix of images")
            paths.append(root)
        elif kind == pafs.FileType.Directory:
            found = sorted(i.path for i in entries(fs, root, location, recursive=True)
                           if i.type == pafs.FileType.File and Path(i.base_name).suffix.lower() in IMAGE_EXT)
            if not found:
                raise DataError(f"{location} holds no images ({', '.join(sorted(IMAGE_EXT))})")
            paths += found
        else:
            raise DataError(f"input not found: {location}")
    if len(stores) > 1 or any("://" not in s for s in stores):
        raise DataError(f"object-store inputs must all be on one bucket, without local inputs ({', '.join(inputs)})")
    store = stores.pop()
    prefix = store.split("://", 1)[0] + "://"
    return Source("files", ids=[prefix + p for p in paths], paths=paths, store=store)
