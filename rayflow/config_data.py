"""Where the real images come from (`data:`): built-in sets, files, and the regression sets
(rotated images, rendered chairs). Split from rayflow/config.py to keep files small."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from rayflow.config_base import _Strict


def _range(v: tuple[float, float], top: float) -> tuple[float, float]:
    if not (0 <= v[0] < v[1] <= top):
        raise ValueError(f"must be a range lo < hi within [0, {top:g}] degrees, got {list(v)}")
    return v


class RotationConfig(_Strict):
    """`data.name: rotation`: real images turned by a known angle; the label is the angle (the
    RC-49 task on real pictures). [0, 90) avoids the 180-degree ambiguity of near-symmetric items."""

    base: Literal["fashion_mnist", "digits"] = "fashion_mnist"
    angle_range: tuple[float, float] = Field((0.0, 90.0), description="degrees, lo inclusive, hi exclusive")
    angles_per_image: int = Field(1, gt=0, description="train: each real image turned by this many random angles "
                                  "(val/heldout rows are drawn row by row, so with k > 1 they can share a source "
                                  "image with train; test never does)")
    test_angles_per_image: int = Field(1, gt=0)
    pad_to: int | None = Field(None, gt=0, description="canvas the image is centred on before turning "
                                                       "(default: ceil(side * sqrt 2), corners survive)")
    exclude_classes: list[int] | None = Field(None, description="base classes left out (default: Fashion-MNIST "
                                              "bags (8), which look alike after a 90-degree turn; digits none)")

    @field_validator("angle_range")
    @classmethod
    def _angles(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _range(v, 360.0)


class ChairsConfig(_Strict):
    """`data.name: chairs`: RC-49-like renders of Sweet Home 3D chair meshes; the label is the yaw.
    Train and test chairs are different models."""

    furniture_dir: str | None = Field(None, description="folder of .sh3f archives (default: $RAYFLOW_FURNITURE_DIR "
                                                        "or /usr/share/sweethome3d/furniture)")
    archives: list[str] = Field(default_factory=lambda: ["BlendSwap-CC-0"],
                                description="archives to take chairs from (default: the CC0 one only)")
    models: list[str] | None = Field(None, description="only these models (catalogue id or folder name)")
    test_models: list[str] | None = Field(None, description="the test chairs; default: n_test by name hash")
    n_test: int = Field(4, ge=1)
    yaw_range: tuple[float, float] = Field((0.0, 90.0), description="degrees, lo inclusive, hi exclusive")
    yaw_step: float = Field(1.0, gt=0)
    elevation: float = Field(20.0, ge=-90, le=90, description="camera elevation, degrees")
    size: int = Field(64, ge=8, description="rendered side in px (64 or 32 as RC-49); data.image_size wins")
    supersample: int = Field(4, ge=1, le=8)
    render_actors: int = Field(2, gt=0, description="Ray Data actors rendering (Ray executor)")

    @field_validator("yaw_range")
    @classmethod
    def _yaws(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _range(v, 360.0)


USER_SOURCES = ("folder", "npz", "parquet")
USER_PREP = "resize-v2"  # bump when the preparation of user images or labels changes


class DataConfig(_Strict):
    """Where the real images come from and which subset of them the run sees.

    For the regression sets (rotation, chairs) the *_per_class counts are totals (there are no
    classes): n_per_class=500 is 500 labelled train images drawn at random."""

    name: Literal["fashion_mnist", "digits", "folder", "parquet", "npz", "rotation", "chairs"] = "fashion_mnist"
    path: str | None = Field(None, description="file or folder for folder/parquet/npz sources; a folder may be an "
                                               "object-store prefix (s3://bucket/prefix, S3 settings from AWS_*)")
    task: Literal["classification", "regression"] = "classification"
    num_classes: int | None = Field(None, gt=1, description="default: 1 + the largest label")
    n_per_class: int | None = Field(None, gt=0, description="limited-label subset: N train images per class")
    val_per_class: int = Field(0, ge=0, description="validation images per class, taken from train")
    val_fraction: float = Field(0.0, ge=0, lt=1, description="share of the labelled train images held out as "
                                "validation (after n_per_class; the paper's 20 % for choosing rho and M)")
    heldout_per_class: int = Field(0, ge=0, description="unlabelled real pool for the headroom diagnostic")
    test_limit: int | None = Field(None, gt=0, description="cap on test images (fast runs)")
    image_size: int | None = Field(None, gt=0, description="side in px: built-in sets are padded/cropped to it; "
                                   "folder/npz/parquet images are resized (shorter side, bilinear) and centre-"
                                   "cropped to it; needed when a folder's images differ in size; default: native")
    label_range: tuple[float, float] | None = Field(None, description="regression npz/parquet: [lo, hi] of the labels "
                                                    "in their own unit (default: the training labels' min and max "
                                                    "when any lies outside [0, 1]); labels are normalised inside")
    label_unit: str | None = Field(None, description="regression npz/parquet: the labels' unit for reports "
                                   "(e.g. deg); default 'units'")
    seed: int = 0
    rotation: RotationConfig | None = Field(None, description="data.name=rotation settings (default: RotationConfig())")
    chairs: ChairsConfig | None = Field(None, description="data.name=chairs settings (default: ChairsConfig())")

    @model_validator(mode="before")
    @classmethod
    def _regression_sets(cls, raw: Any) -> Any:
        """rotation and chairs are regression sets: task defaults to it, and may not say otherwise."""
        if isinstance(raw, dict) and raw.get("name") in ("rotation", "chairs"):
            if raw.get("task", "regression") != "regression":
                raise ValueError(f"data.name={raw['name']} is a regression set; data.task must be regression")
            raw = {**raw, "task": "regression"}
        return raw

    @model_validator(mode="before")
    @classmethod
    def _drop_prep(cls, raw: Any) -> Any:
        """A dumped config (results.json, a Tune trial's) carries the `prep` marker: read it back."""
        if isinstance(raw, dict) and raw.get("prep") == USER_PREP:
            raw = {k: v for k, v in raw.items() if k != "prep"}
        return raw

    @model_serializer(mode="wrap")
    def _keys(self, handler):
        """New fields are dumped only when set, so every cache key hashed before them stays valid. User
        sources whose images are now resized or whose labels normalised dump `prep`: their artifacts
        cached before that change (centre crops, raw labels) are not reused."""
        out = handler(self)
        for k in ("label_range", "label_unit"):
            if out.get(k) is None:
                out.pop(k, None)
        if self.name in USER_SOURCES and (self.image_size or self.task == "regression"):
            out["prep"] = USER_PREP
        return out

    @model_validator(mode="after")
    def _sub_config_matches(self) -> "DataConfig":
        if (self.label_range is not None or self.label_unit is not None) and \
                (self.task != "regression" or self.name not in ("npz", "parquet")):
            raise ValueError("data.label_range / data.label_unit apply to regression npz or parquet data only")
        if self.label_range is not None and not self.label_range[0] < self.label_range[1]:
            raise ValueError(f"data.label_range must be [lo, hi] with lo < hi, got {list(self.label_range)}")
        for k in ("rotation", "chairs"):
            if getattr(self, k) is not None and self.name != k:
                raise ValueError(f"data.{k} is set but data.name is {self.name!r} (it would be ignored)")
        return self
