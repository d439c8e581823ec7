"""`MixConfig`: MixUp / CutMix of a student's batches, each mixed view labelled by the teacher online.

One model for both users of `rayflow/train/mix.py`: the function-matching baseline
(`function_matching`, mixing on the real images) and the cGAN-KD mixing lever (`student.mix`,
default off, mixing real and fake images). Split from rayflow/config.py to keep files small.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rayflow.config_base import _Strict


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
