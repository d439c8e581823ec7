"""Typed configuration for every stage, loaded from YAML with `--set key=value` overrides.

Validation happens here, once, so a bad file fails before any compute with one message that names
the offending field (e.g. ``filter.rho: must be in (0, 1], got 1.5``).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rayflow.kd.config import KDConfig, KDMethodConfig  # pydantic only (no torch)
from rayflow.kd.errors import KDConfigError, check_method_name


class ConfigError(ValueError):
    """A configuration problem, phrased for the user (field path + reason)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


class DataConfig(_Strict):
    """Where the real images come from and which subset of them the run sees.

    For the regression sets (rotation, chairs) the *_per_class counts are totals (there are no
    classes): n_per_class=500 is 500 labelled train images drawn at random."""

    name: Literal["fashion_mnist", "digits", "folder", "parquet", "npz", "rotation", "chairs"] = "fashion_mnist"
    path: str | None = Field(None, description="file or folder for folder/parquet/npz sources")
    task: Literal["classification", "regression"] = "classification"
    num_classes: int | None = Field(None, gt=1, description="default: 1 + the largest label")
    n_per_class: int | None = Field(None, gt=0, description="limited-label subset: N train images per class")
    val_per_class: int = Field(0, ge=0, description="validation images per class, taken from train")
    val_fraction: float = Field(0.0, ge=0, lt=1, description="share of the labelled train images held out as "
                                "validation (after n_per_class; the paper's 20 % for choosing rho and M)")
    heldout_per_class: int = Field(0, ge=0, description="unlabelled real pool for the headroom diagnostic")
    test_limit: int | None = Field(None, gt=0, description="cap on test images (fast runs)")
    image_size: int | None = Field(None, gt=0, description="resize (pad/crop) to this size; default: native")
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

    @model_validator(mode="after")
    def _sub_config_matches(self) -> "DataConfig":
        for k in ("rotation", "chairs"):
            if getattr(self, k) is not None and self.name != k:
                raise ValueError(f"data.{k} is set but data.name is {self.name!r} (it would be ignored)")
        return self


class ModelConfig(_Strict):
    name: str = Field("resnet20", description="a registered network (rayflow.models.list_models()); "
                                               "'teacher' reuses the teacher where allowed (dre.feature_net)")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from rayflow.models import list_models

        known = list_models()
        if v != "teacher" and v not in known:
            raise ValueError(f"unknown model {v!r}; known: {', '.join(known)}")
        return v


class OptimConfig(_Strict):
    name: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


class TrainConfig(_Strict):
    """One supervised training run. Length is in optimizer steps so students compare fairly."""

    steps: int = Field(1000, gt=0)
    batch_size: int = Field(64, gt=0, description="global batch, split across workers")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: Literal["cosine", "onecycle", "step", "constant"] = "onecycle"
    augment: list[Literal["crop", "flip", "cutout"]] = Field(default_factory=lambda: ["crop", "flip"])
    eval_every: int = Field(0, ge=0, description="validation every N steps (0: only at the end)")
    amp: bool = True
    seed: int = 0


