"""Hinge GAN losses (SN-GAN / BigGAN default): bounded D targets keep the SN critic well behaved."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def d_loss(real_logits: Tensor, fake_logits: Tensor, w_real: Tensor | None = None,
           w_fake: Tensor | None = None) -> Tensor:
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]; with per-sample weights (CcGAN's vicinal losses,
    vicinal.py) each term is mean(w * hinge), as train_ccgan.py computes it."""
    real, fake = F.relu(1.0 - real_logits), F.relu(1.0 + fake_logits)
    if w_real is not None:
        real = w_real * real
    if w_fake is not None:
        fake = w_fake * fake
    return real.mean() + fake.mean()


def g_loss(fake_logits: Tensor) -> Tensor:
    """-E[D(G(z))]: the generator pushes fake logits up, unbounded (standard hinge G loss)."""
    return -fake_logits.mean()


class LeCam:
    """LeCam regulariser (Tseng et al., CVPR 2021) for GANs on limited data.

    Why: with ~1,000 real images D memorises them, its real/fake logits drift apart, and G
    collapses onto the few modes D still rewards (what the quality run saw: 99 % label
    consistency, near-identical samples). The penalty ties D's outputs on reals to a moving
    average of its outputs on fakes and vice versa:
    R = E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2], a_* = EMAs of the mean logits.
    """

    def __init__(self, decay: float = 0.99):
        self.decay = decay
        self.real = 0.0
        self.fake = 0.0

    def __call__(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        d = self.decay
        self.real = d * self.real + (1 - d) * float(real_logits.detach().mean())
        self.fake = d * self.fake + (1 - d) * float(fake_logits.detach().mean())
        return F.relu(real_logits - self.fake).pow(2).mean() + F.relu(self.real - fake_logits).pow(2).mean()

    def state_dict(self) -> dict:
        return {"real": float(self.real), "fake": float(self.fake)}

    def load_state_dict(self, sd: dict) -> None:
        self.real, self.fake = float(sd["real"]), float(sd["fake"])


__all__ = ["LeCam", "d_loss", "g_loss"]
