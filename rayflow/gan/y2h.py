"""The CcGAN paper's improved label input (`gan.label_input: y2h`, regression only): a small
regression CNN x -> h -> y trained on the real training images, then y2h fitted so that the CNN's
frozen head h2y maps y2h(y) back to y (`label_embed.fit_y2h`). h(y) then sits where the CNN puts
images of label y, and G's conditional norm and D's projection read that frozen, shared embedding
(`loop.build_gan(..., y2h=...)`), instead of each learning its own y2h with the GAN ("joint").

A dedicated CNN, not the teacher's feature net: y2h's output is `gan.embed_dim` ReLU features
read by a linear head, which a user's teacher (any nn.Module, with no known split into features and
head, of any width) need not have; and the teacher judges the fakes (label consistency, the rho
filter, relabelling), so conditioning G on the teacher's own features would let the GAN fit its
judge rather than the images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from rayflow.data.transforms import to_float
from rayflow.gan.label_embed import LabelMLP, fit_y2h


class LabelCNN(nn.Module):
    """x in [-1, 1] (N, C, H, W) -> h (N, embed_dim), ReLU features -> y (N,) by a linear head
    `h2y`. The paper's head ends in a ReLU too; here it does not: a briefly trained head with
    mostly negative weights then outputs 0 for every y2h(y) >= 0, and `fit_y2h` gets no gradient."""

    def __init__(self, in_channels: int, embed_dim: int, width: int = 32):
        super().__init__()

        def block(i: int, o: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        self.features = nn.Sequential(*block(in_channels, width, 2), *block(width, 2 * width, 2),
                                      *block(2 * width, 4 * width, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(4 * width, embed_dim), nn.ReLU())
        self.h2y = nn.Linear(embed_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.h2y(self.features(x)).flatten()


def _float(images, idx=None) -> Tensor:
    """Rows `idx` (all: None) of a numpy / memory-mapped / torch image array, as float in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images if idx is None else images[idx]))
    return to_float(x) if x.dtype == torch.uint8 else x.float()


def train_label_cnn(images, labels, embed_dim: int, *, steps: int, batch_size: int = 128, lr: float = 1e-3,
                    seed: int = 0) -> LabelCNN:
    """The CNN x -> h -> y on (images uint8 or [-1, 1] float, labels in [0, 1]) by MSE with Adam;
    weights and batches from `seed` (the global RNG untouched). Returns it frozen, in eval mode."""
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.float32).flatten()
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LabelCNN(images.shape[1], embed_dim)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    net.train()
    for _ in range(steps):
        i = torch.randint(0, len(y_all), (min(batch_size, len(y_all)),), generator=g).numpy()
        loss = F.mse_loss(net(_float(images, i)), y_all[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval().requires_grad_(False)


@torch.no_grad()
def _mae(net: LabelCNN, images, labels, n: int = 2000, batch: int = 500) -> float:
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float32).flatten()[:n]
    pred = torch.cat([net(_float(images[i:min(i + batch, len(y))])) for i in range(0, len(y), batch)])
    return float((pred - y).abs().mean())


def fit_label_input(images, labels, embed_dim: int, *, steps: int, seed: int = 0,
                    batch_size: int = 128) -> tuple[LabelMLP, dict]:
    """(y2h frozen, metrics): the CNN trained for `steps`, then y2h fitted to its head for `steps`.
    Metrics: the CNN's train MAE and how well h2y(y2h(y)) gives y back on a grid of [0, 1] (both in
    normalised label units), what tells a badly fitted embedding from a bad GAN."""
    cnn = train_label_cnn(images, labels, embed_dim, steps=steps, seed=seed, batch_size=batch_size)
    with torch.random.fork_rng(devices=[]):  # its initial weights from `seed`, not from the driver's RNG state
        torch.manual_seed(seed)
        mlp = LabelMLP(embed_dim)
    y2h = fit_y2h(mlp, cnn.h2y, torch.as_tensor(np.asarray(labels), dtype=torch.float32), steps=steps, seed=seed)
    grid = torch.linspace(0.0, 1.0, 101)
    with torch.no_grad():
        back = float((cnn.h2y(y2h(grid)).flatten() - grid).abs().mean())
    return y2h, {"label_cnn_train_mae": _mae(cnn, images, labels), "y2h_roundtrip_mae": back, "steps": steps}


def load_y2h(path, embed_dim: int) -> LabelMLP:
    """The fitted y2h saved by the y2h stage (`stages/y2h.py`), frozen."""
    from rayflow.checkpoint import load_state

    y2h = LabelMLP(embed_dim)
    y2h.load_state_dict(load_state(path))
    return y2h.eval().requires_grad_(False)


__all__ = ["LabelCNN", "fit_label_input", "load_y2h", "train_label_cnn"]