class ScalingConfig(_Strict):
    num_workers: int = Field(1, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    threads_per_worker: int | None = Field(None, gt=0, description="torch threads; default: cpus_per_worker")


class RuntimeConfig(_Strict):
    """Where stages run: `ray` (embedded Ray, or the cluster in RAY_ADDRESS) or `local` (no Ray)."""

    executor: Literal["ray", "local"] = "ray"
    address: str | None = None
    num_cpus: int | None = Field(None, gt=0)
    object_store_memory_mb: int = Field(1024, gt=0)
    quiet: bool = True
    checkpoint_every: int = Field(500, ge=0, description="teacher and student runs save a resume point every N "
                                                         "steps (0: only at evaluations and the end); not in any "
                                                         "cache key: a resumed run ends bit for bit the same")
    # observability and the dashboard: how a run is watched, never what it computes (in no cache key)
    tensorboard: bool = Field(True, description="metrics of every stage and trial as TensorBoard event files "
                                                "under <output_dir>/tensorboard/<run>/")
    mlflow: bool = Field(False, description="also log them to MLflow (when `mlflow` is installed)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI; default: the file store "
                                                     "<output_dir>/mlruns (needed for an object-store output)")
    dashboard: bool = Field(False, description="start the Ray dashboard with an embedded Ray")
    dashboard_host: str = Field("127.0.0.1", description="address the embedded Ray's dashboard binds to; "
                                                         "0.0.0.0 exposes it to the network (use Ray's token auth)")


class GANConfig(_Strict):
    z_dim: int = Field(64, gt=0)
    g_channels: int = Field(64, gt=0)
    d_channels: int = Field(64, gt=0)
    steps: int = Field(4000, gt=0, description="generator steps")
    n_dis: int = Field(1, gt=0, description="discriminator steps per generator step")
    batch_size: int = Field(64, gt=0)
    lr_g: float = Field(2e-4, gt=0)
    lr_d: float = Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.0, 0.999)
    diffaugment: str = "color,translation,cutout"
    ema_decay: float = Field(0.999, gt=0, lt=1)
    lecam: float = Field(0.0, ge=0, description="weight of the LeCam regulariser on D (limited data: ~0.1-0.5)")
    checkpoint_every: int = Field(500, gt=0)
    select: Literal["best_fid", "best_consistency", "last", "per_class"] = Field(
        "best_consistency", description="which checkpoint's EMA generator the pipeline uses (GAN training is not "
                                        "monotone): best_fid = lowest FID (teacher features, vs the real train "
                                        "images) among those with label consistency >= min_consistency; "
                                        "best_consistency = the one the teacher agrees with most; last; or "
                                        "per_class = best_fid decided class by class (each class from the "
                                        "lowest-FID checkpoint where that class clears min_consistency), "
                                        "against one collapsed class per checkpoint")
    recalibrate_bn: bool = Field(True, description="re-estimate the EMA generator's BN statistics from its own "
                                                   "samples before probing and sampling (standing statistics)")
    min_consistency: float = Field(85.0, ge=0, le=100, description="label consistency floor (%) for best_fid "
                                                                          "(per class for per_class)")
    # CcGAN (regression, labels in [0, 1]); ignored for classification
    vicinal: Literal["hard", "soft"] = Field("soft", description="CcGAN vicinal D loss: hard (HVDL, reals within "
                                             "kappa, uniform) or soft (SVDL, weights exp(-(y_i - y)^2 / kappa^2))")
    kappa: float | None = Field(None, gt=0, description="vicinity width in normalised label units (soft: "
                                "nu = 1/kappa^2); default kappa_mult * max gap between sorted distinct labels")
    kappa_mult: float = Field(2.0, gt=0, description="m_kappa of the kappa rule of thumb (paper: 2 UTKFace, "
                                                     "5 Steering Angle)")
    sigma: float | None = Field(None, ge=0, description="std of the target-label noise; default Silverman's "
                                "rule 1.06 * std(y) * n^(-1/5) on the normalised train labels")
    label_embedding: Literal["mlp", "sinusoidal"] = Field("mlp", description="CcGAN label embedding y -> h: the "
                                                          "paper's y2h MLP (trained with the GAN) or fixed "
                                                          "sin/cos features")
    embed_dim: int = Field(128, gt=0, multiple_of=8, description="size of the CcGAN label embedding h")
    seed: int = 0


class DREConfig(_Strict):
    """cDR-RS: density-ratio MLP on frozen features, trained with the SP loss."""

    feature_net: ModelConfig = Field(default_factory=lambda: ModelConfig(name="resnet8"))
    feature_train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=600))
    hidden: list[int] = Field(default_factory=lambda: [512, 256, 128])
    steps: int = Field(1000, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-4, gt=0)
    penalty: float = Field(0.01, ge=0, description="lambda of (E_fake[r] - 1)^2")
    burnin: int = Field(1000, gt=0, description="samples per class for the first max-ratio estimate")
    enabled: bool = True
    seed: int = 0


class FilterConfig(_Strict):
    rho: float = Field(0.9, description="keep samples whose teacher loss is below the rho-quantile")
    burnin: int = Field(500, gt=0, description="samples per class used to fix the cutoff")
    relabel: bool = True
    enabled: bool = True

    @field_validator("rho")
    @classmethod
    def _rho_range(cls, v: float) -> float:
        if not (0.0 < v <= 1.0):
            raise ValueError(f"must be in (0, 1], got {v}")
        return v


