"""Method name -> (config model, builder). The one place that knows every method.

``build_method`` turns a method config and both models' feature specs (from ``probe_features`` or
the tensors of one forward) into a loss module, refusing incompatible pairs with one message.
"""

from __future__ import annotations

from typing import Callable, Sequence

from pydantic import BaseModel

from rayflow.kd.attention import build_at
from rayflow.kd.base import KDLoss
from rayflow.kd.config import METHOD_CONFIGS
from rayflow.kd.crd import build_crd
from rayflow.kd.errors import KNOWN_METHODS, check_method_name
from rayflow.kd.features import Side
from rayflow.kd.hint import build_fitnet
from rayflow.kd.logits import build_blkd
from rayflow.kd.relational import build_pkt, build_rkd, build_sp
from rayflow.kd.vid import build_vid
from rayflow.train.tasks import Task

BUILDERS: dict[str, Callable[..., KDLoss]] = {
    "blkd": build_blkd, "fitnet": build_fitnet, "at": build_at, "sp": build_sp, "vid": build_vid,
    "rkd": build_rkd, "pkt": build_pkt, "crd": build_crd,
}
assert tuple(BUILDERS) == KNOWN_METHODS == tuple(METHOD_CONFIGS)


def list_methods() -> list[str]:
    return list(KNOWN_METHODS)


def method_config(name: str, **fields) -> BaseModel:
    """The validated config of method `name` (defaults + `fields`); sskd/takd/unknown names raise."""
    return METHOD_CONFIGS[check_method_name(name)](**fields)


def build_method(cfg: BaseModel | str, student_feats: Sequence, teacher_feats: Sequence, *, task: Task,
                 num_samples: int | None = None, temperature: float = 4.0, student_name: str = "student",
                 teacher_name: str = "teacher") -> KDLoss:
    """One loss module from `cfg` (a method config or bare name) and each model's feats: FeatureSpecs,
    the feature tensors of one forward, or their shapes with the batch dim."""
    if isinstance(cfg, str):
        cfg = method_config(cfg)
    name = check_method_name(cfg.method)
    s = Side.make("student", student_name, student_feats)
    t = Side.make("teacher", teacher_name, teacher_feats)
    kw = {"temperature": temperature} if name == "blkd" else {}
    return BUILDERS[name](cfg, s, t, task=task, num_samples=num_samples, **kw)
