"""Typed settings of the distillation-loss zoo: one pydantic model per method, discriminated on
``method``, and ``KDConfig``, which combines the Hinton term with any number of methods.

Defaults are RepDistiller's (HobbitLong/RepDistiller ``train_student.py`` and
``scripts/run_cifar_distill.sh``), so ``{method: crd}`` alone is the reference CRD setting.
Layer fields index the model's ``feats`` list (negative indices count from the embedding, -1);
``None`` picks the reference layer, see each field's description and docs/kd_methods.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rayflow.kd.errors import KDConfigError, check_method_name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_ONE = "index into the model's feats (-1 = pooled embedding); None: "
_MANY = "indices into the model's feats, paired with the other side's list; None: "


class BLKDConfig(_Strict):
    """Hinton KD named like the others (softened KL; for regression the squared error to the
    teacher's prediction). KDConfig.alpha already weights this term: use one or the other."""

    method: Literal["blkd"] = "blkd"
    weight: float = Field(0.9, ge=0, description="beta (RepDistiller KD: -a 0.9)")
    temperature: float | None = Field(None, gt=0, description="None: KDConfig.temperature")


class FitNetConfig(_Strict):
    method: Literal["fitnet"] = "fitnet"
    weight: float = Field(100.0, ge=0, description="beta (RepDistiller: -b 100)")
    student_layer: int | None = Field(None, description=_ONE + "2 (RepDistiller hint_layer) when both "
                                      "models have a feature map there, else -1 on both sides")
    teacher_layer: int | None = Field(None, description=_ONE + "student_layer if that is set, else the "
                                      "rule of student_layer")
    relu: bool | None = Field(None, description="ReLU after the regressor (RepDistiller ConvReg: yes); "
                                                "None: only when the teacher's hint is non-negative")


class ATConfig(_Strict):
    method: Literal["at"] = "at"
    weight: float = Field(1000.0, ge=0, description="beta (RepDistiller: -b 1000)")
    p: float = Field(2.0, gt=0, description="attention map = mean over channels of |f|^p")
    student_layers: list[int] | None = Field(None, description=_MANY + "every feature map but the first "
                                             "(RepDistiller feat[1:-1]), paired from the deepest")
    teacher_layers: list[int] | None = Field(None, description=_MANY + "as student_layers")


class SPConfig(_Strict):
    method: Literal["sp"] = "sp"
    weight: float = Field(3000.0, ge=0, description="beta (RepDistiller: -b 3000)")
    student_layer: int | None = Field(None, description=_ONE + "-2 (the last feature map) if it is a map, "
                                      "else -1")
    teacher_layer: int | None = Field(None, description=_ONE + "as student_layer")


class VIDConfig(_Strict):
    method: Literal["vid"] = "vid"
    weight: float = Field(1.0, ge=0, description="beta (RepDistiller: -b 1)")
    init_pred_var: float = Field(5.0, gt=0, description="initial predicted variance (softplus-parametrised)")
    eps: float = Field(1e-5, gt=0)
    mid_channels: int | None = Field(None, gt=0, description="regressor width; None: the teacher's channels")
    student_layers: list[int] | None = Field(None, description=_MANY + "as AT (feat[1:-1]); the embeddings "
                                             "(-1) when either model has no feature map")
    teacher_layers: list[int] | None = Field(None, description=_MANY + "as student_layers")


class RKDConfig(_Strict):
    method: Literal["rkd"] = "rkd"
    weight: float = Field(1.0, ge=0, description="beta (RepDistiller: -b 1)")
    distance_weight: float = Field(25.0, ge=0, description="w_d")
    angle_weight: float = Field(50.0, ge=0, description="w_a")
    student_layer: int | None = Field(None, description=_ONE + "-1")
    teacher_layer: int | None = Field(None, description=_ONE + "-1")


class PKTConfig(_Strict):
    method: Literal["pkt"] = "pkt"
    weight: float = Field(30000.0, ge=0, description="beta (RepDistiller: -b 30000)")
    student_layer: int | None = Field(None, description=_ONE + "-1")
    teacher_layer: int | None = Field(None, description=_ONE + "-1")


class CRDConfig(_Strict):
    method: Literal["crd"] = "crd"
    weight: float = Field(0.8, ge=0, description="beta (RepDistiller: -b 0.8)")
    feat_dim: int = Field(128, gt=0, description="projection dimension")
    nce_k: int = Field(16384, gt=0, description="negatives per positive")
    nce_t: float = Field(0.07, gt=0, description="temperature")
    nce_m: float = Field(0.5, ge=0, lt=1, description="memory-bank momentum")
    negatives: Literal["uniform", "other_class"] | None = Field(
        None, description="where negatives come from: other_class = memory slots last seen with another "
                          "label (RepDistiller mode 'exact'), uniform = any slot; None: other_class for "
                          "classification, uniform for regression")
    student_layer: int | None = Field(None, description=_ONE + "-1")
    teacher_layer: int | None = Field(None, description=_ONE + "-1")


class TAKDConfig(_Strict):
    """Teacher-assistant KD (Mirzadeh et al., AAAI 2020): a chain, not a loss. The assistant (a model
    between teacher and student in size) is distilled from the teacher with the Hinton term, the
    student from the assistant; with cGAN samples both links train on real + fake (rayflow.stages.takd)."""

    method: Literal["takd"] = "takd"
    assistant: str = Field("cnn_small", description="model name of the teacher assistant (rayflow.models)")
    assistant_kwargs: dict[str, Any] = Field(default_factory=dict, description="its constructor kwargs")


_LOSSES = (BLKDConfig, FitNetConfig, ATConfig, SPConfig, VIDConfig, RKDConfig, PKTConfig, CRDConfig)

KDMethodConfig = Annotated[Union[_LOSSES], Field(discriminator="method")]
# a kd_table entry: any loss method, or a stage chain (takd)
KDTableEntry = Annotated[Union[(*_LOSSES, TAKDConfig)], Field(discriminator="method")]

METHOD_CONFIGS: dict[str, type[BaseModel]] = {c.model_fields["method"].default: c for c in _LOSSES}


class KDConfig(_Strict):
    """loss = gamma * task_loss + alpha * KD_T + sum_m weight_m * L_m (RepDistiller's -r/-a/-b).

    With no methods and gamma None this is the loop's historical loss, (1 - alpha) * task + alpha * KD_T.
    """

    alpha: float = Field(0.5, ge=0, description="weight of the Hinton term on softened logits (RepDistiller -a)")
    temperature: float = Field(4.0, gt=0, description="Hinton temperature T")
    gamma: float | None = Field(None, ge=0, description="task-loss weight (RepDistiller -r); None: 1 - alpha "
                                                        "(1 in a batch without teacher targets)")
    methods: list[KDMethodConfig] = Field(default_factory=list, description="further KD losses, each "
                                          "{method: name, weight: beta, ...}")

    @field_validator("methods", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        """One message naming the bad method and the known ones, before pydantic's union dispatch."""
        for item in v if isinstance(v, list) else []:
            if isinstance(item, dict):
                if "method" not in item:
                    raise KDConfigError(f"every KD method entry needs a 'method' field, got {item}")
                check_method_name(item["method"])
        return v

    @model_validator(mode="after")
    def _weights(self) -> "KDConfig":
        if self.gamma is None and self.alpha > 1:
            raise KDConfigError(f"gamma defaults to 1 - alpha, negative for alpha={self.alpha:g}; set gamma")
        if self.alpha > 0 and any(m.method == "blkd" for m in self.methods):
            raise KDConfigError("method 'blkd' repeats the Hinton term that alpha already weights; "
                                "set alpha: 0 to use blkd, or drop blkd")
        return self
