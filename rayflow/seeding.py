"""Per-step seeds: every random draw of step k depends only on (seed, rank, k).

Why: a run resumed from a checkpoint at step k then continues bit for bit like the uninterrupted
run, whatever the checkpoint interval, without saving RNG states (each Ray worker has its own,
and only rank 0 writes checkpoints)."""

from __future__ import annotations

import numpy as np


def step_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def reseed_torch(*parts: int) -> None:
    import torch

    torch.manual_seed(step_seed(*parts))
