"""A user's own teacher, as a user outside rayflow writes it: a plain-torch package in a temp dir
(outside the working dir and PYTHONPATH), trained by plain torch on the digits at its own input
size (12 px, [0, 1] then mean/std), saved as a state_dict and as safetensors.

Import it into a test module (`from user_teacher import user_teacher  # noqa: F401`).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

PKG = "byot_teacher"  # the user's package name (unique: nothing else on sys.path has it)
FACTORY = f"{PKG}.net:build"
SIZE, MEAN, STD = 12, 0.3, 0.35

SOURCE = '''
"""The user's teacher: its own nn.Module, no rayflow in sight."""
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes=10, width=16, in_ch=1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(4 * width, 32), nn.ReLU())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.hidden(self.body(x)))


def build(num_classes=10, width=16, in_ch=1):
    return TinyNet(num_classes, width, in_ch)


def build_fixed(num_classes=10):
    """A head sized for 12 px inputs exactly."""
    return nn.Sequential(nn.Flatten(), nn.Linear(144, 16), nn.ReLU(), nn.Linear(16, num_classes))
'''


@dataclass
class UserTeacher:
    root: Path  # the dir holding the package
    pkg: Path  # the package dir (teacher.checkpoint.modules)
    pt: Path  # torch.save(state_dict)
    safetensors: Path
    net: torch.nn.Module  # the trained module, eval mode

    def checkpoint(self, weights: Path | None = None, **extra) -> dict:
        return {"factory": FACTORY, "kwargs": {"width": 16}, "weights": str(weights or self.pt),
                "modules": [str(self.pkg)], "input_size": SIZE, "value_range": [0, 1],
                "normalize": {"mean": [MEAN], "std": [STD]}, **extra}

    def sets(self, **extra) -> list[str]:
        """--set items giving the checkpoint, one field each (an error names the short one at fault)."""
        import json

        return [f"teacher.checkpoint.{k}={json.dumps(v)}" for k, v in self.checkpoint(**extra).items()]


def preprocess(x: torch.Tensor) -> torch.Tensor:
    """What the user's own pipeline does: [0, 1] at 12 px, then mean/std (from rayflow's [-1, 1])."""
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    return ((x + 1) / 2 - MEAN) / STD


def write_package(root: Path) -> Path:
    pkg = root / PKG
    pkg.mkdir(parents=True)
    # says where it was imported from: a Ray worker's copy comes through py_modules, not this dir
    (pkg / "__init__.py").write_text("print('byot_teacher imported from', __file__, flush=True)\n")
    (pkg / "net.py").write_text(textwrap.dedent(SOURCE))
    return pkg


def _import_net(root: Path):
    import importlib
    import sys

    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(f"{PKG}.net")
    finally:
        sys.path.remove(str(root))


def _save(ut_root: Path, pkg: Path, net: torch.nn.Module) -> UserTeacher:
    from safetensors.torch import save_file

    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    torch.save(state, ut_root / "teacher.pt")
    save_file(state, str(ut_root / "teacher.safetensors"))
    return UserTeacher(ut_root, pkg, ut_root / "teacher.pt", ut_root / "teacher.safetensors", net.eval())


def untrained(root: Path) -> UserTeacher:
    """The package and an untrained network's weights (for checks that never get to use them)."""
    pkg = write_package(root)
    torch.manual_seed(0)
    return _save(root, pkg, _import_net(root).build(width=16))


@pytest.fixture(scope="session")
def user_teacher(tmp_path_factory, digits):
    """Trained for a few seconds (150 Adam steps) on the digits train split, saved both ways."""
    root = tmp_path_factory.mktemp("user_code")
    pkg = write_package(root)
    torch.manual_seed(0)  # before the network's init: the fixture is the same whichever tests ran before
    net = _import_net(root).build(width=16)
    x = preprocess(torch.tensor(digits.train.images).float() / 127.5 - 1)
    y = torch.tensor(digits.train.labels).long()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(150):
        idx = torch.randint(0, len(x), (64,))
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return _save(root, pkg, net)