class SynthConfig(_Strict):
    """The Ray Data stage that turns the GAN into a filtered, labelled Parquet dataset."""

    m_per_class: int = Field(1000, gt=0, description="fake samples per class a student sees (M / C): a view "
                                                     "of the scored pool")
    pool_draws: int = Field(2000, gt=0, description="generator draws per class in the scored pool's first "
                                                    "segment; each further segment (added when a view needs "
                                                    "more) doubles it")
    max_draws_per_class: int = Field(200_000, gt=0, description="cap on the pool's draws per class; a view "
                                                                "it cannot serve fails with a clear message")
    batch_size: int = Field(500, gt=0)
    shard_size: int = Field(2000, gt=0, description="work items per Parquet shard (resume unit)")
    gen_actors: int = Field(2, gt=0, description="max actors per pool (fused: shards processed at once)")
    fused: bool = Field(True, description="one actor pool runs generate -> ratio -> label -> write per shard "
                                          "(fewer processes, no copies between steps); false: a pool per step")
    num_gpus_per_actor: float = Field(0.0, ge=0)
    soft_labels: bool = True
    seed: int = 0


class StudentFakeConfig(_Strict):
    """How the cGAN-KD student consumes fakes."""

    real_fraction: float = Field(0.75, gt=0, le=1, description="share of real images in each batch")
    kd_weight: float = Field(0.5, ge=0, le=1, description="alpha of the KD term on fake (and real) samples")
    temperature: float = Field(4.0, gt=0)
    init: Literal["scratch", "nokd"] = "scratch"


class StageSpec(_Strict):
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)


def kd_method_list(v: Any) -> Any:
    """`{method: crd, weight: 0.8}`, `crd`, or a list of those -> a list of method mappings; an
    unknown (or not implemented: sskd, takd) method name fails here with the zoo's one message."""
    if v is None:
        return []
    items = v if isinstance(v, list) else [v]
    out = []
    for item in items:
        if isinstance(item, str):
            item = {"method": item}
        if isinstance(item, dict):
            if "method" not in item:
                raise KDConfigError(f"every KD method entry needs a 'method' field, got {item}")
            check_method_name(item["method"])
        out.append(item)
    return out


class StudentSpec(StageSpec):
    """The student: model, schedule, and the KD methods the cGAN-KD student adds to its loss."""

    kd: list[KDMethodConfig] = Field(default_factory=list, description=(
        "KD methods (rayflow.kd, docs/kd_methods.md) added to the loss of the cGAN-KD student: "
        "(1 - fake.kd_weight) * task + fake.kd_weight * KD_T + sum_m weight_m * L_m; e.g. "
        "{method: crd, weight: 0.8} or a list of such entries. Empty: today's cGAN-KD loss. "
        "The baselines (NOKD, BLKD, oracle) and the ablation rows never read it"))

    @field_validator("kd", mode="before")
    @classmethod
    def _kd_list(cls, v: Any) -> Any:
        return kd_method_list(v)


