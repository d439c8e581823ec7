"""RC-49-like chairs (`data.name: chairs`): real chair meshes rendered at known yaws, label = yaw.

Models come from Debian's `sweethome3d-furniture` (`make chairs-data`; CC0 archive by default) or
from a folder of .obj files (`data.path`). Train and test chairs are different models, so the
test MAE measures generalisation to unseen chairs, as in RC-49.

Rendering is a Ray Data job through the executor seam (`executor.map_batches` over
(model, yaw) items, step `render.RenderChairs`); the local executor runs the same step in
process. Renders are cached content-addressed per model under $RAYFLOW_CACHE/renders (default
~/.cache/rayflow/renders): key = sha256(OBJ bytes + render parameters + RENDER_VERSION), written
atomically, so a second load renders nothing and a changed mesh or parameter renders afresh.
Every model's title, creator and licence go into the data set's metadata (`dataset-<key>.json`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rayflow.atomic import atomic_file, atomic_write_text
from rayflow.config import ChairsConfig, DataConfig
from rayflow.data.imageset import DataError, ImageSet
from rayflow.data.labels import LabelRange
from rayflow.data.mesh import MeshRef, folder_meshes, mesh_digest, read_catalog
from rayflow.data.render import RENDER_VERSION, RenderChairs, work_items, yaw_grid

log = logging.getLogger("rayflow")
FURNITURE_DIR = "/usr/share/sweethome3d/furniture"
YAWS_PER_ITEM = 6


def settings(cfg: DataConfig) -> ChairsConfig:
    return cfg.chairs or ChairsConfig()


def yaw_range(cfg: DataConfig) -> LabelRange:
    lo, hi = settings(cfg).yaw_range
    return LabelRange(lo, hi, "deg", source="chairs (yaw)")


def render_dir() -> Path:
    return Path(os.environ.get("RAYFLOW_CACHE") or Path.home() / ".cache" / "rayflow").expanduser() / "renders"


def furniture_dir(cc: ChairsConfig) -> Path:
    return Path(cc.furniture_dir or os.environ.get("RAYFLOW_FURNITURE_DIR") or FURNITURE_DIR)


def list_models(cfg: DataConfig) -> list[MeshRef]:
    """The chair models of the configured source, filtered by `chairs.models`."""
    cc = settings(cfg)
    if cfg.path:
        refs = folder_meshes(cfg.path)
    else:
        root = furniture_dir(cc)
        refs = []
        for a in cc.archives:
            p = root / (a if a.endswith(".sh3f") else f"{a}.sh3f")
            if not p.is_file():
                raise DataError(f"chairs: furniture archive {p} not found. Install it with `make chairs-data` "
                                f"(Debian package sweethome3d-furniture), set RAYFLOW_FURNITURE_DIR, or point "
                                f"data.path at a folder of .obj meshes")
            refs += read_catalog(p)
    if cc.models is not None:
        refs = [r for r in refs if _matches(r, cc.models)]
        missing = [m for m in cc.models if not any(_matches(r, [m]) for r in refs)]
        if missing:
            raise DataError(f"chairs.models: no chair model named {', '.join(missing)}")
    if len({r.name for r in refs}) != len(refs):
        raise DataError("chairs: two models share a name; pick one with chairs.models")
    return refs


def _matches(ref: MeshRef, names: list[str]) -> bool:
    return any(n in (ref.name, ref.name.rsplit("/", 1)[-1]) for n in names)


def split_models(refs: list[MeshRef], cc: ChairsConfig) -> tuple[list[MeshRef], list[MeshRef]]:
    """(train, test) models: `test_models` if given, else the `n_test` with the smallest
    sha256(name): deterministic, independent of order and of which other models exist."""
    if cc.test_models is not None:
        unknown = [m for m in cc.test_models if not any(_matches(r, [m]) for r in refs)]
        if unknown:
            raise DataError(f"chairs.test_models: {', '.join(unknown)} not among the chair models "
                            f"({', '.join(r.name for r in refs)})")
        test = [r for r in refs if _matches(r, cc.test_models)]
    else:
        test = sorted(refs, key=lambda r: hashlib.sha256(r.name.encode()).hexdigest())[:cc.n_test]
    train = [r for r in refs if r not in test]
    if not train or not test:
        raise DataError(f"chairs: {len(refs)} model(s) cannot be split into train and test chairs "
                        f"({len(train)} train, {len(test)} test); lower chairs.n_test or add models")
    return train, test


def render_params(cfg: DataConfig) -> dict:
    cc = settings(cfg)
    return {"size": cfg.image_size or cc.size, "supersample": cc.supersample, "elevation": cc.elevation,
            "yaws": yaw_grid(*cc.yaw_range, cc.yaw_step).tolist(), "version": RENDER_VERSION}


def cache_key(digest: str, ref: MeshRef, params: dict) -> str:
    doc = json.dumps({"mesh": digest, "rotation": ref.rotation, "params": params}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:24]


def _read_cached(path: Path, n: int, size: int) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            x = z["images"]
        return x if x.shape == (n, size, size) and x.dtype == np.uint8 else None
    except (OSError, ValueError, KeyError, EOFError):
        return None  # missing or unreadable: render again (the write is atomic, so this is rare)


def _write_cached(path: Path, images: np.ndarray, yaws: list[float]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, yaws=np.asarray(yaws))
    with atomic_file(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def render_models(refs: list[MeshRef], params: dict, executor=None, actors: int = 2,
                  per_item: int = YAWS_PER_ITEM) -> list[np.ndarray]:
    """uint8 (n_yaws, S, S) per model, from the cache or rendered through `executor.map_batches`
    (default: the in-process executor); each model's file is written as soon as its views are in."""
    from rayflow.executors import LocalExecutor, PoolSpec, StepSpec

    yaws, size = params["yaws"], params["size"]
    keys = [cache_key(mesh_digest(r), r, params) for r in refs]
    out: list[np.ndarray | None] = [_read_cached(render_dir() / f"{k}.npz", len(yaws), size) for k in keys]
    todo = [i for i, x in enumerate(out) if x is None]
    if todo:
        log.info("chairs: rendering %d model(s) x %d yaws at %dpx", len(todo), len(yaws), size)
        kw = {"meshes": [asdict(refs[i]) for i in todo], "yaws": yaws, "size": size,
              "supersample": params["supersample"], "elevation": params["elevation"]}

        def steps(device: str, threads: int | None) -> list:
            return [StepSpec(RenderChairs, dict(kw, threads=threads))]

        got = {j: np.zeros((len(yaws), size, size), np.uint8) for j in range(len(todo))}
        left = {j: len(yaws) for j in range(len(todo))}
        pool = PoolSpec(max_actors=actors, cpus_per_actor=0.5, threads_per_actor=1)
        for row in (executor or LocalExecutor()).map_batches(work_items(len(todo), len(yaws), per_item), steps, pool):
            j = int(row["model"])
            got[j][int(row["yaw"])] = row["image"]
            left[j] -= 1
            if left[j] == 0:
                _write_cached(render_dir() / f"{keys[todo[j]]}.npz", got[j], yaws)
                out[todo[j]] = got[j]
        if any(v for v in left.values()):
            raise DataError(f"chairs: the render job returned too few views for "
                            f"{', '.join(refs[todo[j]].name for j, v in left.items() if v)}")
    return out  # type: ignore[return-value]


