"""`teacher.checkpoint`: a teacher the user already has, imported instead of trained.

Either a rayflow model artifact dir, or the user's own network (an import path + kwargs) with its
weights and its input contract (size, channels, value range / normalisation, the layer giving the
penultimate features). Checked here as far as the config alone allows (the factory imports, the
weights file exists); against the data in `rayflow.stages.teacher_import.check` before any compute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from rayflow.config_base import _Strict


def _existing(paths: list[str]) -> list[str]:
    missing = [p for p in paths if not Path(p).expanduser().exists()]
    if missing:
        raise ValueError(f"{', '.join(missing)} does not exist")
    return paths


# paths of the user's package dirs (or .py files): on sys.path in the driver, py_modules for Ray workers
ModulePaths = Annotated[list[str], AfterValidator(_existing)]
ExistingPath = Annotated[str, AfterValidator(lambda p: _existing([p])[0])]


class Normalize(_Strict):
    mean: list[float] = Field(description="per-channel mean subtracted after the value range mapping")
    std: list[float] = Field(description="per-channel std divided by (all > 0)")

    @model_validator(mode="after")
    def _sizes(self) -> "Normalize":
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean and std need one value per channel each, got {self.mean} and {self.std}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be > 0, got {self.std}")
        return self


class TeacherCheckpoint(_Strict):
    """An existing teacher: `artifact` (a rayflow model dir), or `factory` + `weights`."""

    artifact: ExistingPath | None = Field(None, description="a rayflow model artifact dir (model.json + model.safetensors)")
    modules: ModulePaths = Field(default_factory=list, description="paths of the user's package dirs (or .py "
                               "files): put on sys.path in the driver and shipped to Ray workers (py_modules)")
    factory: str | None = Field(None, description="import path 'package.module:function' (or a class) that "
                                "builds the network; called with `kwargs` (plus in_channels / image_size / "
                                "num_outputs where its signature names them and kwargs do not)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the factory")
    weights: ExistingPath | None = Field(None, description="the network's state_dict: a .safetensors file, or a torch "
                                "file read with torch.load(weights_only=True) (a {'state_dict': ...} wrapper too)")
    input_size: int | None = Field(None, gt=0, description="side of the square images the network takes; "
                                   "rayflow's images are resized to it (bilinear, antialiased); None: data.image_size")
    input_channels: int | None = Field(None, gt=0, description="channels the network takes (must match the "
                                       "data's); None: the data's")
    value_range: tuple[float, float] = Field((0.0, 1.0), description="the pixel range the network expects "
                                             "(before `normalize`): rayflow's [-1, 1] images are mapped to it")
    normalize: Normalize | None = Field(None, description="{mean: [...], std: [...]} applied after value_range "
                                        "(torchvision style: value_range [0, 1] then normalize)")
    feature_layer: str | None = Field(None, description="module name (as in named_modules) whose output is the "
                                      "penultimate embedding; None: the input of the last nn.Linear")
    feature_layers: list[str] = Field(default_factory=list, description="module names whose outputs KD methods "
                                      "that need intermediate feature maps (fitnet, at, ...) may use, in order")

    @field_validator("factory")
    @classmethod
    def _imports(cls, v: str | None, info: ValidationInfo) -> str | None:
        """Imported now, in the driver (`modules` on sys.path first): a typo fails before any compute."""
        if v is not None:
            from rayflow.user_code import resolve

            resolve(v, info.data.get("modules") or ())
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherCheckpoint":
        if (self.artifact is None) == (self.factory is None):
            raise ValueError("teacher.checkpoint: give either artifact (a rayflow model dir) or factory + weights")
        if self.factory is not None and self.weights is None:
            raise ValueError("teacher.checkpoint.weights: the factory's network needs its weights file")
        if self.normalize is not None and self.input_channels is not None and \
                len(self.normalize.mean) not in (1, self.input_channels):
            raise ValueError(f"teacher.checkpoint.normalize: {len(self.normalize.mean)} values for "
                             f"{self.input_channels} input channels")
        return self

    def adapter_kwargs(self) -> dict[str, Any]:
        """model.json kwargs of the `external` network (rayflow.models.external): the weights are not
        among them (they are the artifact's)."""
        out: dict[str, Any] = {"factory": self.factory, "kwargs": dict(self.kwargs),
                               "value_range": list(self.value_range)}
        for k in ("input_size", "input_channels", "feature_layer"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        if self.normalize is not None:
            out["normalize"] = self.normalize.model_dump()
        if self.modules:
            out["modules"] = [str(Path(m).expanduser().resolve()) for m in self.modules]
        if self.feature_layers:
            out["feature_layers"] = list(self.feature_layers)
        return out
