"""Small CIFAR VGGs with BatchNorm (RepDistiller's vgg8/11/13).

Five conv blocks of at most 512 channels; the first four are followed by a
ceil-mode 2x2 max pool (so 8x8 inputs never pool to zero size) and the last by
global average pooling, which keeps the head 512 -> C at any input size.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import FeatureNet, conv_bn_relu, kaiming_init, register

_CFG = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


class VGG(FeatureNet):
    def __init__(self, in_channels, cfg, num_outputs):
        super().__init__()
        blocks, prev = [], in_channels
        for i, widths in enumerate(cfg):
            layers = []
            for w in widths:
                layers.append(conv_bn_relu(prev, w))
                prev = w
            if i < len(cfg) - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = prev
        self.head = nn.Linear(prev, num_outputs)
        kaiming_init(self)

    def features(self, x):
        feats = []
        for b in self.blocks:
            x = b(x)
            feats.append(x)
        feats.append(torch.flatten(self.pool(x), 1))
        return feats


def _vgg(name):
    def build(in_channels, image_size, num_outputs):
        return VGG(in_channels, _CFG[name], num_outputs)

    return build


for _name in _CFG:
    register(_name)(_vgg(_name))
