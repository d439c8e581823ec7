"""cDR-RS, part 1: the conditional density-ratio net r(x|y) on frozen features.

The feature extractor is a classifier trained on the real data. `dre.feature_net.name: teacher`
reuses the teacher (no extra training, the cheap choice on CPUs); any registry name trains a
dedicated extractor as its own cached stage, as the paper does (ResNet-34 there).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from rayflow.artifacts import Artifact, run_stage
from rayflow.checkpoint import load_into, load_weights, save_weights
from rayflow.config import DREConfig, PipelineConfig, StageSpec
from rayflow.data.imageset import ImageSet, Splits
from rayflow.dre import build_ratio_net, train_ratio_net
from rayflow.dre.features import embed
from rayflow.gan import generate
from rayflow.stages.models_io import load_model

log = logging.getLogger("rayflow")

RATIO = "ratio_net.safetensors"
META = "dre.json"


def fit_ratio_net(cfg: DREConfig, feature_dir: str, gan_dir: str, train: ImageSet) -> tuple[dict, dict]:
    """Plain torch: returns (ratio-net state_dict, metrics). Runs in-process or as a Ray task."""
    from rayflow.stages.gan import load_generator

    torch.manual_seed(cfg.seed)
    fnet, G = load_model(feature_dir), load_generator(gan_dir)
    feature_dim = embed(fnet, torch.tensor(train.images[:2])).shape[1]
    net = build_ratio_net(cfg, feature_dim, train.num_classes)
    rng = np.random.default_rng(cfg.seed)
    calls = {"n": 0}

    def real(n: int):
        idx = rng.integers(0, len(train), n)
        return embed(fnet, torch.tensor(train.images[idx])), torch.tensor(train.labels[idx])

    def fake(labels: torch.Tensor):
        calls["n"] += 1
        x = generate(G, labels, seed=cfg.seed * 1_000_003 + calls["n"])
        return embed(fnet, x)

    t0 = time.perf_counter()
    net = train_ratio_net(net, real, fake, cfg, reporter=lambda m, _: log.info(
        "[dre] step %d loss %.4f mean r real %.3f fake %.3f", m["step"], m["loss"], m["mean_r_real"], m["mean_r_fake"]))
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}, {
        "feature_dim": feature_dim, "train_s": time.perf_counter() - t0}


def dre_stage(pcfg: PipelineConfig, splits: Splits, teacher: Artifact, gan: Artifact,
              feature_stage=None) -> Artifact:
    cfg = pcfg.dre
    if cfg.feature_net.name == "teacher":
        features = teacher
    else:
        features = feature_stage(pcfg, splits, "dre_features", StageSpec(model=cfg.feature_net, train=cfg.feature_train))

    def build(out: Path) -> dict:
        log.info("[dre] training the density-ratio net for %d steps on %s features", cfg.steps, features.stage)
        if pcfg.runtime.executor == "ray":
            import ray

            from rayflow.runtime import init_ray

            init_ray(pcfg.runtime)
            task = ray.remote(num_cpus=pcfg.scaling.cpus_per_worker, num_gpus=0)(fit_ratio_net)
            state, m = ray.get(task.remote(cfg, str(features.path), str(gan.path), splits.train))
        else:
            state, m = fit_ratio_net(cfg, str(features.path), str(gan.path), splits.train)
        save_weights(state, out / RATIO)
        (out / META).write_text(json.dumps({"feature_dir": str(features.path), "feature_dim": m["feature_dim"],
                                            "num_classes": splits.num_classes}))
        return m

    return run_stage(Path(pcfg.output_dir) / "artifacts", "dre", cfg.model_dump(mode="json"),
                     [features, gan], build)


def load_ratio_net(cfg: DREConfig, dre_dir: str | Path) -> tuple[torch.nn.Module, dict]:
    d = Path(dre_dir)
    meta = json.loads((d / META).read_text())
    net = build_ratio_net(cfg, meta["feature_dim"], meta["num_classes"])
    load_into(net, load_weights(d / RATIO), str(d / RATIO))
    return net.eval(), meta
