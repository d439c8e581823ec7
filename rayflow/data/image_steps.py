"""The batch steps that read a folder's pictures where the executor runs them (Ray Data actors, or in
process): headers first, then decoded and fitted pictures, one shard of files per work item.

Files are read through the pyarrow filesystem the listing came from (local disk or S3), so a worker
needs no local copy. A bad file does not raise inside the worker (Ray would wrap it in its own error
types): its row carries the DataError's text, and the driver raises that one line.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rayflow.data import images
from rayflow.data.imageset import DataError

SHARD = 128  # files per work item: small next to the decode time, enough items to balance actors
HEAD_BYTES = 64 << 10  # a PNG header is in the first bytes, a JPEG one after its EXIF block
THREADS = 4  # reads per actor in flight: object-store reads wait on the network, decoding releases the GIL


def shards(n: int, per: int = SHARD) -> list[dict]:
    return [{"start": i, "stop": min(n, i + per)} for i in range(0, n, per)]


class _FolderStep:
    """Built once per actor with the whole listing; called on one-row batches {start, stop}."""

    def __init__(self, fs, paths: list[str], names: list[str], threads: int | None = None):
        self.fs, self.paths, self.names = fs, paths, names
        self.threads = threads or THREADS

    def read(self, i: int, limit: int | None = None) -> tuple[io.BytesIO, bool]:
        """(the file's first `limit` bytes or all of them, whether that is the whole file)."""
        try:
            with self.fs.open_input_file(self.paths[i]) as f:
                return io.BytesIO(f.read(limit)), limit is None or f.size() <= limit
        except OSError as e:
            raise DataError(f"cannot read image {self.names[i]}: {e}") from None

    def one(self, i: int) -> dict:
        raise NotImplementedError

    def __call__(self, batch: dict) -> dict:
        idx = [i for a, b in zip(batch["start"], batch["stop"]) for i in range(int(a), int(b))]
        with ThreadPoolExecutor(self.threads) as pool:
            got = list(pool.map(self._safe, idx))
        return {k: np.array([g[k] for g in got]) for k in got[0]} if got else {}

    def _safe(self, i: int) -> dict:
        try:
            return {"index": i, **self.one(i), "error": ""}
        except DataError as e:
            return {"index": i, **self.empty(), "error": str(e)}

    def empty(self) -> dict:
        raise NotImplementedError


class ReadHeaders(_FolderStep):
    """Rows ``index``, ``mode``, ``width``, ``height``, ``alpha``: what `images.check_headers` needs.
    The first HEAD_BYTES of a file usually hold its header; the whole file is read only when not."""

    def one(self, i: int) -> dict:
        head, whole = self.read(i, HEAD_BYTES)
        try:
            mode, (w, h), alpha = images.header(head, self.names[i])
        except DataError:
            if whole:
                raise
            mode, (w, h), alpha = images.header(self.read(i)[0], self.names[i])
        return {"mode": mode, "width": w, "height": h, "alpha": alpha}

    def empty(self) -> dict:
        return {"mode": "", "width": 0, "height": 0, "alpha": False}


class DecodePictures(_FolderStep):
    """Rows ``index``, ``image`` (uint8 (C, H, W) in the set's `mode`, fitted to `size`)."""

    def __init__(self, fs, paths: list[str], names: list[str], *, mode: str, shape: tuple[int, int, int],
                 size: int | None, threads: int | None = None):
        super().__init__(fs, paths, names, threads)
        self.mode, self.shape, self.size = mode, tuple(shape), size

    def one(self, i: int) -> dict:
        return {"image": images.to_chw(images.decoded(self.read(i)[0], self.names[i], self.mode, self.size))}

    def empty(self) -> dict:
        return {"image": np.zeros(self.shape, np.uint8)}
