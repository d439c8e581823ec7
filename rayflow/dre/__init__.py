"""cDR-RS: conditional density-ratio estimation on frozen features + per-label rejection sampling.

Plain PyTorch / NumPy (no Ray imports).
"""

from rayflow.dre.ratio_net import RatioMLP, build_ratio_net
from rayflow.dre.rejection import RejectionSampler, estimate_max
from rayflow.dre.sp_loss import sp_loss
from rayflow.dre.train import ratio_scores, train_ratio_net

__all__ = [
    "RatioMLP",
    "build_ratio_net",
    "sp_loss",
    "train_ratio_net",
    "ratio_scores",
    "RejectionSampler",
    "estimate_max",
]
