"""Baselines: an MLP on raw pixels and the prototype's small CNN student."""
from __future__ import annotations

import torch
from torch import nn

from .base import FeatureNet, conv_bn_relu, register


class MLP(FeatureNet):
    def __init__(self, in_features: int, hidden: list[int], num_outputs: int):
        super().__init__()
        layers, prev = [], in_features
        for h in hidden:
            layers.append(nn.Sequential(nn.Linear(prev, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)))
            prev = h
        self.layers = nn.ModuleList(layers)
        self.feature_dim = prev
        self.head = nn.Linear(prev, num_outputs)

    def features(self, x):
        out = torch.flatten(x, 1)
        feats = []
        for layer in self.layers:
            out = layer(out)
            feats.append(out)
        return feats or [out]  # hidden=[] -> logistic regression on pixels


@register("mlp")
def build_mlp(in_channels, image_size, num_outputs, hidden=(256,)):
    """The flatten size is the one place image_size must be exact (784-256-10 = 204,042 params)."""
    return MLP(in_channels * image_size**2, [int(h) for h in hidden], num_outputs)


class SmallCNN(FeatureNet):
    """3 x [conv3x3-BN-ReLU-maxpool2]; the adaptive 3x3 pool keeps the head size fixed
    (64*9 -> C) for any input size, so 28x28x1 -> 10 gives the prototype's 44,274 params."""

    def __init__(self, in_channels: int, widths: list[int], num_outputs: int, pool: int = 3):
        super().__init__()
        stages, prev = [], in_channels
        for w in widths:
            stages.append(nn.Sequential(conv_bn_relu(prev, w), nn.MaxPool2d(2, ceil_mode=False)))
            prev = w
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.feature_dim = prev * pool * pool
        self.head = nn.Linear(self.feature_dim, num_outputs)

    def features(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        feats.append(torch.flatten(self.pool(x), 1))
        return feats


@register("cnn_small")
def build_cnn_small(in_channels, image_size, num_outputs, widths=(24, 48, 64)):
    if image_size < 2 ** len(widths):
        raise ValueError(f"model 'cnn_small': image_size {image_size} too small for {len(widths)} pools")
    return SmallCNN(in_channels, [int(w) for w in widths], num_outputs)
