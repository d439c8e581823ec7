"""Fake data as graph nodes: one scored pool (every draw once, keyed without rho and M) and cheap
views of it (subsampled / filtered at rho / relabelled / first M per class).

The pool grows append-only in segments (segment k: `synth.pool_draws * 2**k` draws per class, shard
ids from k * 2**16) when a view needs more; each segment is its own content-addressed artifact, so a
view's content depends only on the first segment's key and the view's own settings.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from rayflow.config import PipelineConfig, SynthConfig
from rayflow.stages.dre import RATIO, features_node
from rayflow.stages.graph import Node, StageDef, View, register

log = logging.getLogger("rayflow")

SHARDS = "shards"
VIEW = "view.parquet"
SEGMENT_SHARDS = 2**16  # shard ids of segment k start at k * SEGMENT_SHARDS
# how a pool is drawn (latent_scale, truncation: hashed only away from their defaults, graph._DEFAULT_READS)
CONTENT = ("batch_size", "shard_size", "num_gpus_per_actor", "seed", "pool_draws", "latent_scale", "truncation")


def pool_node(subsample: bool, segment: int = 0) -> Node:
    return Node.of("pool", subsample=subsample, segment=segment)


def _pool_reads(p: dict) -> tuple[str, ...]:
    return tuple(f"synth.{f}" for f in CONTENT) + ("filter.burnin",) + (
        ("dre.hidden", "dre.burnin") if p["subsample"] else ())


def _pool_inputs(cfg: PipelineConfig, p: dict) -> dict[str, Node]:
    ins = {"teacher": Node.of("teacher"), "gan": Node.of("gan")}
    if p["subsample"]:
        ins.update(dre=Node.of("dre"), features=features_node(cfg))
    if p["segment"] > 0:
        ins["first"] = pool_node(p["subsample"])
    return ins


def work_dir(runner: Any, key: str) -> Path:
    """Where an unfinished segment keeps its shards and manifest between attempts (a kill resumes)."""
    store = runner.store
    if store.is_local:
        return Path(store.root) / "artifacts" / "pool" / f".work-{key}"
    tag = hashlib.sha256(store.location.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "rayflow-work" / tag / f"pool-{key}"


def build_pool(runner: Any, node: Node, v: View, inputs: dict, out: Path, key: str) -> dict:
    from rayflow.gan.artifact import arch_of, load_generator
    from rayflow.labels import as_space
    from rayflow.synth.driver import SynthOptions, run_synth
    from rayflow.synth.inputs import BurninStats, SynthInputs
    from rayflow.synth.manifest import Manifest
    from rayflow.tracking import log_scalars, open_tracker

    p, seg = node.p, node.p["segment"]
    draws = v["synth.pool_draws"] * 2**seg
    cfg = SynthConfig(m_per_class=draws, **{f: v[f"synth.{f}"] for f in CONTENT if f != "pool_draws"})
    gan = inputs["gan"]
    burnin = BurninStats.from_dict(Manifest.load(inputs["first"].file(SHARDS)).burnin) if seg else None
    # NodePaths, not tensors: the actors load the nets themselves (small constructor arguments), from
    # their own node (the driver's download cache is on the driver's disk only)
    si = SynthInputs(num_classes=as_space(arch_of(gan.path)["num_classes"]),  # classes, or a [0, 1] label
                     generator=functools.partial(load_generator, gan.node_path()),
                     teacher_dir=inputs["teacher"].node_path(),
                     feature_dir=inputs["features"].node_path() if p["subsample"] else None,
                     ratio_state=inputs["dre"].node_path(RATIO) if p["subsample"] else None,
                     ratio_hidden=tuple(v["dre.hidden"]) if p["subsample"] else (512, 256, 128),
                     subsample=p["subsample"], filter=False, relabel=False, pool=True,
                     first_shard_id=seg * SEGMENT_SHARDS, filter_burnin=v["filter.burnin"],
                     dre_burnin=v.get("dre.burnin", 1000), burnin=burnin)
    log.info("[pool] segment %d: %d draws per class, subsample=%s (%s executor)", seg, draws, p["subsample"],
             runner.executor.name)
    sc, full = runner.cfg.scaling, runner.cfg.synth
    # an object store: the work dir is on the driver's disk, so actors (maybe on other nodes) return each
    # shard's Parquet bytes and the driver writes them; a local store is every node's (shared) path
    opts = SynthOptions(local_threads=int(sc.cpus_per_worker * sc.num_workers), gen_actors=full.gen_actors,
                        fused=full.fused, ship_shards=not runner.store.is_local)
    work = work_dir(runner, key)
    tracker = open_tracker(getattr(runner, "tracking", None), f"pool-{key}")  # each round's counts and rates
    try:
        metrics = run_synth(si, cfg, work, runner.executor, options=opts,
                            on_round=lambda r, m: log_scalars(tracker, m, r))
        log_scalars(tracker, metrics, metrics["rounds"])  # the totals: acceptance and keep rates, wall
    finally:
        tracker.close()
    shutil.move(str(work), str(out / SHARDS))
    metrics["burnin"] = {k: v for k, v in metrics["burnin"].items() if k not in ("filter_ce", "filter_accepted")}
    return {**metrics, "segment": seg, "draws_per_class": draws}


register(StageDef("pool", reads=_pool_reads, inputs=_pool_inputs, build=build_pool,
                  doc="the scored pool: every draw with its density ratio, cDR-RS outcome, teacher logits/CE"))


def _view_reads(p: dict) -> tuple[str, ...]:
    return ("synth.m_per_class", "synth.max_draws_per_class", "synth.pool_draws") + (
        ("filter.rho",) if p["filter"] else ())


def view_of(v: View, p: dict):
    from rayflow.synth.view import View as ViewSpec

    return ViewSpec(subsample=p["subsample"], rho=v["filter.rho"] if p["filter"] else None, relabel=p["relabel"],
                    m_per_class=v["synth.m_per_class"])


def build_view(runner: Any, node: Node, v: View, inputs: dict, out: Path, key: str) -> dict:
    """Selects the view's rows, adding pool segments until every class has enough (or the cap says no)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rayflow.synth.manifest import Manifest, SynthError
    from rayflow.synth.view import ViewShortError, eligible_per_class, pool_index, select

    p, spec = node.p, view_of(v, node.p)
    first = inputs["pool"]
    man = Manifest.load(first.file(SHARDS))
    burnin, space = man.burnin, man.space
    C = space.num_strata
    segments = [first]
    while True:
        index = pool_index([s.file(SHARDS) for s in segments])
        try:
            rows = select(index, burnin, spec, space)
            break
        except ViewShortError as e:
            nxt = v["synth.pool_draws"] * (2 ** (len(segments) + 1) - 1)
            if nxt > v["synth.max_draws_per_class"]:
                raise SynthError(f"view {spec}: {e}; the pool would need more than synth.max_draws_per_class="
                                 f"{v['synth.max_draws_per_class']} draws per class") from None
            log.info("[view] %s; extending the pool to %d draws per class", e, nxt)
            segments.append(runner.artifact(pool_node(p["subsample"], len(segments))))
    seg_of = {str(s.file(SHARDS)): i for i, s in enumerate(segments)}
    seg = np.array([seg_of[str(Path(f).parent.parent)] for f in rows["file"]], np.int64)
    rel = np.array([str(Path(f).relative_to(Path(f).parent.parent)) for f in rows["file"]], dtype=object)
    pq.write_table(pa.table({"sample_id": rows["sample_id"], "label": rows["label"],
                             "orig_label": rows["orig_label"], "segment": seg, "file": rel.astype(str)}), out / VIEW)
    pred = index["teacher_pred"][np.searchsorted(index["sample_id"], rows["sample_id"])]
    return {"m_per_class": spec.m_per_class, "samples": len(rows["label"]), "segments": len(segments),
            "pool_draws_per_class": int(sum(s.metrics["draws_per_class"] for s in segments)),
            "eligible_per_class": eligible_per_class(index, burnin, spec, space),
            "label_consistency_orig": 100.0 * float(space.agree(pred, rows["orig_label"]).mean()),
            "label_consistency_final": 100.0 * float(space.agree(pred, rows["label"]).mean()),
            "subsample_accept": float(index["accepted"].mean()), "num_classes": C,
            "subsample_accept_per_class": [float(index["accepted"][index["stratum"] == c].mean()) for c in range(C)],
            "subsample": p["subsample"],
            "filter": p["filter"], "relabel": p["relabel"], "rho": spec.rho}