class TuneConfig(_Strict):
    """`rayflow tune`: a search over the filtering quantile rho and the fakes per class M (optionally
    the real share per batch and the KD weight), each trial one student scored on validation data."""

    searcher: Literal["grid", "random", "tpe", "bound"] = "bound"
    trials: int = Field(8, gt=0, description="student trainings the search may spend")
    rho: tuple[float, float] = (0.1, 1.0)
    m_per_class: tuple[int, int] = (50, 2000)
    real_fraction: tuple[float, float] | None = None
    kd_weight: tuple[float, float] | None = None
    grid: tuple[int, int] = Field((6, 5), description="rho x M points of the candidate grid (grid searcher, "
                                                      "the bound's table, candidates of the others)")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of the labelled images held out to score "
                                                            "trials (the test set is never used to choose)")
    asha: bool = Field(True, description="stop weak trials early on samples seen (Ray executor)")
    evals: int = Field(4, gt=0, description="validation reports per trial (the rungs ASHA compares)")
    seed: int = 0

    @field_validator("rho")
    @classmethod
    def _rho(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1] <= 1):
            raise ValueError(f"must be a range within (0, 1], got {list(v)}")
        return v

    @field_validator("m_per_class")
    @classmethod
    def _m(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not (0 < v[0] <= v[1]):
            raise ValueError(f"must be a range of positive sample counts, got {list(v)}")
        return v


class PipelineConfig(_Strict):
    """Top-level run: everything `rayflow run` needs."""

    name: str = "run"
    output_dir: str = "outputs"
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: StageSpec = Field(default_factory=lambda: StageSpec(model=ModelConfig(name="resnet20")))
    student: StudentSpec = Field(default_factory=lambda: StudentSpec(model=ModelConfig(name="resnet8")))
    gan: GANConfig = Field(default_factory=GANConfig)
    dre: DREConfig = Field(default_factory=DREConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    fake: StudentFakeConfig = Field(default_factory=StudentFakeConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    seeds: list[int] = Field(default_factory=lambda: [0], description="student seeds for the comparison")
    # Students on a small real set without augmentation overfit long before those that also see
    # fakes converge (quality config: NOKD 79.7 % at 500 steps, 79.1 % at 1,500), so the baselines
    # get their own, shorter schedule: compared at their peak, not past it.
    baseline_steps: int | None = Field(None, gt=0, description="steps of the NOKD and BLKD students "
                                       "(None: student.train.steps)")
    kd_table: list[KDMethodConfig] = Field(default_factory=list, description=(
        "the KD-method comparison table (docs/kd_methods.md): per method m and seed, the student on "
        "real images with the online teacher (loss task + weight_m * L_m, baseline_steps) and the "
        "cGAN-KD student + weight_m * L_m; blkd's rows are the BLKD and cGAN-KD students themselves. "
        "E.g. [{method: blkd}, {method: fitnet}, {method: at}, {method: crd}]"))

    @field_validator("kd_table", mode="before")
    @classmethod
    def _kd_table_list(cls, v: Any) -> Any:
        return kd_method_list(v)

    @model_validator(mode="after")
    def _kd_combinations(self) -> "PipelineConfig":
        """What the zoo can refuse without the models: a method twice in the table, and blkd next to
        the Hinton term fake.kd_weight already weights (the models' checks run before training)."""
        names = [m.method for m in self.kd_table]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"kd_table: method(s) {', '.join(twice)} appear more than once; each method is "
                             "one pair of rows of the table")
        if self.fake.kd_weight > 0 and any(m.method == "blkd" for m in self.student.kd):
            raise ValueError(f"student.kd: method 'blkd' repeats the Hinton term that fake.kd_weight="
                             f"{self.fake.kd_weight:g} already weights in the cGAN-KD student; drop blkd, or set "
                             "fake.kd_weight: 0 to weight it through blkd's own weight")
        try:
            KDConfig(alpha=self.fake.kd_weight, temperature=self.fake.temperature, methods=self.student.kd)
        except (KDConfigError, ValidationError) as e:
            msg = str(e) if isinstance(e, KDConfigError) else e.errors()[0]["msg"].removeprefix("Value error, ")
            raise ValueError(f"student.kd: {msg} (the cGAN-KD student's Hinton term is fake.kd_weight="
                             f"{self.fake.kd_weight:g})") from None
        return self


# ---------------------------------------------------------------------------------------------
# loading


def _override_for(loc: tuple, overrides: list[str]) -> str | None:
    """The --set item that wrote the field at `loc` (the last one wins, as when applied), or None."""
    hit = None
    for item in overrides:
        path = parse_override(item)[0]
        if loc and [str(p) for p in loc[:len(path)]] == path[:len(loc)]:
            hit = item
    return hit


def _format_validation_error(err: ValidationError, source: str, overrides: list[str] | None = None) -> str:
    """Each error blames where its value came from: the config file, or the --set item."""
    from_file, from_set = [], []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if not loc:  # a check across fields names its field first ("student.kd: ...")
            m = re.match(r"([A-Za-z_][\w.]*): (.*)", msg, re.S)
            loc, msg = (m.group(1), m.group(2)) if m else ("<root>", msg)
            e = {**e, "loc": tuple(loc.split("."))}
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        item = _override_for(e["loc"], overrides or [])
        (from_set if item else from_file).append(f"--set {item}: {loc}: {msg}" if item else f"{loc}: {msg}")
    parts = [f"invalid config {source}: " + "; ".join(from_file)] if from_file else []
    return "; ".join(parts + (["invalid override " + "; ".join(from_set)] if from_set else []))


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=3` -> (["a", "b"], 3); the value is parsed as YAML so numbers, bools and lists work."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. teacher.train.steps=200)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    out = copy.deepcopy(raw)
    for item in overrides or []:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level, got {type(raw).__name__}")
    return raw


def build_config(model_cls: type[BaseModel], raw: dict, source: str = "",
                 overrides: list[str] | None = None) -> Any:
    try:
        return model_cls.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source, overrides)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                model_cls: type[BaseModel] = PipelineConfig) -> Any:
    """YAML file (optional) + overrides -> validated config, or ConfigError naming the bad field."""
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides)
    return build_config(model_cls, raw, source=str(path) if path else "(defaults)", overrides=overrides)


def to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
