"""Hinge GAN losses (SN-GAN / BigGAN default): bounded D targets keep the SN critic well behaved."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_loss(fake_logits: Tensor) -> Tensor:
    """-E[D(G(z))]: the generator pushes fake logits up, unbounded (standard hinge G loss)."""
    return -fake_logits.mean()


__all__ = ["d_loss", "g_loss"]
