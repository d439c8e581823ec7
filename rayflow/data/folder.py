"""`data.name: folder`: class sub-folders of encoded pictures, on local disk or an object store
(`data.path: s3://bucket/prefix`, through the same pyarrow filesystem as the artifact store).

Why a cache: a folder may not fit the driver's memory. The pictures are decoded and fitted in
parallel (the executor's `map_batches`: Ray Data actors, or in process) and written into one uint8
.npy under $RAYFLOW_CACHE/images/<key>, which the run then memory-maps: pages are read as batches
need them. The key hashes the listing (paths, sizes, mtimes), data.image_size and the preparation
version, so a changed file builds a new cache and an unchanged folder is decoded once per machine.
A build is committed by its marker, written last; a directory without one (a killed build) is
rebuilt, never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

from rayflow.config_data import USER_PREP
from rayflow.data import image_steps
from rayflow.data.images import check_headers, warn_alpha
from rayflow.data.imageset import DataError, ImageSet, labelled
from rayflow.data.mapped import RowWriter

log = logging.getLogger("rayflow")
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}
CACHE_VERSION = 1  # bump when the cache's layout changes
MARKER = "_COMMITTED"
IN_PROCESS_BELOW = 2048  # pictures: fewer decode in process in less time than Ray Data takes to start actors


class Names:
    """`prefix`/each picture's path under the folder, as one bytes array: 100,000 pictures are ~2 MB,
    not ~40 MB of Python strings, in the driver and in every decode actor it is shipped to."""

    def __init__(self, prefix: str, rels: np.ndarray):
        self.prefix, self.rels = prefix, rels

    def __len__(self) -> int:
        return len(self.rels)

    def __getitem__(self, i: int) -> str:
        return f"{self.prefix}/{self.rels[i].decode()}"

    def __iter__(self):
        return (f"{self.prefix}/{r.decode()}" for r in self.rels)


@dataclass
class Listing:
    """A folder's pictures in class order: where they are, what to call them, their class ids."""

    location: str  # the folder as resolved (absolute path or s3://bucket/prefix)
    fs: pafs.FileSystem
    paths: Names  # inside `fs`
    names: Names  # for messages: location/<class>/<file>
    labels: np.ndarray
    classes: list[str]
    sizes: np.ndarray  # bytes and mtime_ns of each file: with the relative paths, the cache key's part
    mtimes: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


def info(fs: pafs.FileSystem, path: str, where: str) -> pafs.FileInfo:
    from rayflow.store_fs import one_line

    try:
        return fs.get_file_info(path)
    except OSError as e:
        raise DataError(f"cannot open image folder {where}: {one_line(e)}") from None


def entries(fs: pafs.FileSystem, path: str, where: str, recursive: bool = False) -> list[pafs.FileInfo]:
    """What is under `path` (local or object store; `recursive`: at any depth), listing errors as one
    DataError line (`rayflow predict` lists its object-store inputs through here too)."""
    from rayflow.store_fs import one_line

    try:
        return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
    except OSError as e:
        raise DataError(f"cannot list image folder {where}: {one_line(e)}") from None


def list_folder(path: str, num_classes: int | None) -> Listing:
    """Class folders and their pictures (sorted by name; class ids follow the folder names)."""
    from rayflow.store_fs import StoreError, resolve

    try:
        location, fs, root, _ = resolve(path, what="data.path")
    except StoreError as e:
        raise DataError(str(e)) from None
    if info(fs, root, location).type != pafs.FileType.Directory:
        raise DataError(f"image folder not found: {location}")
    classes = sorted(i.base_name for i in entries(fs, root, location)
                     if i.type == pafs.FileType.Directory and not i.base_name.startswith("."))
    if not classes:
        raise DataError(f"image folder {location} has no class sub-folders (expected {location}/<class>/<image>.png)")
    if len(classes) < 2:
        raise DataError(f"image folder {location}: classification needs at least 2 classes, found 1 class "
                        f"folder ({classes[0]})")
    if num_classes is not None and num_classes != len(classes):
        raise DataError(f"data.num_classes={num_classes} but image folder {location} has {len(classes)} class "
                        f"folders ({', '.join(classes)})")
    rels, labels, sizes, mtimes = [], [], [], []
    for c, name in enumerate(classes):
        files = sorted((i for i in entries(fs, f"{root}/{name}", f"{location}/{name}")
                        if i.type == pafs.FileType.File and Path(i.base_name).suffix.lower() in IMAGE_EXT),
                       key=lambda i: i.base_name)
        if not files:
            raise DataError(f"class folder {location}/{name} holds no images ({', '.join(sorted(IMAGE_EXT))})")
        rels += [f"{name}/{i.base_name}".encode() for i in files]
        sizes += [int(i.size or 0) for i in files]
        mtimes += [int(i.mtime_ns or 0) for i in files]
        labels += [c] * len(files)
    rel = np.array(rels, dtype=bytes)
    return Listing(location, fs, Names(root, rel), Names(location, rel), np.array(labels, np.int64), classes,
                   np.array(sizes, np.int64), np.array(mtimes, np.int64))


