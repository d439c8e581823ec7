"""cDR-RS, part 1: the conditional density-ratio net r(x|y) on frozen features, as a graph stage.

The feature extractor is a classifier trained on the real data. `dre.feature_net.name: teacher`
reuses the teacher (no extra training, the cheap choice on CPUs); any registry name trains a
dedicated extractor as its own cached stage (`dre_features`), as the paper does (ResNet-34 there).
"""

from __future__ import annotations

import json
import logging
import time
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayflow.config import DREConfig, PipelineConfig
from rayflow.data.imageset import ImageSet
from rayflow.data.mapped import rows
from rayflow.stages.graph import Node, StageDef, View, register

log = logging.getLogger("rayflow")

RATIO = "ratio_net.safetensors"
META = "dre.json"
FIELDS = ("hidden", "steps", "batch_size", "lr", "penalty", "seed")  # what training the ratio net reads


def fit_ratio_net(cfg: DREConfig, feature_dir: str | PathLike, gan_dir: str | PathLike,
                  train: ImageSet, tracking: Any = None, name: str = "dre") -> tuple[dict, dict]:
    """Plain torch: returns (ratio-net state_dict, metrics). Runs in-process or as a remote task,
    which writes its loss curve itself (`tracking`: a TrackingSpec, opened as `name`)."""
    from rayflow.dre import build_ratio_net, train_ratio_net
    from rayflow.dre.features import embed
    from rayflow.gan import generate
    from rayflow.gan.artifact import load_generator
    from rayflow.labels import as_space
    from rayflow.models.io import load_model
    from rayflow.tracking import log_scalars, open_tracker

    torch.manual_seed(cfg.seed)
    fnet, G = load_model(feature_dir), load_generator(gan_dir)
    feature_dim = embed(fnet, torch.tensor(train.images[:2])).shape[1]
    net = build_ratio_net(cfg, feature_dim, as_space(train.num_classes))  # class embedding or sinusoidal y
    rng = np.random.default_rng(cfg.seed)
    calls = {"n": 0}

    def real(n: int):
        idx = rng.integers(0, len(train), n)
        return embed(fnet, torch.from_numpy(rows(train.images, idx))), torch.tensor(train.labels[idx])

    def fake(labels: torch.Tensor):
        calls["n"] += 1
        x = generate(G, labels, seed=cfg.seed * 1_000_003 + calls["n"])
        return embed(fnet, x)

    t0 = time.perf_counter()
    tracker = open_tracker(tracking, name)

    def reporter(m: dict, _) -> None:
        log.info("[dre] step %d loss %.4f mean r real %.3f fake %.3f", m["step"], m["loss"], m["mean_r_real"],
                 m["mean_r_fake"])
        log_scalars(tracker, m, m["step"])

    try:
        net = train_ratio_net(net, real, fake, cfg, reporter=reporter)
    finally:
        tracker.close()
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}, {
        "feature_dim": feature_dim, "train_s": time.perf_counter() - t0}


def dre_config(v: View) -> DREConfig:
    return DREConfig(**{f: v[f"dre.{f}"] for f in FIELDS})


def features_node(cfg: PipelineConfig) -> Node:
    """The frozen feature extractor: the teacher, or a dedicated `dre_features` stage."""
    return Node.of("teacher") if cfg.dre.feature_net.name == "teacher" else Node.of("dre_features")


def build_dre(runner: Any, node: Node, v: View, inputs: dict, out: Path, key: str) -> dict:
    from rayflow.checkpoint import save_weights

    cfg, features, gan = dre_config(v), inputs["features"], inputs["gan"]
    log.info("[dre] training the density-ratio net for %d steps on %s features", cfg.steps, features.stage)
    # NodePaths, resolved where the task runs (the driver's download cache is on the driver's disk only)
    state, m = runner.executor.remote(fit_ratio_net, cfg, features.node_path(), gan.node_path(), runner.splits.train,
                                      tracking=getattr(runner, "tracking", None), name=f"dre-{key}",
                                      num_cpus=runner.cfg.scaling.cpus_per_worker)
    save_weights(state, out / RATIO)
    (out / META).write_text(json.dumps({"feature_dim": m["feature_dim"], "num_classes": runner.splits.num_classes}))
    return m


register(StageDef("dre", reads=lambda p: ("data", *(f"dre.{f}" for f in FIELDS)),
                  inputs=lambda cfg, p: {"features": features_node(cfg), "gan": Node.of("gan")},
                  build=build_dre, doc="the density-ratio net r(x|y) = p_real / p_fake (SP loss)"))
