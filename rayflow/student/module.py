"""The student behind the contract a user sees: uint8 NCHW images at the training size in, logits
(classification) or the value in the label's unit (regression) out.

The [-1, 1] scaling the networks were trained on (`rayflow.data.transforms.to_float`) and, for
regression, the map from the normalised [0, 1] output back to the user's unit live inside the
module, so nothing outside it has to know them: the exported program (model.pt2) is this module.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from rayflow.checkpoint import CheckpointError

CONTRACT = "student.json"
PROGRAM = "model.pt2"  # torch.export program: torch.export.load(path).module()(x)
CARD = "MODEL_CARD.md"
PREPROCESSING = "x.float() / 127.5 - 1.0 (uint8 [0, 255] -> float [-1, 1]), applied inside the model"


class StudentModule(nn.Module):
    """`net` (trained on [-1, 1] images) taking uint8 (N, C, H, W) images; for regression the output
    is `lo + span * net(x)[:, 0]`, shape (N,), in the label's unit."""

    def __init__(self, net: nn.Module, regression: bool = False, lo: float = 0.0, span: float = 1.0):
        super().__init__()
        self.net = net.eval()
        self.regression = regression
        self.lo, self.span = float(lo), float(span)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x.float().div(127.5).sub(1.0))  # the op order of to_float: bitwise the same input
        if self.regression:
            return out[:, 0] * self.span + self.lo
        return out


def read_contract(dir_: str | Path) -> dict:
    """student.json (written last, so its presence means the folder is complete), or one line."""
    d = Path(dir_)
    f = d / CONTRACT
    if not f.is_file():
        raise CheckpointError(f"{d} is not a rayflow student folder (no {CONTRACT}; `rayflow distill` writes "
                              "one to <output_dir>/student/)")
    try:
        doc = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f} is corrupt: {e}") from None
    if not isinstance(doc, dict) or doc.get("task") not in ("classification", "regression") or "input" not in doc:
        raise CheckpointError(f"{f} is not a student contract (needs 'task' and 'input')")
    return doc


def wrap(net: nn.Module, contract: dict) -> StudentModule:
    out = contract.get("output", {})
    if contract["task"] == "regression":
        lo, hi = out.get("range", [0.0, 1.0])
        return StudentModule(net, regression=True, lo=lo, span=hi - lo)
    return StudentModule(net)


def load_student(dir_: str | Path) -> StudentModule:
    """The student of `dir_` in eval mode, rebuilt from its safetensors weights (no unpickling):
    call it on uint8 (N, C, H, W) tensors of the size `student.json` names."""
    from rayflow.models.io import load_model

    contract = read_contract(dir_)
    return wrap(load_model(dir_), contract).eval()
