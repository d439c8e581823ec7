"""CIFAR ResNets (He et al. 2016, as in RepDistiller) and the prototype's wide teacher.

Stride-2 stages use 3x3 convs with padding 1 and the head sits on adaptive
average pooling, so the same nets run at 8x8 (sklearn digits) up to 32x32.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .base import FeatureNet, conv_bn_relu, kaiming_init, register


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(FeatureNet):
    """Stem conv, then one group of BasicBlocks per entry of ``blocks``.

    ``widths[0]`` is the stem width and ``widths[i+1]`` the width of group i;
    ``strides`` gives each group's first-block stride.
    """

    def __init__(self, in_channels, widths, blocks, strides, num_outputs):
        super().__init__()
        assert len(widths) == len(blocks) + 1 == len(strides) + 1
        self.stem = conv_bn_relu(in_channels, widths[0])
        groups, prev = [], widths[0]
        for w, n, s in zip(widths[1:], blocks, strides):
            layers = [BasicBlock(prev, w, s)] + [BasicBlock(w, w) for _ in range(n - 1)]
            groups.append(nn.Sequential(*layers))
            prev = w
        self.groups = nn.ModuleList(groups)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = prev
        self.head = nn.Linear(prev, num_outputs)
        kaiming_init(self)

    def features(self, x):
        return self.staged_features(x, self.groups)


def _cifar_resnet(depth: int, widths: tuple[int, ...]):
    """Depth 6n+2: three groups of n blocks at strides 1/2/2."""
    assert (depth - 2) % 6 == 0
    n = (depth - 2) // 6

    def build(in_channels, image_size, num_outputs):
        return ResNet(in_channels, widths, (n, n, n), (1, 2, 2), num_outputs)

    build.__doc__ = f"CIFAR ResNet-{depth}, widths {widths}."
    return build


for _d in (8, 14, 20, 32, 56, 110):
    register(f"resnet{_d}")(_cifar_resnet(_d, (16, 16, 32, 64)))
for _d in (8, 32):
    register(f"resnet{_d}x4")(_cifar_resnet(_d, (32, 64, 128, 256)))


@register("resnet_wide")
def build_resnet_wide(in_channels, image_size, num_outputs, widths=(24, 48, 96, 192)):
    """The prototype teacher: 3x3 stem, then one stride-2 BasicBlock per further width
    (~680k params at 1 channel / 10 classes with the default widths)."""
    widths = [int(w) for w in widths]
    if len(widths) < 2:
        raise ValueError("model 'resnet_wide': widths needs a stem width and at least one stage width")
    n_stages = len(widths) - 1
    return ResNet(in_channels, widths, [1] * n_stages, [2] * n_stages, num_outputs)
