"""Parquet layout of the synthetic set: one file per shard, written atomically; readers without Ray.

Schema of every shard file (rows sorted by ``row``; only the samples kept by subsampling + filter):

=================  =====================================  =============================================
column             Arrow type                             meaning
=================  =====================================  =============================================
``shard_id``       int64                                  shard the row belongs to
``row``            int64                                  rank among the shard's kept rows (0, 1, ...)
``draw``           int64                                  index of the generator draw inside the shard
``image``          fixed_size_list<uint8>[C*H*W]          the image, C-order of ``(C, H, W)``
``label``          int64 / float32                        final label (teacher's if relabelled)
``orig_label``     int64 / float32                        conditioning label of the generator
``ratio``          float32                                density ratio r(x|y) (NaN: no subsampling)
``teacher_ce``     float32                                teacher error w.r.t. ``orig_label``: CE, or
                                                          |prediction - y| (NaN: no teacher)
``teacher_logits`` fixed_size_list<float32>[K]            teacher logits, K = classes; or its
                                                          prediction, K = 1 (NaN: no teacher)
=================  =====================================  =============================================

Labels are int64 class ids, or float32 in [0, 1] for a continuous label space. The schema metadata
key ``rayflow.synth`` holds JSON ``{"image_shape": [C, H, W], "num_classes": strata, ...flags}``
(plus ``label_space`` for a continuous label); the same header is in ``manifest.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rayflow.atomic import atomic_file
from rayflow.labels import LabelSpace, as_space
from rayflow.synth.manifest import Manifest, SynthError, shard_file

__all__ = ["META_KEY", "FakeSet", "by_shard", "shard_schema", "shard_table", "write_shards", "read_shard",
           "read_fake_set"]

META_KEY = b"rayflow.synth"
DRAWS_PER_SHARD_MAX = 2**24


class FakeSet(NamedTuple):
    """The class-balanced synthetic set as numpy arrays (unpacks as a 6-tuple)."""

    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,), float32 for a continuous label
    orig_labels: np.ndarray  # int64 (N,), float32 for a continuous label
    teacher_logits: np.ndarray  # float32 (N, K): logits, or the teacher's prediction (K = 1)
    ratio: np.ndarray  # float32 (N,)
    teacher_ce: np.ndarray  # float32 (N,)


def _label_type(space: LabelSpace) -> pa.DataType:
    return pa.float32() if space.continuous else pa.int64()


def shard_schema(image_shape: tuple[int, ...], num_classes: LabelSpace | int, meta: dict[str, Any] | None = None
                 ) -> pa.Schema:
    """``num_classes``: the class count, or the label space."""
    size, space = int(np.prod(image_shape)), as_space(num_classes)
    header = {"image_shape": list(image_shape), "num_classes": space.num_strata, **(meta or {})}
    return pa.schema([
        ("shard_id", pa.int64()), ("row", pa.int64()), ("draw", pa.int64()),
        ("image", pa.list_(pa.uint8(), size)),
        ("label", _label_type(space)), ("orig_label", _label_type(space)),
        ("ratio", pa.float32()), ("teacher_ce", pa.float32()),
        ("teacher_logits", pa.list_(pa.float32(), space.num_outputs)),
        ("accepted", pa.bool_()), ("sample_id", pa.int64()),
    ], metadata={META_KEY: json.dumps(header).encode()})


def _fixed_list(a: np.ndarray, width: int, typ: pa.DataType) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(a).reshape(-1), type=typ)
    return pa.FixedSizeListArray.from_arrays(flat, width)


def shard_table(cols: dict[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    """Arrow table of one shard's kept rows; ``cols`` holds ``shard_id, draw, image (n, C, H, W),
    label, orig_label, ratio, teacher_ce, teacher_logits (n, K)``; ``row`` is added."""
    n = len(cols["draw"])
    img_w = schema.field("image").type.list_size
    k = schema.field("teacher_logits").type.list_size
    ldt = np.float32 if schema.field("label").type == pa.float32() else np.int64
    arrays = [
        pa.array(np.asarray(cols["shard_id"], np.int64)), pa.array(np.arange(n, dtype=np.int64)),
        pa.array(np.asarray(cols["draw"], np.int64)),
        _fixed_list(np.asarray(cols["image"], np.uint8).reshape(n, img_w), img_w, pa.uint8()),
        pa.array(np.asarray(cols["label"], ldt)), pa.array(np.asarray(cols["orig_label"], ldt)),
        pa.array(np.asarray(cols["ratio"], np.float32)), pa.array(np.asarray(cols["teacher_ce"], np.float32)),
        _fixed_list(np.asarray(cols["teacher_logits"], np.float32).reshape(n, k), k, pa.float32()),
        pa.array(np.asarray(cols["accepted"], bool)), pa.array(sample_ids(cols["shard_id"], cols["draw"])),
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def sample_ids(shard_id: np.ndarray, draw: np.ndarray) -> np.ndarray:
    """A draw's stable id: its shard id and its index in the shard (pool order = id order)."""
    return np.asarray(shard_id, np.int64) * DRAWS_PER_SHARD_MAX + np.asarray(draw, np.int64)


