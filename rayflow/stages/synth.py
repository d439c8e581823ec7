"""The synthetic-data stage as graph nodes: one fake set per (subsample, filter, relabel) setting.

`run_synth` resumes from its own shard manifest, so it works in a stable local work directory
(which survives a kill) that moves into the artifact only when complete.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rayflow.config import PipelineConfig, SynthConfig
from rayflow.stages.dre import RATIO, features_node
from rayflow.stages.graph import Node, StageDef, View, register

log = logging.getLogger("rayflow")

SHARDS = "shards"
# actor counts and pool layout change how fast, not what: shards are identical either way
CONTENT = ("m_per_class", "batch_size", "shard_size", "num_gpus_per_actor", "soft_labels", "seed")


def _reads(p: dict) -> tuple[str, ...]:
    out = tuple(f"synth.{f}" for f in CONTENT)
    if p["subsample"]:
        out += ("dre.hidden", "dre.burnin")
    if p["filter"]:
        out += ("filter.rho", "filter.burnin")
    return out


def _inputs(cfg: PipelineConfig, p: dict) -> dict[str, Node]:
    ins = {"teacher": Node.of("teacher"), "gan": Node.of("gan")}
    if p["subsample"]:
        ins.update(dre=Node.of("dre"), features=features_node(cfg))
    return ins


def work_dir(runner: Any, key: str) -> Path:
    """Where an unfinished fake set keeps its shards and manifest between attempts (a kill resumes)."""
    store = runner.store
    if store.is_local:
        return Path(store.root) / "artifacts" / "synth" / f".work-{key}"
    tag = hashlib.sha256(store.location.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "rayflow-work" / tag / f"synth-{key}"


def build_synth(runner: Any, node: Node, v: View, inputs: dict, out: Path, key: str) -> dict:
    from rayflow.gan.artifact import arch_of, load_generator
    from rayflow.synth.driver import SynthInputs, SynthOptions, run_synth

    p, cfg = node.p, SynthConfig(**{f: v[f"synth.{f}"] for f in CONTENT})
    gan = inputs["gan"]
    work = work_dir(runner, key)
    # paths, not tensors: the actors load the nets themselves (small constructor arguments)
    si = SynthInputs(num_classes=arch_of(gan.path)["num_classes"],
                     generator=functools.partial(load_generator, str(gan.path)),
                     teacher_dir=str(inputs["teacher"].path),
                     feature_dir=str(inputs["features"].path) if p["subsample"] else None,
                     ratio_state=str(inputs["dre"].file(RATIO)) if p["subsample"] else None,
                     ratio_hidden=tuple(v["dre.hidden"]) if p["subsample"] else (512, 256, 128),
                     subsample=p["subsample"], filter=p["filter"], relabel=p["relabel"],
                     rho=v.get("filter.rho", 0.9), filter_burnin=v.get("filter.burnin", 500),
                     dre_burnin=v.get("dre.burnin", 1000))
    log.info("[synth] %d per class, subsample=%s filter=%s relabel=%s (%s executor)", cfg.m_per_class,
             p["subsample"], p["filter"], p["relabel"], runner.executor.name)
    sc, full = runner.cfg.scaling, runner.cfg.synth
    opts = SynthOptions(local_threads=int(sc.cpus_per_worker * sc.num_workers), gen_actors=full.gen_actors,
                        fused=full.fused)
    metrics = run_synth(si, cfg, work, runner.executor, options=opts)
    shutil.move(str(work), str(out / SHARDS))
    return metrics


register(StageDef("synth", reads=_reads, inputs=_inputs, build=build_synth,
                  doc="generate -> cDR-RS subsample -> teacher label/filter -> Parquet shards"))
