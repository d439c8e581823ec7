"""Small learned maps between student and teacher features of different width or size.

``hint_regressor`` follows RepDistiller's ConvReg for its three spatial cases and adds a fourth
(student map smaller than the teacher's, not by exactly 2x: 1x1 conv then bilinear upsampling) so
any pair of maps works; vectors get a Linear. ``build_checked`` runs one dummy batch through an
adapter, so a size mistake shows at build time with both shapes, not in the first step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rayflow.kd.errors import KDConfigError
from rayflow.kd.features import FeatureSpec


class _Upsample(nn.Module):
    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = size

    def forward(self, x):
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


def _map_conv(s: FeatureSpec, t: FeatureSpec) -> nn.Module:
    (sc, sh, sw), (tc, th, tw) = s.shape, t.shape
    if (sh, sw) == (2 * th, 2 * tw):
        return nn.Conv2d(sc, tc, 3, stride=2, padding=1)
    if (2 * sh, 2 * sw) == (th, tw):
        return nn.ConvTranspose2d(sc, tc, 4, stride=2, padding=1)
    if sh >= th and sw >= tw:
        return nn.Conv2d(sc, tc, (1 + sh - th, 1 + sw - tw))
    return nn.Sequential(nn.Conv2d(sc, tc, 1), _Upsample((th, tw)))


def hint_regressor(s: FeatureSpec, t: FeatureSpec, relu: bool) -> nn.Module:
    """Student feature -> teacher feature shape: conv (maps) or Linear (vectors), then BN (+ReLU)."""
    if s.is_map and t.is_map:
        layers = [_map_conv(s, t), nn.BatchNorm2d(t.shape[0])]
    else:
        layers = [nn.Flatten(), nn.Linear(s.numel, t.numel), nn.BatchNorm1d(t.numel)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def conv1x1_regressor(cin: int, mid: int, cout: int) -> nn.Sequential:
    """VID's mean predictor (RepDistiller VIDLoss.regressor); on vectors seen as (N, D, 1, 1)."""
    return nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.ReLU(), nn.Conv2d(mid, mid, 1, bias=False),
                         nn.ReLU(), nn.Conv2d(mid, cout, 1, bias=False))


class Embed(nn.Module):
    """CRD's projection: flatten, Linear, L2-normalise (RepDistiller crd/criterion.py Embed)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def as_map(x: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, D, 1, 1), maps unchanged: vectors ride the same 1x1-conv code as maps."""
    return x if x.dim() == 4 else x.reshape(len(x), -1, 1, 1)


def pool_to_common(fs: torch.Tensor, ft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger map down to the smaller one's size (RepDistiller AT/VID)."""
    h, w = min(fs.shape[2], ft.shape[2]), min(fs.shape[3], ft.shape[3])
    if fs.shape[2:] != (h, w):
        fs = F.adaptive_avg_pool2d(fs, (h, w))
    if ft.shape[2:] != (h, w):
        ft = F.adaptive_avg_pool2d(ft, (h, w))
    return fs, ft


@torch.no_grad()
def build_checked(method: str, adapter: nn.Module, s: FeatureSpec, want: tuple[int, ...]) -> nn.Module:
    """`adapter`, after checking that a dummy student feature comes out with shape `want`."""
    was = adapter.training
    adapter.eval()
    got = tuple(adapter(torch.zeros(2, *s.shape)).shape[1:])
    adapter.train(was)
    if got != tuple(want):
        raise KDConfigError(f"{method}: adapter maps student {s.describe()} to (N,{','.join(map(str, got))}), "
                            f"not the teacher's (N,{','.join(map(str, want))})")
    return adapter
