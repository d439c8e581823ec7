"""`rayflow predict`: a student folder + inputs -> one row per image: its id, the predicted class name
and every class's probability (regression: the value in the label's unit).

One step object (`PredictStep`) does the work, on fixed chunks of `CHUNK` images; the executor seam
runs it in this process (the local executor) or as Ray Data batch inference (`map_batches` over an
actor pool, a GPU per actor when asked). The chunks are the same either way, so the predictions are
bit-identical whichever path ran them.

A large run writes Parquet shards (`--out` a directory or an s3:// prefix, `student/shards.py`): a
`PredictShards` step computes a group of chunks and writes that group's shard itself, so the driver
holds one small row per shard, never the predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rayflow.data.imageset import DataError
from rayflow.student.inputs import BUILTIN, Source, collect
from rayflow.student.module import read_contract

CHUNK = 256  # images per forward pass (and per Ray Data row)
SHARD_CHUNKS = 8  # chunks per output shard (2,048 images): enough shards to keep every actor busy
RAY_ABOVE = 20_000  # inputs with more images than this run as Ray Data batch inference by default
OUT_SUFFIXES = (".parquet", ".csv")


class PredictStep:
    """Built once per actor (or once in process): loads the student, then maps chunk ids to rows."""

    def __init__(self, model_dir: str, source: Source, device: str = "cpu", threads: int | None = None,
                 chunk: int = CHUNK):
        import torch

        from rayflow.student.module import load_student

        if threads:
            torch.set_num_threads(threads)
        self.contract = read_contract(model_dir)
        self.model = load_student(model_dir).to(device)
        self.source, self.device, self.size = source, device, chunk

    def __call__(self, batch: dict) -> dict:
        parts = [self.chunk(int(k)) for k in batch["chunk"]]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def chunk(self, k: int) -> dict:
        import torch

        start, stop = k * self.size, min((k + 1) * self.size, len(self.source))
        inp = self.contract["input"]
        x = torch.from_numpy(self.source.read(start, stop, inp["channels"], inp["height"], inp.get("resize", BUILTIN)))
        with torch.no_grad():
            out = self.model(x.to(self.device)).float().cpu()
        return columns(self.contract, out, np.arange(start, stop), self.source.ids[start:stop])


class PredictShards(PredictStep):
    """Called on one-row batches {"shard": g}: predicts chunks g*per .. (g+1)*per-1 and writes them as
    shard g of `out` (the row order column dropped: shards in order are the single-file output)."""

    def __init__(self, out: str, per: int, **kw):
        super().__init__(**kw)
        self.out, self.per = out, per

    def __call__(self, batch: dict) -> dict:
        from rayflow.student.shards import write_shard

        g = int(batch["shard"][0])
        n_chunks = (len(self.source) + self.size - 1) // self.size
        got = super().__call__({"chunk": np.arange(g * self.per, min((g + 1) * self.per, n_chunks))})
        got.pop("row")
        return {"shard": np.array([g]), "rows": np.array([len(got["input"])]),
                "part": np.array([write_shard(self.out, g, got)], dtype=object),
                "columns": np.array([",".join(got)], dtype=object)}


def columns(contract: dict, out, rows: np.ndarray, ids: list[str]) -> dict:
    """The output columns of one chunk: `row` (input order), `input`, then `predicted` and
    `prob_<class>` (classification) or `value` (regression, in the label's unit)."""
    cols = {"row": rows.astype(np.int64), "input": np.asarray(ids, dtype=object)}
    if contract["task"] == "regression":
        cols["value"] = out.numpy().astype(np.float64)
        return cols
    names = contract["class_names"]
    probs = out.softmax(1).numpy()
    cols["predicted"] = np.asarray(names, dtype=object)[probs.argmax(1)]
    for i, name in enumerate(names):
        cols[f"prob_{name}"] = probs[:, i]
    return cols


def _plan(model_dir, inputs, use_ray, gpu, actors, executor, chunk):
    """(source, executor, pool, the steps' common kwargs), checked before any image is read."""
    from rayflow.executors import PoolSpec

    read_contract(model_dir)  # a wrong folder fails before any input is read
    source = collect(inputs)
    if executor is None:
        executor = _executor(len(source) > RAY_ABOVE if use_ray is None else use_ray, gpu)
    spec = {"model_dir": str(Path(model_dir).resolve()), "source": source, "chunk": chunk}
    pool = PoolSpec(max_actors=actors, cpus_per_actor=1.0, gpus_per_actor=1.0 if gpu else 0.0, threads_per_actor=1)
    return source, executor, pool, spec


def _progress(total: int):
    from rayflow.progress import Progress

    return Progress("predict", total, "images", every_s=5.0, min_gap_s=2.0)


def predict_frame(model_dir: str | Path, inputs: list, *, use_ray: bool | None = None, gpu: bool = False,
                  actors: int = 2, executor=None, chunk: int = CHUNK):
    """A pandas DataFrame of predictions, in input order. `use_ray`: None decides by size (more than
    RAY_ABOVE images); `executor` overrides the choice (tests, a pipeline's own executor)."""
    import pandas as pd

    from rayflow.executors import StepSpec

    source, executor, pool, spec = _plan(model_dir, inputs, use_ray, gpu, actors, executor, chunk)
    items = [{"chunk": k} for k in range((len(source) + chunk - 1) // chunk)]
    progress, rows = _progress(len(source)), []
    for row in executor.map_batches(items, lambda device, threads: [
            StepSpec(PredictStep, {**spec, "device": device, "threads": threads})], pool):
        rows.append(row)
        progress.update(len(rows))
    df = pd.DataFrame(rows).sort_values("row").drop(columns="row").reset_index(drop=True)
    # Ray Data hands float32 cells back as Python floats: the same values, restored to one dtype
    return df.astype({c: np.float32 for c in df.columns if c.startswith("prob_")})


def predict_shards(model_dir: str | Path, inputs: list, out: str, *, overwrite: bool = False,
                   use_ray: bool | None = None, gpu: bool = False, actors: int = 2, executor=None,
                   chunk: int = CHUNK, per_shard: int | None = None) -> dict:
    """Predictions as Parquet shards under `out` (a directory or an s3:// prefix), each written where
    it was computed, then the marker; returns the marker's content (rows, parts, columns).
    `per_shard` (chunks): by default SHARD_CHUNKS, fewer when that would leave under 4 shards per
    actor (a shard is one actor's work item: too few leave actors idle)."""
    from rayflow.executors import StepSpec
    from rayflow.student import shards

    source, executor, pool, spec = _plan(model_dir, inputs, use_ray, gpu, actors, executor, chunk)
    location = shards.prepare(out, overwrite)
    if per_shard is None:
        per_shard = max(1, min(SHARD_CHUNKS, -(-len(source) // chunk) // (4 * max(1, actors))))
    n_shards = -(-len(source) // (chunk * per_shard))
    progress, done, got = _progress(len(source)), 0, {}
    for row in executor.map_batches([{"shard": g} for g in range(n_shards)], lambda device, threads: [
            StepSpec(PredictShards, {**spec, "device": device, "threads": threads, "out": location,
                                     "per": per_shard})], pool):
        got[int(row["shard"])] = row
        done += int(row["rows"])
        progress.update(done)
    parts = [str(got[g]["part"]) for g in range(n_shards)]
    shards.commit(location, parts, done, str(got[0]["columns"]).split(","))
    return {"location": location, "rows": done, "parts": parts}


def is_sharded(out: str | Path) -> bool:
    """An s3:// prefix, a directory, or a name without a suffix: Parquet shards (`x.txt` is a typo, not
    a directory: `check_out` refuses it)."""
    p = str(out)
    return "://" in p or Path(p).is_dir() or not Path(p).suffix


def _executor(use_ray: bool, gpu: bool):
    """The local or the Ray executor; GPUs asked for on a machine without one fail here, in one line
    (an embedded Ray would wait for them; a cluster named by RAY_ADDRESS may have GPU nodes)."""
    import torch

    from rayflow.config import ConfigError, RuntimeConfig
    from rayflow.executors import get_executor
    from rayflow.runtime import embedded

    rt = RuntimeConfig(executor="ray" if use_ray else "local")
    if gpu and not torch.cuda.is_available() and (not use_ray or embedded(rt)):
        raise ConfigError("--gpu: this machine has no CUDA device; drop --gpu, or set RAY_ADDRESS to a Ray "
                          "cluster with GPU nodes (with --ray)")
    return get_executor(rt)


def check_out(out: str | Path) -> Path:
    p = Path(out)
    if p.suffix.lower() not in OUT_SUFFIXES:
        raise DataError(f"--out {p}: the suffix picks the format, use {' or '.join(OUT_SUFFIXES)} "
                        "(or a directory without a suffix, or an s3:// prefix, for Parquet shards)")
    return p


def write_predictions(df, out: str | Path) -> Path:
    """Parquet or CSV by the suffix, written atomically."""
    from rayflow.atomic import atomic_file

    p = check_out(out)
    with atomic_file(p) as tmp:
        if p.suffix.lower() == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    return p
