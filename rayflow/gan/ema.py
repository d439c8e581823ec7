"""Exponential moving average of G's weights (BigGAN/StyleGAN practice: EMA samples are better).

Sampling mode: the EMA copy is kept in **eval mode** (BN uses running statistics). Why: a sample
then depends only on (z, y), not on the rest of its batch, so `generate` is reproducible for any
batch size or label mix and sharded Ray Data generation can resume shard by shard. The prototype
sampled in train mode (batch statistics), which ties each image to its batch. The running stats
are G's (copied every update); `recalibrate_bn` re-estimates them for the EMA weights ("standing
statistics") when that mismatch matters.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch import Tensor


def unwrap(m: nn.Module) -> nn.Module:
    """The bare module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(m, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            m = m.module
        elif hasattr(m, "_orig_mod"):
            m = m._orig_mod
        else:
            return m


class EMA:
    """`ema = d*ema + (1-d)*model` with warm-up `d_t = min(decay, (1+t)/(10+t))`.

    Warm-up makes the average follow G from the first update (d_0 = 0.1) instead of being
    anchored to the random init for ~1/(1-decay) steps, so early checkpoints are usable.
    Buffers (BN running stats) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.num_updates = 0
        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
            p.grad = None

    def current_decay(self) -> float:
        t = self.num_updates
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        src = unwrap(model)
        params = dict(src.named_parameters())
        for name, p in self.ema.named_parameters():
            p.lerp_(params[name].detach(), 1.0 - d)
        buffers = dict(src.named_buffers())
        for name, b in self.ema.named_buffers():
            b.copy_(buffers[name])
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"model": self.ema.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, sd: dict) -> None:
        self.ema.load_state_dict(sd["model"])
        self.num_updates = int(sd["num_updates"])
        self.decay = float(sd["decay"])


@torch.no_grad()
def recalibrate_bn(G: nn.Module, labels: Tensor, batch_size: int = 256, seed: int = 0) -> nn.Module:
    """Re-estimate G's BN running stats as a plain average over batches of G(z, labels).

    Use on the EMA generator before sampling in eval mode; G is left in eval mode.
    """
    g = unwrap(G)
    bns = [m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    dev = next(g.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    g.train()
    for i in range(0, len(labels), batch_size):
        y = labels[i:i + batch_size]
        g(torch.randn(len(y), g.z_dim, generator=gen).to(dev), y.to(dev))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return g.eval()
