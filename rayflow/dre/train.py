"""Training loop of the conditional density-ratio net (plain PyTorch; the Ray driver wraps it).

The caller owns the frozen feature extractor and the generator and hands in two samplers:

* ``real_feats_sampler(n) -> (feats, labels)``: features and labels of ``n`` real training samples;
* ``fake_feats_sampler(labels) -> feats``: features of generator samples drawn **for the same
  labels** as the real batch (official ``train_cdre.py``; for CcGAN the ratio is evaluated at the
  real labels even when the generator conditions on a vicinity).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rayflow.config import DREConfig
from rayflow.dre.sp_loss import sp_loss
from rayflow.train.diverged import check_loss

__all__ = ["train_ratio_net", "ratio_scores", "RealSampler", "FakeSampler"]

RealSampler = Callable[[int], tuple[torch.Tensor, torch.Tensor]]
FakeSampler = Callable[[torch.Tensor], torch.Tensor]
Reporter = Callable[[dict, "dict | None"], Any]


def _device_of(net: nn.Module) -> torch.device:
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def train_ratio_net(
    net: nn.Module,
    real_feats_sampler: RealSampler,
    fake_feats_sampler: FakeSampler,
    cfg: DREConfig,
    reporter: Reporter | None = None,
    *,
    report_every: int | None = None,
) -> nn.Module:
    """Train ``net`` (a :class:`~rayflow.dre.ratio_net.RatioMLP`) with the SP loss; returns it in eval mode.

    Adam(lr=cfg.lr, betas=(0.5, 0.999), weight_decay=1e-4), ``cfg.steps`` steps of
    ``cfg.batch_size`` real + ``cfg.batch_size`` fake samples, penalty λ = ``cfg.penalty``.
    The torch RNG is seeded with ``cfg.seed`` inside a forked RNG scope (dropout and any sampler
    drawing from the global torch RNG are reproducible; the caller's RNG state is left untouched).

    ``reporter(metrics, None)`` is called every ``report_every`` steps (default: ~10 times per run)
    and after the last step with ``{"step", "loss", "mean_r_real", "mean_r_fake"}`` (running means
    since the previous report).
    """
    device = _device_of(net)
    every = report_every or max(1, cfg.steps // 10)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.5, 0.999), weight_decay=1e-4)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(cfg.seed)
        net.train()
        acc = {"loss": 0.0, "mean_r_real": 0.0, "mean_r_fake": 0.0}
        n_acc = 0
        for step in range(1, cfg.steps + 1):
            real_x, labels = real_feats_sampler(cfg.batch_size)
            with torch.no_grad():
                fake_x = fake_feats_sampler(labels)
            real_x = real_x.to(device, non_blocking=True).float()
            fake_x = fake_x.to(device, non_blocking=True).float()
            labels = labels.to(device, non_blocking=True)
            r_real = net(real_x, labels)
            r_fake = net(fake_x, labels)
            loss = sp_loss(r_real, r_fake, cfg.penalty)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if reporter is not None or step % every == 0 or step == cfg.steps:  # a sync every `every` steps
                value = float(loss.detach())
                check_loss(value, "dre", step, hint="dre.lr too high for these features?")
            if reporter is not None:
                acc["loss"] += value
                acc["mean_r_real"] += float(r_real.detach().mean())
                acc["mean_r_fake"] += float(r_fake.detach().mean())
                n_acc += 1
                if step % every == 0 or step == cfg.steps:
                    reporter({"step": step, **{k: v / n_acc for k, v in acc.items()}}, None)
                    acc = dict.fromkeys(acc, 0.0)
                    n_acc = 0
    net.eval()
    return net


@torch.no_grad()
def ratio_scores(net: nn.Module, feats: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Ratios ``r(feats | labels)`` in eval mode without gradients, as a float32 CPU tensor ``(N,)``.

    The net's previous train/eval mode is restored afterwards.
    """
    if batch_size <= 0:
        raise ValueError(f"ratio_scores: batch_size must be > 0, got {batch_size}")
    feats = torch.as_tensor(feats)
    labels = torch.as_tensor(labels)
    if len(feats) != len(labels):
        raise ValueError(f"ratio_scores: {len(feats)} features but {len(labels)} labels")
    device = _device_of(net)
    was_training = net.training
    net.eval()
    try:
        out = [
            net(feats[i:i + batch_size].to(device).float(), labels[i:i + batch_size].to(device)).float().cpu()
            for i in range(0, len(feats), batch_size)
        ]
    finally:
        net.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
