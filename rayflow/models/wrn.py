"""Wide ResNets (Zagoruyko & Komodakis 2016), CIFAR variant as in RepDistiller.

Pre-activation blocks, depth 6n+4, widths 16k/32k/64k; no dropout (the KD
recipes we follow train without it).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .base import FeatureNet, kaiming_init, register


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        # a projection shortcut sees the pre-activated input, identity sees the raw one
        skip = x if self.shortcut is None else self.shortcut(o)
        out = self.conv2(F.relu(self.bn2(self.conv1(o))))
        return out + skip


class WideResNet(FeatureNet):
    def __init__(self, in_channels, depth, widen, num_outputs):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"wide resnet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        groups, prev = [], widths[0]
        for w, s in zip(widths[1:], (1, 2, 2)):
            groups.append(nn.Sequential(PreActBlock(prev, w, s), *[PreActBlock(w, w, 1) for _ in range(n - 1)]))
            prev = w
        self.groups = nn.ModuleList(groups)
        self.bn = nn.BatchNorm2d(prev)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = prev
        self.head = nn.Linear(prev, num_outputs)
        kaiming_init(self)

    def features(self, x):
        return self.staged_features(x, self.groups, tail=lambda h: F.relu(self.bn(h)))


def _wrn(depth, widen):
    def build(in_channels, image_size, num_outputs):
        return WideResNet(in_channels, depth, widen, num_outputs)

    return build


for _d, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    register(f"wrn_{_d}_{_k}")(_wrn(_d, _k))
