"""Sampling-ready generators from GAN training states, and the probes that score them."""

from __future__ import annotations

import copy

import numpy as np
import torch

from rayflow.config import GANConfig
from rayflow.data.imageset import ImageSet
from rayflow.gan.ema import recalibrate_bn, unwrap
from rayflow.gan.generator import GeneratorSpec
from rayflow.gan.loop import generate
from rayflow.gan.quality import gan_quality
from rayflow.labels import as_space


def grid_labels(space, per_class: int = 10) -> torch.Tensor:
    """Conditioning labels stratum after stratum; `space`: a label space or a class count."""
    return as_space(space).grid(per_class)


def generator_spec(cfg: GANConfig, train: ImageSet) -> GeneratorSpec:
    c, h, _ = train.shape
    return GeneratorSpec.of(cfg, train.num_classes, c, h)


def ema_generator(state: dict, cfg: GANConfig, train: ImageSet) -> torch.nn.Module:
    """The EMA generator stored in a GAN checkpoint state."""
    G = generator_spec(cfg, train)()
    G.load_state_dict(state["G_ema"]["model"])
    return G


def for_sampling(G: torch.nn.Module, cfg: GANConfig, num_classes) -> torch.nn.Module:
    """An eval-mode copy of (EMA) G to sample from, with BN statistics re-estimated from its own
    samples when `gan.recalibrate_bn` (BigGAN's "standing statistics"). Why: the EMA copy carries
    raw G's running stats, which do not match the averaged weights (quality run, step 3000: label
    consistency 83 % as trained, 91.5 % recalibrated, FID 11.1 -> 8.3)."""
    g = copy.deepcopy(unwrap(G))
    if cfg.recalibrate_bn:
        recalibrate_bn(g, grid_labels(num_classes, 200), seed=cfg.seed)
    return g.eval()


def consistency_probe(G: torch.nn.Module, teacher: torch.nn.Module | None, num_classes,
                      per_class: int = 100, seed: int = 12345, real_u8: torch.Tensor | None = None) -> dict:
    """Label consistency (and FID vs `real_u8`, both in teacher space) of one checkpoint's samples."""
    if teacher is None:
        return {}
    labels = grid_labels(num_classes, per_class)
    return gan_quality(teacher, generate(G, labels, seed), labels, real_u8=real_u8,
                       num_classes=as_space(num_classes))


def probe_reals(train: ImageSet, n: int = 2000) -> torch.Tensor:
    """The real images FID is measured against while choosing a checkpoint (a fixed subset)."""
    return torch.tensor(train.images[np.random.default_rng(0).permutation(len(train))[:n]])