def view_files(runner: Any, view_art: Any) -> dict[str, np.ndarray]:
    """A view artifact's rows with the pool file each comes from, as a NodePath (a local path wherever it
    is opened: the driver, a Train worker, a Ray Data read task)."""
    import pyarrow.parquet as pq

    t = pq.read_table(view_art.file(VIEW))
    col = {k: t.column(k).to_numpy(zero_copy_only=False) for k in t.column_names}  # labels keep their dtype
    sub = bool(view_art.metrics["subsample"])
    segs = {i: runner.artifact(pool_node(sub, i)) for i in sorted(set(col["segment"].tolist()))}
    files = np.empty(len(col["file"]), dtype=object)  # NodePaths: read on any node (ray_data.fake_dataset)
    files[:] = [segs[s].node_path(f"{SHARDS}/{f}") for s, f in zip(col["segment"].tolist(), col["file"].tolist())]
    return {"sample_id": col["sample_id"].astype(np.int64), "label": col["label"],
            "orig_label": col["orig_label"], "file": files}


register(StageDef("view", reads=_view_reads,
                  inputs=lambda cfg, p: {"pool": pool_node(p["subsample"])}, build=build_view,
                  doc="a view of the pool: cDR-RS subsampled, filtered at rho, relabelled, first M per class"))
