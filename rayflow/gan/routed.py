"""A generator that draws each class from its own checkpoint.

Why: on limited data every checkpoint of a cGAN run can have one class that has collapsed or
drifted off its condition while the others are fine, and which class it is changes from checkpoint
to checkpoint (quality_n200: pullover at 0-11 % label consistency up to step 4000, coat at 5-8 %
from 4500). One checkpoint for all classes then hands the student a broken class; routing each
class to a checkpoint where it is good fixes that without more GAN compute. A continuous label
(regression) is routed by its stratum: `len(routes)` equal slices of [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class ClassRoutedGenerator(nn.Module):
    """G(z, y) = generators[routes[y]](z, y), sample by sample; same interface as CondGenerator."""

    def __init__(self, generators: Sequence[nn.Module], routes: Sequence[int], continuous: bool = False):
        super().__init__()
        if not generators:
            raise ValueError("ClassRoutedGenerator needs at least one generator")
        if any(not 0 <= int(r) < len(generators) for r in routes):
            raise ValueError(f"routes {list(routes)} point outside the {len(generators)} generators")
        self.generators = nn.ModuleList(generators)
        self.register_buffer("routes", torch.tensor([int(r) for r in routes], dtype=torch.long))
        first = self.generators[0]
        self.continuous = continuous
        self.num_classes = None if continuous else len(routes)
        self.z_dim, self.out_channels, self.image_size = first.z_dim, first.out_channels, first.image_size

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        stratum = (y * len(self.routes)).floor().long().clamp(0, len(self.routes) - 1) if self.continuous else y
        which = self.routes.to(y.device)[stratum]
        out = None
        for k, g in enumerate(self.generators):
            idx = (which == k).nonzero(as_tuple=True)[0]
            if len(idx) == 0:
                continue
            part = g(z[idx], y[idx])
            if out is None:
                out = part.new_empty((len(y), *part.shape[1:]))
            out[idx] = part
        if out is None:  # empty batch
            return self.generators[0](z, y)
        return out
