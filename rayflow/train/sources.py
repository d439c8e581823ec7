"""Batch sources for the step loop: a sharded real set, and a real/fake mix with fixed proportions.

A worker of rank r in a world of size W sees its own 1/W slice of every epoch's permutation (the
DistributedSampler rule) and draws batch_size/W images per step, so W workers take the same
number of steps over the same data as one.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np
import torch

from rayflow.data.mapped import rows
from rayflow.data.transforms import augment, to_float
from rayflow.seeding import step_seed


class Batch(dict):
    """x: float images in [-1, 1]; y: labels; t (optional): teacher logits for KD, NaN rows where a
    sample has none (the loop asks the online teacher for those, if there is one); i (optional):
    int64 stable sample indices for CRD's memory bank (reals 0..N_real-1, fakes N_real + ordinal)."""


class BatchSource(Protocol):
    def next_batch(self) -> Batch: ...

    def skip(self, n: int) -> None: ...


class ArraySource:
    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, *, augment_ops=(),
                 teacher_logits: np.ndarray | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1, label_dtype=torch.int64, index_offset: int | None = None):
        """`index_offset`: emit `i` = offset + the row's position in `images` (None: no `i`)."""
        if len(images) == 0:
            raise ValueError("empty training set")
        self.images, self.labels, self.t = images, labels, teacher_logits
        self.index_offset = index_offset
        self.bs = max(1, batch_size // world_size)
        self.ops = list(augment_ops)
        self.seed, self.rank, self.world = seed, rank, world_size
        self.label_dtype = label_dtype
        self.g = torch.Generator()
        self.n = 0  # batches drawn: the augmentation of batch n is seeded by (seed, rank, n)
        self._it = self._indices()

    def skip(self, n: int) -> None:
        """Continue as if `n` batches had been drawn (a resumed run), without loading them."""
        for _ in range(n):
            next(self._it)
        self.n += n

    def _indices(self) -> Iterator[np.ndarray]:
        epoch = 0
        n = len(self.labels)
        while True:
            perm = np.random.default_rng((self.seed, epoch)).permutation(n)
            mine = perm[self.rank::self.world] if n >= self.world else perm
            for i in range(0, len(mine) - self.bs + 1 if len(mine) >= self.bs else 1, self.bs):
                yield mine[i:i + self.bs] if len(mine) >= self.bs else np.resize(mine, self.bs)
            epoch += 1

    def _next_indices(self) -> np.ndarray:
        """The rows of the next batch (a subclass may choose them otherwise: train/select_fakes.py)."""
        return next(self._it)

    def next_batch(self) -> Batch:
        idx = np.sort(self._next_indices())
        x = to_float(torch.from_numpy(rows(self.images, idx)))
        if self.ops:
            x = augment(x, self.ops, self.g.manual_seed(step_seed(self.seed, self.rank, self.n)))
        self.n += 1
        b = Batch(x=x, y=torch.as_tensor(self.labels[idx]).to(self.label_dtype))
        if self.t is not None:
            b["t"] = torch.from_numpy(np.asarray(self.t[idx], np.float32))
        if self.index_offset is not None:
            b["i"] = torch.from_numpy(idx.astype(np.int64) + self.index_offset)
        return b


class MixedSource:
    """Each batch = round(real_fraction * B) real + the rest fake, so fakes never swamp the reals."""

    def __init__(self, real: ArraySource, fake: BatchSource):
        self.real, self.fake = real, fake

    def skip(self, n: int) -> None:
        self.real.skip(n)
        self.fake.skip(n)

    def next_batch(self) -> Batch:
        r, f = self.real.next_batch(), self.fake.next_batch()
        out = Batch(x=torch.cat([r["x"], f["x"]]), y=torch.cat([r["y"], f["y"]]))
        if "t" in r or "t" in f:
            k = (r.get("t") if "t" in r else f["t"]).shape[1]
            parts = [b["t"] if "t" in b else torch.full((len(b["y"]), k), float("nan")) for b in (r, f)]
            out["t"] = torch.cat(parts)
        if "i" in r and "i" in f:
            out["i"] = torch.cat([r["i"], f["i"]])
        return out


class ShardSource:
    """Fake batches streamed from this worker's Ray Data shard of the synthetic Parquet set.

    The first epoch streams from Ray Data. If the shard is small (< `cache_mb`), its rows are kept
    and later epochs reshuffle them in memory: every `iter_batches` pass is a new Ray Data
    execution with its own start-up, and a small fake set with 75 % fakes per batch is re-read
    dozens of times per student (the demo's 3,000 fakes: 24 epochs in 1,500 steps). Larger shards
    keep streaming every epoch, and are known to be larger from the first batch (its bytes per row
    times the fake set's rows), so they never start a cache: a student's memory does not grow with
    M past `cache_mb` (64 MB: ~80k fakes of 28x28, whose epochs are thousands of steps long).
    """

    def __init__(self, shard, batch_size: int, use_logits: bool, use_orig_label: bool, seed: int,
                 augment_ops=(), cache_mb: float = 64.0, sample_ids: np.ndarray | None = None,
                 index_offset: int | None = None):
        """`sample_ids`: the fake set's ids (any order); with `index_offset`, batches carry `i` =
        offset + the rank of the row's `sample_id` among them (the fake's ordinal, CRD's index)."""
        self.shard, self.bs, self.use_logits, self.orig = shard, batch_size, use_logits, use_orig_label
        self.ids = np.sort(np.asarray(sample_ids)) if sample_ids is not None else None
        self.num_rows = len(self.ids) if self.ids is not None else None
        self.index_offset = index_offset
        self.ops, self.seed = list(augment_ops), seed
        self.cache_bytes = cache_mb * 2**20
        self.g = torch.Generator()
        self.n = 0
        self._it = self._batches()

    def skip(self, n: int) -> None:
        """A resumed run: the next batches follow the stream from where it stopped (the same rows
        only when Ray Data streams the shard in the same order, which it does not promise)."""
        for _ in range(n):
            next(self._it)
        self.n += n

    def _stream(self, epoch: int):
        yield from self.shard.iter_batches(batch_size=self.bs, batch_format="numpy", drop_last=True,
                                           local_shuffle_buffer_size=4 * self.bs, local_shuffle_seed=self.seed + epoch)

    def _batches(self):
        cached: list[dict] | None = []
        size, n = 0, 0
        for b in self._stream(0):
            n += 1
            nbytes = sum(v.nbytes for v in b.values())
            if n == 1 and self.num_rows is not None:  # too big to keep, known from the first batch
                if nbytes / max(1, len(next(iter(b.values())))) * self.num_rows > self.cache_bytes:
                    cached = None
            if cached is not None:
                size += nbytes
                if size <= self.cache_bytes:
                    cached.append(b)
                else:
                    cached = None
            yield b
        if n == 0:  # fewer fakes than one batch's share of them (a small M): keep them all and repeat them
            cached = list(self.shard.iter_batches(batch_size=self.bs, batch_format="numpy", drop_last=False))
            if not cached:
                raise ValueError("the fake-data shard holds no rows")
        epoch = 1
        if cached is None:
            while True:
                yield from self._stream(epoch)
                epoch += 1
        rows = {k: np.concatenate([b[k] for b in cached]) for k in cached[0]}
        del cached
        total = len(next(iter(rows.values())))
        rng = np.random.default_rng(self.seed)
        reps = -(-self.bs // total)  # permutations per pass: one, unless the fakes are fewer than a batch
        while True:
            order = np.concatenate([rng.permutation(total) for _ in range(reps)])
            for i in range(0, len(order) - self.bs + 1, self.bs):
                idx = order[i:i + self.bs]
                yield {k: v[idx] for k, v in rows.items()}
            epoch += 1

    def next_batch(self) -> Batch:
        b = next(self._it)
        x = to_float(torch.tensor(b["image"]))
        if self.ops:
            x = augment(x, self.ops, self.g.manual_seed(step_seed(self.seed, self.n)))
        self.n += 1
        out = Batch(x=x, y=torch.tensor(b["orig_label" if self.orig else "label"]).long())
        if self.use_logits:
            out["t"] = torch.tensor(b["teacher_logits"]).float()
        if self.index_offset is not None:
            if self.ids is None:
                raise ValueError("ShardSource: sample indices need the fake set's sample_ids")
            sid = np.asarray(b["sample_id"])
            pos = np.searchsorted(self.ids, sid)
            if (pos >= len(self.ids)).any() or (self.ids[np.minimum(pos, len(self.ids) - 1)] != sid).any():
                raise ValueError("ShardSource: a streamed fake's sample_id is not in the fake set's ids")
            out["i"] = torch.from_numpy(pos.astype(np.int64) + self.index_offset)
        return out