def _set(refs: list[MeshRef], renders: list[np.ndarray], yaws: list[float], lr: LabelRange) -> ImageSet:
    x = np.concatenate(renders)[:, None]
    y = np.tile(np.asarray(yaws, np.float64), len(refs))
    return ImageSet(np.ascontiguousarray(x), lr.normalise(y, "chairs (rendered yaws)"), None)


def load_chairs_with_metadata(cfg: DataConfig, executor=None) -> tuple[ImageSet, ImageSet, dict]:
    """(train, test, metadata): images (N, 1, S, S) uint8, labels = yaw normalised to [0, 1]."""
    cc = settings(cfg)
    lr = yaw_range(cfg)
    params = render_params(cfg)
    train_refs, test_refs = split_models(list_models(cfg), cc)
    renders = render_models(train_refs + test_refs, params, executor, actors=cc.render_actors)
    n = len(train_refs)
    meta = {"label": {"name": "yaw", "lo": lr.lo, "hi": lr.hi, "unit": lr.unit}, "render": params,
            "train_models": [r.info() for r in train_refs], "test_models": [r.info() for r in test_refs]}
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    atomic_write_text(render_dir() / f"dataset-{key}.json", json.dumps(meta, indent=1))
    return (_set(train_refs, renders[:n], params["yaws"], lr), _set(test_refs, renders[n:], params["yaws"], lr),
            meta)


def load_chairs(cfg: DataConfig, executor=None) -> tuple[ImageSet, ImageSet]:
    train, test, _ = load_chairs_with_metadata(cfg, executor)
    return train, test
