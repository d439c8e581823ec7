"""The ablation as data: which cGAN-KD students a run trains, each a typed variant.

A variant names the processing its fake set asks for (cDR-RS subsampling, rho-filtering,
relabelling by the teacher) and how the student uses it (conditioning vs final labels, + KD term).
What a run can honour (`dre.enabled`, `filter.enabled`, `filter.relabel`, a ratio net that worked)
turns the request into an effective setting; a variant whose effective setting repeats an earlier
one is dropped (e.g. "+ filtering" when filtering is off).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rayflow.config import PipelineConfig
from rayflow.stages.graph import Node


@dataclass(frozen=True)
class Variant:
    label: str
    subsample: bool = False  # cDR-RS rejection sampling with the density-ratio net
    filter: bool = False  # drop fakes whose teacher loss is above the rho-quantile
    relabel: bool = False  # replace conditioning labels by the teacher's
    orig_labels: bool = True  # the student trains on the conditioning labels
    kd: bool = False  # + the KD term on the stored teacher logits

    def fake_set(self) -> Node:
        """The view of the scored pool this variant's students train on."""
        return Node.of("view", subsample=self.subsample, filter=self.filter, relabel=self.relabel)

    def student(self, seed: int, method: str | None = None) -> Node:
        """`method`: a kd_table method added to this (KD) variant's loss, "cGAN-KD + method" (the
        parameter exists only when set: the variant's own node keeps its key)."""
        extra = {} if method is None else {"method": method}
        return Node.of("cgankd", seed=seed, subsample=self.subsample, filter=self.filter, relabel=self.relabel,
                       orig_labels=self.orig_labels, kd=self.kd, **extra)

    def _same_training(self) -> tuple:
        # with conditioning labels, relabelling the stored labels changes nothing the student reads
        return self.subsample, self.filter, None if self.orig_labels else self.relabel, self.orig_labels, self.kd


CGAN_KD = Variant("cGAN-KD: + KD term on soft labels", subsample=True, filter=True, relabel=True,
                  orig_labels=False, kd=True)
ABLATION: tuple[Variant, ...] = (
    Variant("fake, no processing (conditioning labels)"),
    Variant("+ cDR-RS subsampling", subsample=True),
    Variant("+ filtering (rho-quantile)", subsample=True, filter=True, relabel=True),
    Variant("+ relabelling by the teacher", subsample=True, filter=True, relabel=True, orig_labels=False),
    CGAN_KD,
)


def effective(v: Variant, cfg: PipelineConfig, dre_ok: bool = True) -> Variant:
    """`v` as this run can build it."""
    return replace(v, subsample=v.subsample and cfg.dre.enabled and dre_ok,
                   filter=v.filter and cfg.filter.enabled, relabel=v.relabel and cfg.filter.relabel)


def plan(cfg: PipelineConfig, dre_ok: bool = True, variants: tuple[Variant, ...] | None = None) -> list[Variant]:
    """The effective variants to train, in order, without repeats (labels kept from the request);
    by default the whole ablation, or only cGAN-KD itself when `cfg.ablation` is off."""
    out, seen = [], set()
    for v in variants if variants is not None else ABLATION if cfg.ablation else (CGAN_KD,):
        e = effective(v, cfg, dre_ok)
        if e._same_training() not in seen:
            seen.add(e._same_training())
            out.append(e)
    return out


def fake_set_name(v: Variant) -> str:
    """A short name for a variant's fake set in results and the report."""
    if v.filter or v.relabel:
        return "full"
    return "dre" if v.subsample else "raw"
