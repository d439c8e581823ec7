"""MobileNetV2, CIFAR variant as in RepDistiller (``width_mult=0.5`` is its "mobile_half").

Total stride 16 (stride-2 stem and three stride-2 groups) instead of ImageNet's 32,
so 32x32 inputs end at 2x2 and 8x8 ones at 1x1.
"""
from __future__ import annotations

from torch import nn

from .base import FeatureNet, conv_bn_relu, kaiming_init, register

# expansion t, channels c, blocks n, first stride s
_SETTING = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
# group indices closing each feature stage (RepDistiller's f1..f4)
_STAGES = [(0, 1), (2,), (3, 4), (5, 6)]


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            conv_bn_relu(cin, hidden, kernel=1),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_res else out


class MobileNetV2(FeatureNet):
    def __init__(self, in_channels, width_mult, num_outputs):
        super().__init__()
        prev = int(32 * width_mult)
        self.stem = conv_bn_relu(in_channels, prev, stride=2)
        groups = []
        for t, c, n, s in _SETTING:
            c = int(c * width_mult)
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(prev, c, s if i == 0 else 1, t))
                prev = c
            groups.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(nn.Sequential(*[groups[i] for i in idx]) for idx in _STAGES)
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.last_conv = conv_bn_relu(prev, last, kernel=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = last
        self.head = nn.Linear(last, num_outputs)
        kaiming_init(self)

    def features(self, x):
        return self.staged_features(x, self.stages, tail=self.last_conv)


@register("mobilenetv2")
def build_mobilenetv2(in_channels, image_size, num_outputs, width_mult=0.5):
    if not width_mult > 0:
        raise ValueError(f"model 'mobilenetv2': width_mult must be > 0, got {width_mult}")
    if int(16 * width_mult) < 1:
        raise ValueError(f"model 'mobilenetv2': width_mult {width_mult} leaves a group with 0 channels")
    return MobileNetV2(in_channels, float(width_mult), num_outputs)
