"""What the error bound reads, taken from a run's artifacts without training any student: the
scored pool's draws (ratio, cDR-RS outcome, teacher error and prediction), the filter burn-in, and the
held-out real images scored by the same ratio net and teacher. The pool's label space (classes, or a
continuous label) says what "error" and "prediction" are: CE and argmax, or |prediction − y| and the
prediction."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rayflow.bound import FakeScores, RealScores
from rayflow.labels import LabelSpace
from rayflow.stages.graph import Node
from rayflow.stages.synth import SHARDS, pool_node

log = logging.getLogger("rayflow")


@dataclass
class BoundInputs:
    fake: FakeScores
    real: RealScores
    burnin: tuple[np.ndarray, np.ndarray]  # (teacher error, stratum) of the filter burn-in draws
    n_real: int
    space: LabelSpace  # what the bound functions take as `num_classes`

    @property
    def num_classes(self) -> int | None:
        return None if self.space.continuous else self.space.num_classes


def burnin_sample(burnin: dict, subsample: bool) -> tuple[np.ndarray, np.ndarray]:
    """The burn-in errors (and their strata) a view's cutoff is the quantile of (see
    synth.view.view_cutoffs)."""
    need = int(burnin["filter_need"])
    loss, labels = [], []
    for c, (ce, acc) in enumerate(zip(burnin["filter_ce"], burnin["filter_accepted"])):
        ce = np.asarray(ce, np.float32)
        ce = (ce[np.asarray(acc, bool)] if subsample else ce)[:need]
        loss.append(ce)
        labels.append(np.full(len(ce), c))
    return np.concatenate(loss), np.concatenate(labels)


def bound_inputs(runner: Any, subsample: bool | None = None) -> BoundInputs:
    """Builds (or finds) the pool, then scores the held-out reals with its ratio net and teacher."""
    from rayflow.stages.supervised import check_heldout
    from rayflow.synth.manifest import Manifest
    from rayflow.synth.udfs import Score
    from rayflow.synth.view import pool_index

    cfg = runner.cfg
    subsample = cfg.dre.enabled if subsample is None else subsample
    check_heldout(runner)
    pool = runner.artifact(pool_node(subsample))
    man = Manifest.load(pool.file(SHARDS))
    burnin, space = man.burnin, man.space
    idx = pool_index([pool.file(SHARDS)])
    ratio = idx["ratio"].astype(np.float64)
    accept_prob = None
    if subsample:
        top = np.asarray(burnin["max_ratio"], np.float64)[idx["stratum"]]
        accept_prob = np.minimum(ratio / top, 1.0)
    fake = FakeScores(idx["orig_label"], ratio if subsample else np.ones_like(ratio), idx["accepted"],
                      idx["teacher_ce"], idx["teacher_pred"], accept_prob)
    held = runner.splits.heldout
    images, labels = torch.from_numpy(held.images), torch.from_numpy(np.asarray(held.labels, space.np_dtype))
    logits = torch.from_numpy(runner.teacher_logits(runner.artifact(Node.of("teacher")), "heldout"))
    if subsample:
        from rayflow.stages.dre import RATIO, features_node

        dre, feats = runner.artifact(Node.of("dre")), runner.artifact(features_node(cfg))
        r = Score(str(feats.path), str(dre.file(RATIO)), num_classes=space, ratio_hidden=tuple(cfg.dre.hidden),
                  batch_size=500).ratios(images, labels)
    else:
        r = np.ones(len(labels), np.float32)
    real = RealScores(held.labels, r, space.teacher_error(logits, labels).numpy(), space.teacher_label(logits).numpy())
    return BoundInputs(fake, real, burnin_sample(burnin, subsample), len(runner.splits.train), space)
