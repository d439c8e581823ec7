"""The feature map the density-ratio net sees, shared by its training and the synth stage."""

from __future__ import annotations

import torch
from torch import nn

from rayflow.data.transforms import to_float


@torch.no_grad()
def embed(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pre-head features of uint8 images (``to_float`` to [-1, 1], last entry of
    ``return_features``, flattened)."""
    return net(to_float(images), return_features=True)[1][-1].flatten(1)
