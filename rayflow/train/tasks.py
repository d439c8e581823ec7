"""What differs between classification and regression: outputs, loss, metric. Nothing else does."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Task:
    kind: str  # "classification" | "regression"
    num_classes: int | None = None

    @staticmethod
    def of(num_classes: int | None) -> "Task":
        return Task("regression") if num_classes is None else Task("classification", num_classes)

    @property
    def num_outputs(self) -> int:
        return 1 if self.num_classes is None else self.num_classes

    @property
    def label_dtype(self) -> torch.dtype:
        return torch.float32 if self.num_classes is None else torch.int64

    @property
    def metric(self) -> str:
        """Headline metric and whether larger is better."""
        return "mae" if self.num_classes is None else "acc"

    @property
    def higher_is_better(self) -> bool:
        return self.num_classes is not None

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.num_classes is None:
            return F.mse_loss(out.squeeze(1), y)
        return F.cross_entropy(out, y)

    def per_sample_error(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Teacher-disagreement score used by filtering: CE or |prediction - label|."""
        if self.num_classes is None:
            return (out.squeeze(1) - y).abs()
        return F.cross_entropy(out, y, reduction="none")

    def distill(self, out: torch.Tensor, teacher_out: torch.Tensor, temperature: float) -> torch.Tensor:
        """The KD term: Hinton's softened KL for classes; for a scalar output ("plain KD" of the
        paper's regression tables) the squared error to the teacher's prediction."""
        if self.num_classes is None:
            return F.mse_loss(out.reshape(len(out), -1)[:, 0], teacher_out.reshape(len(out), -1)[:, 0])
        return kd_loss(out, teacher_out, temperature)

    def score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample metric contribution: 1/0 correct, or absolute error."""
        if self.num_classes is None:
            return (out.squeeze(1) - y).abs()
        return (out.argmax(1) == y).float()


def kd_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean."""
    t = temperature
    return F.kl_div(F.log_softmax(student_out / t, 1), F.log_softmax(teacher_out / t, 1),
                    reduction="batchmean", log_target=True) * t * t
