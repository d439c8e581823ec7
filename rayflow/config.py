"""Typed configuration for every stage, loaded from YAML with `--set key=value` overrides.

Validation happens here, once, so a bad file fails before any compute with one message that names
the offending field (e.g. ``filter.rho: must be in (0, 1], got 1.5``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """A configuration problem, phrased for the user (field path + reason)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the real images come from and which subset of them the run sees."""

    name: Literal["fashion_mnist", "digits", "folder", "parquet", "npz"] = "fashion_mnist"
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
    student: StageSpec = Field(default_factory=lambda: StageSpec(model=ModelConfig(name="resnet8")))
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
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
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
