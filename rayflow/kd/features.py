"""Which feature tensors a method compares, decided once from a dummy forward.

Teacher and student differ in family, depth, width and spatial size, so every method picks its
layers here against the real shapes and refuses a pair it cannot compare with one message that
names the method, the model and what is missing, instead of failing on a shape inside a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from rayflow.kd.errors import KDConfigError


@dataclass(frozen=True)
class FeatureSpec:
    """One entry of ``feats`` without the batch dim: (C, H, W) for a map, (D,) for a vector."""

    shape: tuple[int, ...]
    nonneg: bool = False  # every probed value >= 0 (a post-ReLU feature)

    @property
    def is_map(self) -> bool:
        return len(self.shape) == 3

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def describe(self) -> str:
        return "(N," + ",".join(map(str, self.shape)) + ")"

    @staticmethod
    def of(x) -> "FeatureSpec":
        """From a feature tensor, a FeatureSpec, or a shape that includes the batch dim."""
        if isinstance(x, FeatureSpec):
            return x
        if isinstance(x, torch.Tensor):
            return FeatureSpec(tuple(x.shape[1:]), bool((x >= 0).all()))
        return FeatureSpec(tuple(int(s) for s in x)[1:])


@dataclass(frozen=True)
class Side:
    """One model as a method sees it: its name for messages and its feature specs."""

    role: str  # "student" | "teacher"
    name: str
    specs: tuple[FeatureSpec, ...]

    @staticmethod
    def make(role: str, name: str, feats: Sequence) -> "Side":
        return Side(role, name, tuple(FeatureSpec.of(f) for f in feats))

    @property
    def label(self) -> str:
        return f"{self.role} {self.name!r}"

    def listing(self) -> str:
        return "[" + ", ".join(f"{i}: {s.describe()}" for i, s in enumerate(self.specs)) + "]"

    @property
    def maps(self) -> list[int]:
        return [i for i, s in enumerate(self.specs) if s.is_map]

    def index(self, method: str, i: int) -> int:
        """`i` as a non-negative index, or one message naming what exists."""
        n = len(self.specs)
        if not -n <= i < n:
            raise KDConfigError(f"{method}: layer {i} does not exist in {self.label}, whose features are "
                                f"{self.listing()}")
        return i % n

    def has_map(self, i: int) -> bool:
        return -len(self.specs) <= i < len(self.specs) and self.specs[i].is_map


@torch.no_grad()
def probe_features(model: nn.Module, input_shape: Sequence[int], batch: int = 2) -> list[FeatureSpec]:
    """One eval-mode forward on random inputs of `input_shape` (C, H, W); the model's train/eval
    mode and BatchNorm statistics are left as they were."""
    m = model.module if hasattr(model, "module") else model
    try:
        p = next(m.parameters())
        device, dtype = p.device, p.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    was = m.training
    m.eval()
    try:
        _, feats = m(x, return_features=True)
    finally:
        m.train(was)
    return [FeatureSpec.of(f) for f in feats]


def pick_one(method: str, side: Side, layer: int | None, default: int, fallback: int | None = None) -> int:
    """The configured layer, else `default` if it is a feature map there, else `fallback`."""
    if layer is not None:
        return side.index(method, layer)
    if fallback is not None and not side.has_map(default):
        return side.index(method, fallback)
    return side.index(method, default)


def pair_layers(method: str, s: Side, t: Side, s_layers: list[int] | None, t_layers: list[int] | None,
                vectors: bool) -> list[tuple[int, int]]:
    """(student, teacher) layer pairs for the multi-layer methods (AT, VID).

    Default: every feature map but the first (RepDistiller's feat[1:-1]) of each model, the last k
    of each paired (k = the shorter list), so the deepest stages meet. `vectors`: when a model has
    no feature map, fall back to the embeddings (-1, -1) instead of refusing.
    """
    if s_layers is None and t_layers is None:
        missing = [side for side in (s, t) if not side.maps]
        if missing:
            if vectors:
                return [(s.index(method, -1), t.index(method, -1))]
            side = missing[0]
            raise KDConfigError(f"{method}: needs (N,C,H,W) feature maps on both models, but {side.label} "
                                f"has only vector features {side.listing()}; drop {method} for this pair or "
                                f"use a convolutional {side.role}")
        sm = s.maps[1:] if len(s.maps) > 1 else s.maps
        tm = t.maps[1:] if len(t.maps) > 1 else t.maps
        k = min(len(sm), len(tm))
        return list(zip(sm[-k:], tm[-k:]))
    s_layers = t_layers if s_layers is None else s_layers
    t_layers = s_layers if t_layers is None else t_layers
    if len(s_layers) != len(t_layers) or not s_layers:
        raise KDConfigError(f"{method}: student_layers {s_layers} and teacher_layers {t_layers} must be "
                            "non-empty lists of the same length")
    pairs = [(s.index(method, i), t.index(method, j)) for i, j in zip(s_layers, t_layers)]
    for i, j in pairs:
        check_kinds(method, s, i, t, j, vectors)
    return pairs


def check_kinds(method: str, s: Side, i: int, t: Side, j: int, vectors: bool) -> None:
    """Both layers maps, or (if `vectors`) both vectors; else one message saying which is which."""
    si, tj = s.specs[i], t.specs[j]
    if si.is_map and tj.is_map:
        return
    if not vectors:
        side, k = (s, i) if not si.is_map else (t, j)
        raise KDConfigError(f"{method}: needs (N,C,H,W) feature maps, but layer {k} of {side.label} is "
                            f"{side.specs[k].describe()} (features {side.listing()})")
    if si.is_map != tj.is_map:
        raise KDConfigError(f"{method}: cannot regress between a feature map and a vector: layer {i} of "
                            f"{s.label} is {si.describe()}, layer {j} of {t.label} is {tj.describe()}; pick "
                            "two maps or two vectors (e.g. -1 and -1, the embeddings)")
