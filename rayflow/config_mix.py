"""The cGAN-KD student's levers: `MixConfig` (MixUp / CutMix of a student's batches, each mixed view
labelled by the teacher online) and `SelectFakesConfig` (fake batches drawn from the fakes the
current student finds most useful).

One model for both users of `rayflow/train/mix.py`: the function-matching baseline
(`function_matching`, mixing on the real images) and the cGAN-KD mixing lever (`student.mix`,
default off, mixing real and fake images). Split from rayflow/config.py to keep files small.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rayflow.config_base import _Strict

LeverName = Literal["mix", "select_fakes", "latent_scale"]  # a lever with an ablation row (`lever_rows`)


class MixConfig(_Strict):
    kind: Literal["none", "mixup", "cutmix", "both"] = Field("none", description=(
        "none; mixup (a convex combination of two images); cutmix (a box of one pasted into the other); "
        "both: mixup or cutmix, chosen per batch with probability 0.5"))
    alpha: float = Field(1.0, gt=0, description="lambda ~ Beta(alpha, alpha): the share of the first image "
                                                "(1.0: uniform)")

    @property
    def on(self) -> bool:
        return self.kind != "none"


class FunctionMatchingConfig(MixConfig):
    """`function_matching`: the baseline mixes by default (MixUp or CutMix per batch)."""

    kind: Literal["none", "mixup", "cutmix", "both"] = Field(
        "both", description=MixConfig.model_fields["kind"].description)


class SelectFakesConfig(_Strict):
    """`student.select_fakes` (default off): the cGAN-KD student draws its fake batches from the top
    `share` of the fakes by usefulness, re-scored against the current student every `every` steps
    inside the training worker (rayflow/train/select_fakes.py). Why: samples near the teacher's
    decision boundary, or where the student still disagrees, teach most (entropy-guided selection,
    arXiv 2502.15588), while the rho filter keeps the fakes the teacher finds easy."""

    by: Literal["none", "entropy", "kl"] = Field("none", description=(
        "none; entropy: the teacher's entropy on the fake (from its stored logits, no student pass); "
        "kl: KL(teacher || student) at the KD temperature, the current student's disagreement"))
    share: float = Field(0.5, gt=0, le=1, description="share of the scored fakes the batches are drawn from")
    every: int = Field(50, gt=0, description="steps between re-scorings")
    score_size: int = Field(4096, gt=0, description="fakes scored per re-scoring (a random subset, for cost; "
                                                    "all when the set is smaller)")

    @property
    def on(self) -> bool:
        return self.by != "none"