def cache_key(listing: Listing, size: int | None) -> str:
    """sha256 of the JSON document {version, prep, location, size, files: [[relative path, bytes,
    mtime_ns], ...]}, hashed as it is written rather than built: the same key as the whole document's."""
    head = json.dumps({"version": CACHE_VERSION, "prep": USER_PREP, "location": listing.location, "size": size})
    h = hashlib.sha256(head[:-1].encode() + b', "files": [')
    for i, (rel, n, t) in enumerate(zip(listing.paths.rels, listing.sizes.tolist(), listing.mtimes.tolist())):
        h.update(((", " if i else "") + json.dumps([rel.decode(), n, t])).encode())
    h.update(b"]}")
    return h.hexdigest()[:20]


def cache_dir(key: str) -> Path:
    from rayflow.store_cache import cache_root

    return cache_root() / "images" / key


def _committed(d: Path) -> np.ndarray | None:
    """The cache's images, memory-mapped read-only, or None when no committed build is there."""
    if not (d / MARKER).is_file():
        return None
    return np.load(d / "images.npy", mmap_mode="r")


def _check(rows):
    """Rows of a folder step; the first file a step could not read ends the load in one DataError."""
    for row in rows:
        if row["error"]:
            raise DataError(str(row["error"]))
        yield row


def _build(listing: Listing, size: int | None, d: Path, executor) -> None:
    """Headers of every picture (the set's mode and shape), then the pictures, written row by row into
    `d`/images.npy (through the file, not a mapping: see data/mapped.py); the marker last."""
    from rayflow.executors import LocalExecutor, PoolSpec, StepSpec

    ex = executor if executor is not None and len(listing) >= IN_PROCESS_BELOW else LocalExecutor()
    items = image_steps.shards(len(listing))
    pool = PoolSpec(max_actors=min(8, len(items)), cpus_per_actor=0.5, threads_per_actor=image_steps.THREADS)
    base = {"fs": listing.fs, "paths": listing.paths, "names": listing.names}

    def run(cls, **kw):
        return _check(ex.map_batches(items, lambda device, threads: [StepSpec(cls, dict(base, threads=threads, **kw))],
                                     pool))

    heads: list = [None] * len(listing)
    for row in run(image_steps.ReadHeaders):
        heads[int(row["index"])] = (str(row["mode"]), (int(row["width"]), int(row["height"])), bool(row["alpha"]))
    mode = check_headers(heads, listing.names, size, listing.location)
    log.info("data: decoding %d pictures of %s into the cache %s", len(listing), listing.location, d)
    w, h = (size, size) if size else heads[0][1]
    shape = (1 if mode == "L" else 3, h, w)
    shutil.rmtree(d, ignore_errors=True)  # a killed build's leftovers
    d.mkdir(parents=True)
    out = RowWriter(d / "images.npy", (len(listing), *shape))
    for row in run(image_steps.DecodePictures, mode=mode, shape=shape, size=size):
        out.write(int(row["index"]), row["image"][None])
    out.close()
    from rayflow.atomic import atomic_write_text

    alpha = [n for h, n in zip(heads, listing.names) if h[2]]
    atomic_write_text(d / MARKER, json.dumps({"location": listing.location, "n": len(listing), "shape": shape,
                                              "alpha": [len(alpha), alpha[0]] if alpha else None}))


def cached_images(listing: Listing, size: int | None, executor=None) -> np.ndarray:
    """The folder's pictures as a read-only memmap (N, C, H, W), built on the first call per machine."""
    from rayflow.store_fs import key_lock

    key = cache_key(listing, size)
    d = cache_dir(key)
    built = False
    if _committed(d) is None:
        d.parent.mkdir(parents=True, exist_ok=True)
        with key_lock(d.parent / f".{key}.lock", log.info, f"the image cache of {listing.location}"):
            if _committed(d) is None:
                _build(listing, size, d, executor)
                built = True
    alpha = json.loads((d / MARKER).read_text()).get("alpha")
    if alpha and not built:  # the build's warning, again: every run says what it dropped
        warn_alpha(listing.location, *alpha)
    return _committed(d)


def load_folder(path: str, num_classes: int | None, image_size: int | None = None,
                executor=None) -> tuple[ImageSet, list[str]]:
    """`path/<class name>/*.png` (local or object store) -> (memory-mapped ImageSet, class names)."""
    listing = list_folder(path, num_classes)
    x = cached_images(listing, image_size, executor)
    return labelled(x, listing.labels, "classification", len(listing.classes), listing.location), listing.classes
