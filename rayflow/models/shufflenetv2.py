"""ShuffleNetV2, CIFAR variant as in RepDistiller (1x1 stem, no stem pooling;
``net_size=1.0`` is its "ShuffleV2" student)."""
from __future__ import annotations

import torch
from torch import nn

from .base import FeatureNet, register

# net_size -> (stage widths + final 1x1 width, blocks per stage after the down block)
_CONFIGS = {
    0.2: ((40, 80, 160, 512), (3, 3, 3)),
    0.3: ((40, 80, 160, 512), (3, 7, 3)),
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1.0: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2.0: ((224, 488, 976, 2048), (3, 7, 3)),
}


def _shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _pw(cin, cout, relu=True):
    layers = [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def _dw(c, stride):
    return nn.Sequential(nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), nn.BatchNorm2d(c))


class ShuffleBlock(nn.Module):
    """Half the channels pass through untouched; the other half go pw-dw-pw."""

    def __init__(self, c: int):
        super().__init__()
        self.half = c // 2
        h = c - self.half
        self.branch = nn.Sequential(_pw(h, h), _dw(h, 1), _pw(h, h))

    def forward(self, x):
        x1, x2 = x[:, : self.half], x[:, self.half :]
        return _shuffle(torch.cat([x1, self.branch(x2)], 1))


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.left = nn.Sequential(_dw(cin, 2), _pw(cin, mid))
        self.right = nn.Sequential(_pw(cin, mid), _dw(mid, 2), _pw(mid, mid))

    def forward(self, x):
        return _shuffle(torch.cat([self.left(x), self.right(x)], 1))


class ShuffleNetV2(FeatureNet):
    def __init__(self, in_channels, net_size, num_outputs):
        super().__init__()
        widths, blocks = _CONFIGS[net_size]
        self.stem = _pw(in_channels, 24)
        stages, prev = [], 24
        for w, n in zip(widths[:3], blocks):
            stages.append(nn.Sequential(DownBlock(prev, w), *[ShuffleBlock(w) for _ in range(n)]))
            prev = w
        self.stages = nn.ModuleList(stages)
        self.last_conv = _pw(prev, widths[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[3]
        self.head = nn.Linear(widths[3], num_outputs)

    def features(self, x):
        return self.staged_features(x, self.stages, tail=self.last_conv)


@register("shufflenetv2")
def build_shufflenetv2(in_channels, image_size, num_outputs, net_size=1.0):
    if float(net_size) not in _CONFIGS:
        raise ValueError(f"model 'shufflenetv2': net_size must be one of {sorted(_CONFIGS)}, got {net_size}")
    return ShuffleNetV2(in_channels, float(net_size), num_outputs)
