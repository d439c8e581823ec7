"""Precision / recall / density / coverage of each fake set a student trains on (issue 29: the
metrics "before and after" each lever: raw draws, after cDR-RS, after the rho filter / relabelling,
a pool at another latent scale), beside the GAN stage's figures of its own fresh samples.

The same measurement as the GAN stage (`gan.quality.manifold_quality`: teacher features, k = 5,
per stratum vs the held-out reals, mean over strata), on a seeded sample of at most `CAP` fakes per
stratum read from the fake set's committed Parquet files, so a large M stays seconds in the driver
and a cached run recomputes the same numbers. Computed only from artifacts: no cache key changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CAP = 1000  # fakes per stratum: above it the four metrics barely move, the cost grows with M
NAMES = ("precision", "recall", "density", "coverage")
KEYS = tuple(f"fake_{n}" for n in NAMES)  # results.json, per ablation row


def capped(strata: np.ndarray, cap: int = CAP, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `cap` rows of each stratum (a seeded pick: the same rows every run)."""
    rng = np.random.default_rng(seed)
    picks = [np.zeros(0, np.int64)]
    for c in np.unique(strata):
        idx = np.flatnonzero(strata == c)
        picks.append(idx if len(idx) <= cap else rng.choice(idx, cap, replace=False))
    return np.sort(np.concatenate(picks))


def fake_set_quality(teacher: Any, images_u8: np.ndarray, labels: np.ndarray, held: Any, space: Any,
                     held_feats: np.ndarray | None = None) -> dict:
    """`fake_precision` ... `fake_coverage`: means over strata of the fakes (grouped by `labels`)
    against `held`'s reals of the same stratum; {} without held-out images or any value.
    `held_feats`: the teacher features of `held`'s images, if already embedded."""
    import torch

    from rayflow.gan.quality import manifold_quality

    if held is None or not len(held) or not len(labels):
        return {}
    q = manifold_quality(teacher, torch.as_tensor(images_u8), torch.as_tensor(labels), held.images,
                         held.labels, space, real_feats=held_feats)
    return {f"fake_{n}": float(q[n]) for n in NAMES if q[n] is not None}


def view_quality(teacher: Any, rows: dict, held: Any, space: Any, *, orig_labels: bool, cap: int = CAP,
                 seed: int = 0, held_feats: np.ndarray | None = None) -> dict:
    """`fake_set_quality` of a view's rows (`stages.synth.view_files`), grouped by the label the
    student trains on: the generator's conditioning label (`orig_label`) when `orig_labels`, else
    the view's final label (the teacher's, if relabelled); at most `cap` fakes per stratum."""
    from rayflow.synth.view import read_view

    if held is None or not len(held):
        return {}
    labels = np.asarray(rows["orig_label"] if orig_labels else rows["label"])
    pick = capped(space.strata_of(labels), cap, seed)
    if not len(pick):
        return {}
    fs = read_view(np.asarray(rows["file"])[pick], np.asarray(rows["sample_id"])[pick], labels[pick])
    return fake_set_quality(teacher, fs.images, fs.labels, held, space, held_feats)


def annotate(ablation_rows: list[dict], fakes: dict[str, tuple], teacher_dir: Any, held: Any, space: Any) -> None:
    """Adds the four `KEYS` to each ablation row whose variant is in `fakes` (label -> (variant,
    view artifact, the runner that built it)); each (view, label choice) measured once, against
    at most `CAP` held-out reals per stratum embedded once. Nothing without held-out images."""
    import torch

    from rayflow.gan.quality import _embed
    from rayflow.models.io import load_model
    from rayflow.stages.synth import view_files

    if held is None or not len(held):
        return
    teacher, done = load_model(teacher_dir), {}
    held = held.subset(capped(space.strata_of(held.labels), CAP))
    feats = None
    for r in ablation_rows:
        if r["variant"] not in fakes:
            continue
        v, art, runner = fakes[r["variant"]]
        orig = bool(v.orig_labels)
        key = (art.uri, orig or not v.relabel)  # not relabelled: both labels are the conditioning one
        if key not in done:
            feats = _embed(teacher, torch.as_tensor(held.images))[1] if feats is None else feats
            done[key] = view_quality(teacher, view_files(runner, art), held, space, orig_labels=orig,
                                     held_feats=feats)
        r.update(done[key])