def _write_table_atomic(table: pa.Table, path: Path) -> None:
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


def parquet_bytes(table: pa.Table) -> bytes:
    """The bytes `_write_table_atomic` writes for `table` (the same writer, into memory)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_bytes_atomic(data: bytes, path: str | Path) -> None:
    """A shard an actor shipped (``write_shards(out_dir=None)``), written where the driver keeps shards."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def by_shard(batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[tuple[int, slice]]]:
    """``batch`` reordered by ``(shard_id, draw)``, and ``[(shard_id, its slice of the rows)]``.

    Raises SynthError unless every shard is complete (draws ``0 .. n_draws - 1`` exactly once).
    """
    sid = np.asarray(batch["shard_id"], np.int64)
    order = np.lexsort((np.asarray(batch["draw"], np.int64), sid))
    out = {k: np.asarray(v)[order] for k, v in batch.items()}
    bounds = [0, *(np.flatnonzero(np.diff(out["shard_id"])) + 1).tolist(), len(order)] if len(order) else [0]
    groups = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        s, n = int(out["shard_id"][lo]), int(out["n_draws"][lo])
        if hi - lo != n or not np.array_equal(out["draw"][lo:hi], np.arange(n)):
            raise SynthError(f"shard {s} reached a pipeline step incomplete ({hi - lo} of {n} draws); "
                             "every step must see whole shards (map_batches batch_size=None)")
        groups.append((s, slice(lo, hi)))
    return out, groups


def _with_defaults(batch: dict[str, np.ndarray], space: LabelSpace) -> dict[str, np.ndarray]:
    """Columns of stages that did not run: no subsampling (all accepted, ratio NaN), no teacher."""
    n = len(batch["draw"])
    b = dict(batch)
    if "accepted" not in b:
        b["accepted"] = np.ones(n, bool)
        b["ratio"] = np.full(n, np.nan, np.float32)
    if "keep" not in b:
        b["keep"] = np.asarray(b["accepted"], bool)
        b["label"] = np.asarray(b["orig_label"], space.np_dtype)
        b["teacher_ce"] = np.full(n, np.nan, np.float32)
        b["teacher_logits"] = np.full((n, space.num_outputs), np.nan, np.float32)
    return b


