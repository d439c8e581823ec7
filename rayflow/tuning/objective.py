"""What `rayflow tune` / `rayflow grid` optimise, from the data's label space: validation accuracy
(higher is better) for classes, validation MAE (lower is better) for a continuous label.

The searchers (`rayflow.search`) always minimise an *error*: 1 − accuracy, or the MAE in normalised
label units (the same units as the error bound's total, so the bound-guided prior and the measured
errors match). What people read (logs, tune.json's `final`, the report) is accuracy in %, or the MAE
in the labels' own unit where the data has one (degrees for the rotation sets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayflow.labels import LabelSpace, space_of_data


def acc_error(val_acc: float) -> float:
    """Accuracy in % -> the searchers' error (lower is better)."""
    return 1.0 - float(val_acc) / 100.0


def mae_error(val_mae: float) -> float:
    """The MAE (normalised labels) is the error itself."""
    return float(val_mae)


@dataclass(frozen=True)
class Objective:
    space: LabelSpace

    @property
    def regression(self) -> bool:
        return self.space.continuous

    @property
    def metric(self) -> str:
        """The trial's validation metric (a student's metrics key; ASHA's and Tune's metric)."""
        return "val_mae" if self.regression else "val_acc"

    @property
    def test_metric(self) -> str:
        return "test_mae" if self.regression else "test_acc"

    @property
    def mode(self) -> str:
        """Ray Tune's mode for `metric`."""
        return "min" if self.regression else "max"

    @property
    def to_error(self):
        """metric value -> the searchers' error (a module-level function: Tune pickles it)."""
        return mae_error if self.regression else acc_error

    @property
    def unit(self) -> str:
        r = getattr(self.space, "range", None)
        return (r.unit or "") if r is not None else ""

    def shown(self, value: float) -> float:
        """A metric value as people read it: accuracy in %, or the MAE in the labels' unit."""
        return float(self.space.display_error(float(value))) if self.regression else float(value)

    @property
    def shown_name(self) -> str:
        """What `shown` values are: 'accuracy' or 'MAE (deg)' / 'MAE'."""
        return "accuracy" if not self.regression else ("MAE" + (f" ({self.unit})" if self.unit else ""))

    @property
    def shown_key(self) -> str:
        """The results key of `shown` test values: test_acc, or test_mae_<unit> as the run report has it."""
        return "test_acc" if not self.regression else ("test_mae" + (f"_{self.unit}" if self.unit else ""))

    def describe(self, value: float) -> str:
        """'val acc 93.20' or 'val MAE 4.321 deg'."""
        if not self.regression:
            return f"val acc {float(value):.2f}"
        return f"val MAE {self.shown(value):.4g}" + (f" {self.unit}" if self.unit else "")

    def best(self, rows: list[dict]) -> dict:
        """The row with the best `metric` (the first of equals)."""
        pick = min if self.regression else max
        return pick(rows, key=lambda r: float(r[self.metric]))

    def error_scale(self) -> tuple[float, str]:
        """(factor, label) that turn a searchers' error into what people read: (100, 'error %') or
        (label span, 'MAE (deg)')."""
        if not self.regression:
            return 100.0, "error %"
        return float(self.space.display_error(1.0)), self.shown_name

    def to_dict(self) -> dict[str, Any]:
        scale, label = self.error_scale()
        return {"metric": self.metric, "mode": self.mode, "test_metric": self.test_metric,
                "error": "MAE (normalised labels)" if self.regression else "1 - accuracy",
                "error_scale": scale, "error_label": label, "shown": self.shown_name, "unit": self.unit}


def objective_of(cfg: Any, num_classes: int | None) -> Objective:
    """The objective of a run whose data has `num_classes` classes (None: a continuous label)."""
    return Objective(space_of_data(cfg.data, num_classes))


CLASSIFICATION = {"error_scale": 100.0, "error_label": "error %", "shown": "accuracy"}


def error_display(saved: dict | None) -> tuple[float, str, str]:
    """(error factor, error label, shown name) of a saved grid.json / tune-*.json (`objective`; files
    written before it existed are classification)."""
    o = (saved or {}).get("objective") or CLASSIFICATION
    return float(o["error_scale"]), str(o["error_label"]), str(o["shown"])
