"""Views of a scored pool: "subsampled / filtered at rho / relabelled / first M per class" as a
selection of pool rows, computed from a few columns (no image is read, no net is run).

A pool holds every draw with its cDR-RS outcome, teacher CE and logits, and the filter burn-in
sample, so any (rho, M) is a cheap view of one pool instead of a synth run of its own; a view
selects exactly the rows a filtering synth run over the same draws would keep (tests/test_view.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import torch

from rayflow.filtering import check_rho, keep_mask
from rayflow.labels import LabelSpace, as_space
from rayflow.synth.io import FakeSet, _decode, _header
from rayflow.synth.manifest import Manifest, SynthError

INDEX_COLUMNS = ("sample_id", "orig_label", "accepted", "teacher_ce", "ratio", "teacher_logits")


@dataclass(frozen=True)
class View:
    subsample: bool  # keep only draws cDR-RS accepted
    rho: float | None  # filter: keep teacher CE <= the class's rho-quantile on the burn-in (None: no filter)
    relabel: bool  # the label is the teacher's argmax instead of the conditioning class
    m_per_class: int

    def __post_init__(self) -> None:
        if self.rho is not None:
            try:
                check_rho(self.rho)
            except ValueError as e:
                raise SynthError(f"view: {e}") from None
        if self.m_per_class <= 0:
            raise SynthError(f"a view needs m_per_class > 0, got {self.m_per_class}")


class ViewShortError(SynthError):
    """The pool holds fewer eligible draws than the view asks for (extend the pool)."""

    def __init__(self, short: dict[int, int], need: int, what: str = "class(es)"):
        self.short, self.need = short, need
        have = f"{short[-1]}" if list(short) == [-1] else f"{sorted(short)}: {[short[c] for c in sorted(short)]}"
        super().__init__(f"the pool holds too few samples for {what} {have} of {need}")


def quota(space: LabelSpace, eligible: np.ndarray, view: View) -> np.ndarray:
    """Rows a view takes per stratum. Classes: `m_per_class` each (the paper's per-class filter keeps
    classes balanced). A continuous label under a filter: `m_per_class * strata` in all, shared in
    proportion to what each stratum keeps -- the paper's one global cutoff drops more where the
    teacher disagrees with the GAN, and a stratum it empties must not hold up the view (largest
    remainders, so the total is exact). Raises ViewShortError when the eligible draws fall short."""
    S, m = space.num_strata, view.m_per_class
    eligible = np.asarray(eligible, np.int64)
    if not space.continuous or view.rho is None or view.rho >= 1.0:
        short = {c: int(eligible[c]) for c in range(S) if eligible[c] < m}
        if short:
            raise ViewShortError(short, m, "class(es)" if not space.continuous else "label stratum/strata")
        return np.full(S, m, np.int64)
    total, have = m * S, int(eligible.sum())
    if have < total:
        raise ViewShortError({-1: have}, total, "all label strata together after the global filter:")
    share = eligible * (total / have)
    q = np.floor(share).astype(np.int64)
    q[np.argsort(-(share - q), kind="stable")[:total - int(q.sum())]] += 1
    return np.minimum(q, eligible)


def view_cutoffs(burnin: dict, view: View, num_classes: LabelSpace | int) -> np.ndarray | None:
    """Per-stratum cutoffs of `view` from the pool's filter burn-in sample: the rho-quantile of the first
    `filter_burnin` (accepted, when subsampling) burn-in errors of each class (or of all strata at once,
    for a continuous label), as a filtering run fixes them (exactly so when the view subsamples as its
    pool does; the pipeline never asks otherwise)."""
    if view.rho is None or view.rho >= 1.0:  # rho = 1 keeps everything: no cutoff at all
        return None
    ces, accs = burnin["filter_ce"], burnin["filter_accepted"]
    need = int(burnin["filter_need"])
    losses = []
    for ce, acc in zip(ces, accs):
        ce = np.asarray(ce, np.float32)
        losses.append((ce[np.asarray(acc, bool)] if view.subsample else ce)[:need])
    return as_space(num_classes).cutoffs(losses, view.rho)


def pool_index(shard_dirs: list[str | Path]) -> dict[str, np.ndarray]:
    """The view-relevant columns of every draw of a pool (its segments' shard dirs), in id order."""
    parts = []
    for d in shard_dirs:
        man = Manifest.load(d)
        space = man.space
        for _, rec in sorted(man.records.items()):
            t = pq.read_table(Path(d) / rec["file"], columns=list(INDEX_COLUMNS))  # no images read
            cols = {k: t.column(k).to_numpy(zero_copy_only=False) for k in INDEX_COLUMNS[:-1]}
            logits = t.column("teacher_logits").combine_chunks().values.to_numpy(zero_copy_only=False)
            cols["teacher_pred"] = space.teacher_label(torch.from_numpy(np.array(logits.reshape(t.num_rows, -1)))).numpy()
            cols["stratum"] = space.strata_of(cols["orig_label"])
            cols["file"] = np.full(len(cols["sample_id"]), str(Path(d) / rec["file"]), dtype=object)
            parts.append(cols)
    if not parts:
        raise SynthError("the pool holds no shards")
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(out["sample_id"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def _eligible(index: dict[str, np.ndarray], burnin: dict, view: View, space: LabelSpace) -> np.ndarray:
    ok = index["accepted"].copy() if view.subsample else np.ones(len(index["sample_id"]), bool)
    cut = view_cutoffs(burnin, view, space)
    if cut is not None:
        ok &= keep_mask(index["teacher_ce"], index["stratum"], cut)
    return ok


def select(index: dict[str, np.ndarray], burnin: dict, view: View, num_classes: LabelSpace | int
           ) -> dict[str, np.ndarray]:
    """The view's rows: per conditioning stratum (class) its `quota` of eligible draws, the first by
    sample id. -> {sample_id, label, orig_label, file}; raises ViewShortError when the pool has too few."""
    space = as_space(num_classes)
    ok = _eligible(index, burnin, view, space)
    per = [np.flatnonzero(ok & (index["stratum"] == c)) for c in range(space.num_strata)]
    q = quota(space, np.array([len(r) for r in per]), view)
    r = np.sort(np.concatenate([rows[:n] for rows, n in zip(per, q)]))
    label = index["teacher_pred"][r] if view.relabel else index["orig_label"][r]
    return {"sample_id": index["sample_id"][r], "label": label.astype(space.np_dtype),
            "orig_label": index["orig_label"][r].astype(space.np_dtype), "file": index["file"][r]}


def eligible_per_class(index: dict[str, np.ndarray], burnin: dict, view: View, num_classes: LabelSpace | int
                       ) -> list[int]:
    space = as_space(num_classes)
    ok = _eligible(index, burnin, view, space)
    return np.bincount(index["stratum"][ok], minlength=space.num_strata).astype(int).tolist()


def read_view(files: np.ndarray, sample_ids: np.ndarray, labels: np.ndarray) -> FakeSet:
    """The selected rows as numpy arrays (images, final labels, conditioning labels, teacher logits,
    ratio, CE), in sample-id order."""
    order = np.argsort(sample_ids, kind="stable")
    files, sample_ids, labels = np.asarray(files)[order], np.asarray(sample_ids)[order], np.asarray(labels)[order]
    parts = []
    for f in dict.fromkeys(files.tolist()):
        want = sample_ids[files == f]
        t = pq.read_table(f, columns=["sample_id", "image", "orig_label", "teacher_logits", "ratio", "teacher_ce"])
        cols = _decode(t, tuple(_header(t.schema)["image_shape"]))
        pos = np.searchsorted(cols["sample_id"], want)
        parts.append({k: v[pos] for k, v in cols.items()})
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return FakeSet(cat["image"], labels, cat["orig_label"], cat["teacher_logits"],
                   cat["ratio"], cat["teacher_ce"])