def write_shards(batch: dict[str, np.ndarray], *, out_dir: str | None, image_shape: tuple[int, ...],
                 num_classes: LabelSpace | int, meta: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Last UDF of the pipeline: write each complete shard in ``batch`` as its own Parquet file.

    Keeps the rows with ``keep`` (all of them when the teacher stage did not run), sorted by draw,
    writes ``<out_dir>/shards/shard-XXXXXX.parquet`` atomically and returns one summary row per
    shard: ``shard_id, label`` (its stratum)``, n_draws, n_accepted, n_kept, label_counts`` (kept
    rows per stratum of their final label)``, file``. ``out_dir=None`` writes nothing and adds
    ``data``, each file's bytes, for the driver to write (an actor on a node without the driver's disk).
    """
    space = as_space(num_classes)
    K = space.num_strata
    b, groups = by_shard(_with_defaults(batch, space))
    schema = shard_schema(image_shape, space, meta)
    out: dict[str, list] = {k: [] for k in ("shard_id", "label", "n_draws", "n_accepted", "n_kept",
                                            "label_counts", "file", "data")}
    for sid, sl in groups:
        kept = np.arange(sl.start, sl.stop)[b["keep"][sl]]
        cols = {k: b[k][kept] for k in ("shard_id", "draw", "image", "label", "orig_label", "ratio",
                                        "teacher_ce", "teacher_logits", "accepted")}
        rel = shard_file(sid)
        if out_dir is None:
            out["data"].append(parquet_bytes(shard_table(cols, schema)))
        else:
            _write_table_atomic(shard_table(cols, schema), Path(out_dir) / rel)
        out["shard_id"].append(sid)
        out["label"].append(int(space.strata_of(b["orig_label"][sl.start:sl.start + 1])[0]))
        out["n_draws"].append(sl.stop - sl.start)
        out["n_accepted"].append(int(b["accepted"][sl].sum()))
        out["n_kept"].append(len(kept))
        out["label_counts"].append(np.bincount(space.strata_of(cols["label"]), minlength=K).astype(np.int64))
        out["file"].append(rel)
    return {"shard_id": np.array(out["shard_id"], np.int64), "label": np.array(out["label"], np.int64),
            "n_draws": np.array(out["n_draws"], np.int64), "n_accepted": np.array(out["n_accepted"], np.int64),
            "n_kept": np.array(out["n_kept"], np.int64),
            "label_counts": np.array(out["label_counts"], np.int64).reshape(-1, K),
            "file": np.array(out["file"], dtype=object),
            **({"data": np.array(out["data"], dtype=object)} if out_dir is None else {})}


def _header(schema: pa.Schema) -> dict[str, Any]:
    return json.loads(schema.metadata[META_KEY])


def _decode(table: pa.Table, image_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    n = table.num_rows

    def flat(name: str) -> np.ndarray:
        return table.column(name).combine_chunks().values.to_numpy(zero_copy_only=False)

    out = {name: table.column(name).to_numpy() for name in table.column_names
           if name not in ("image", "teacher_logits")}
    out["image"] = flat("image").reshape(n, *image_shape)
    out["teacher_logits"] = flat("teacher_logits").reshape(n, table.schema.field("teacher_logits").type.list_size)
    return out


def read_shard(path: str | Path) -> dict[str, np.ndarray]:
    """All columns of one shard file as numpy (``image`` reshaped to ``(n, C, H, W)``)."""
    t = pq.read_table(path)
    return _decode(t, tuple(_header(t.schema)["image_shape"]))


def read_fake_set(out_dir: str | Path, m_per_class: int | None = None) -> FakeSet:
    """The class-balanced set: per conditioning class the first ``m_per_class`` kept samples by
    ``(shard_id, row)`` (default: the run's ``m_per_class``), rows in that order. No Ray needed;
    only the shard files that contribute are read, into preallocated arrays."""
    man = Manifest.load(out_dir)
    sel = man.selection(m_per_class)
    n = sum(take for _, _, take in sel)
    shape, space = man.image_shape, man.space
    ldt = space.np_dtype
    res = FakeSet(np.empty((n, *shape), np.uint8), np.empty(n, ldt), np.empty(n, ldt),
                  np.empty((n, space.num_outputs), np.float32), np.empty(n, np.float32), np.empty(n, np.float32))
    names = ("image", "label", "orig_label", "teacher_logits", "ratio", "teacher_ce")
    at = 0
    for _, rel, take in sel:
        t = pq.read_table(Path(out_dir) / rel, columns=list(names)).slice(0, take)
        cols = _decode(t, shape)
        for arr, name in zip(res, names):
            arr[at:at + take] = cols[name]
        at += take
    return res


def select_view_rows(table: pa.Table, *, ids: np.ndarray, labels: np.ndarray,
                     image_shape: tuple[int, ...]) -> dict[str, np.ndarray] | pa.Table:
    """Ray Data UDF of the executor's ``fake_dataset``: keep the rows whose ``sample_id`` is in the
    sorted ``ids``, with ``label`` set to the view's label for each, decode the list columns. A block
    that keeps no row goes on as an empty table: Ray Data splits a file's read into blocks, a view's rows
    can all lie in one of them, and a tensor column of zero images cannot be built (Ray warned "Failed to
    convert column 'image'" and pickled the block)."""
    cols = _decode(table, image_shape)
    pos = np.clip(np.searchsorted(ids, cols["sample_id"]), 0, max(len(ids) - 1, 0))
    keep = ids[pos] == cols["sample_id"] if len(ids) else np.zeros(len(pos), bool)
    if not keep.any():
        return pa.table({})
    out = {k: v[keep] for k, v in cols.items()}
    out["label"] = labels[pos[keep]]
    return out
