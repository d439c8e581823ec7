"""Typed configuration for every stage, loaded from YAML with `--set key=value` overrides.

Validation happens here, once, so a bad file fails before any compute with one message that names
the offending field (e.g. ``filter.rho: must be in (0, 1], got 1.5``).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import (BeforeValidator, Field, ValidationError, ValidationInfo, field_validator, model_serializer,
                      model_validator)

from rayflow.config_base import ConfigError, _Strict  # noqa: F401  (re-exported)
from rayflow.config_data import ChairsConfig, DataConfig, RotationConfig  # noqa: F401  (re-exported)
from rayflow.config_mix import FunctionMatchingConfig, LeverName, MixConfig, SelectFakesConfig
from rayflow.config_synth import LATENT_DEFAULTS, FilterConfig, GANConfig, SynthConfig  # noqa: F401  (re-exported)
from rayflow.config_teacher import ModulePaths, TeacherCheckpoint
from rayflow.config_tune import TuneConfig  # noqa: F401  (re-exported)
from rayflow.kd.config import KDConfig, KDMethodConfig, KDTableEntry  # pydantic only (no torch)
from rayflow.kd.errors import KDConfigError, check_method_name


class ModelConfig(_Strict):
    modules: ModulePaths = Field(default_factory=list, description="with an import-path name: paths of your "
                               "package dirs (or .py files), put on sys.path here and shipped to Ray workers")
    name: str = Field("resnet20", description="a registered network (rayflow.models.list_models()), or the "
                                               "import path 'package.module:factory' of your own (importable "
                                               "here; shipped to Ray workers); 'teacher' reuses the teacher "
                                               "where allowed (dre.feature_net)")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        from rayflow.models import is_known, list_models
        from rayflow.user_code import is_import_path, resolve

        if is_import_path(v):
            resolve(v, info.data.get("modules") or ())  # imported now, in the driver: a typo fails here
            return v
        known = list_models()
        if v != "teacher" and not is_known(v):
            raise ValueError(f"unknown model {v!r}; known: {', '.join(known)}")
        return v

    @model_serializer(mode="wrap")
    def _keys_without_modules(self, handler):
        """`modules` is dumped only when set: every key hashed before it existed stays valid."""
        out = handler(self)
        if not out.get("modules"):
            out.pop("modules", None)
        return out


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
    select: Literal["last", "best_val"] = Field("last", description=(
        "the weights a run ends with: the last step's, or best_val: the step that scored best on the "
        "validation split among the evaluations every eval_every steps (the step count chosen on "
        "validation data, never the test set; needs data.val_per_class or data.val_fraction)"))
    amp: bool = True
    seed: int = 0

    @model_serializer(mode="wrap")
    def _keys_without_default_select(self, handler):
        """`select` is dumped only when set: every cache key hashed before it existed stays valid."""
        out = handler(self)
        if out.get("select") == "last":
            out.pop("select")
        return out


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
    models_per_run: int = Field(16, gt=0, description=(
        "most models trained in one executor run when several are due (a grid's students): Ray Train keeps "
        "a SplitCoordinator actor (~200 MB resident) per fake dataset alive for the whole run; each run more "
        "costs one start-up (~15 s). Not in any cache key"))
    # observability and the dashboard: how a run is watched, never what it computes (in no cache key)
    tensorboard: bool = Field(True, description="metrics of every stage and trial as TensorBoard event files "
                                                "under <output_dir>/tensorboard/<run>/")
    mlflow: bool = Field(False, description="also log them to MLflow (when `mlflow` is installed)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI; default: the file store "
                                                     "<output_dir>/mlruns (needed for an object-store output)")
    dashboard: bool = Field(False, description="start the Ray dashboard with an embedded Ray")
    dashboard_host: str = Field("127.0.0.1", description="address the embedded Ray's dashboard binds to; "
                                                         "0.0.0.0 exposes it to the network (use Ray's token auth)")


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


class StudentFakeConfig(_Strict):
    """How the cGAN-KD student consumes fakes."""

    real_fraction: float = Field(0.75, gt=0, le=1, description="share of real images in each batch")
    kd_weight: float = Field(0.5, ge=0, le=1, description="alpha of the KD term on fake (and real) samples")
    temperature: float = Field(4.0, gt=0)
    init: Literal["scratch", "nokd"] = "scratch"


class StageSpec(_Strict):
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)


class TeacherSpec(StageSpec):
    """The teacher: trained by the pipeline (model, train), or imported from `checkpoint`."""

    model: ModelConfig = Field(default_factory=lambda: ModelConfig(name="resnet20"), description=(
        "the network the pipeline trains as the teacher (unused with a checkpoint)"))
    checkpoint: TeacherCheckpoint | None = Field(None, description=(
        "a teacher you already have, imported instead of trained (model and train are then unused): "
        "{artifact: DIR} or {factory: 'pkg.mod:fn', kwargs, weights, modules, input_size, input_channels, "
        "value_range, normalize, feature_layer}; see rayflow/config_teacher.py"))

    @model_serializer(mode="wrap")
    def _keys_without_checkpoint(self, handler):
        """`checkpoint` is dumped only when set: every teacher key hashed before it existed stays valid."""
        out = handler(self)
        if out.get("checkpoint") is None:
            out.pop("checkpoint", None)
        return out


def kd_method_list(v: Any, table: bool = False) -> Any:
    """`{method: crd, weight: 0.8}`, `crd`, or a list of those -> a list of method mappings; an
    unknown (or not implemented: sskd; takd outside a `table`) method name fails here with the zoo's
    one message."""
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
            check_method_name(item["method"], table=table)
        out.append(item)
    return out


# a list of KD method configs that also takes one mapping or a bare name (student.kd, kd_table)
KDMethodList = Annotated[list[KDMethodConfig], BeforeValidator(kd_method_list)]
KDTableList = Annotated[list[KDTableEntry], BeforeValidator(functools.partial(kd_method_list, table=True))]


class StudentSpec(StageSpec):
    """The student: model, schedule, and the KD methods the cGAN-KD student adds to its loss."""

    kd: KDMethodList = Field(default_factory=list, description=(
        "KD methods (rayflow.kd, docs/kd_methods.md) added to the loss of the cGAN-KD student: "
        "(1 - fake.kd_weight) * task + fake.kd_weight * KD_T + sum_m weight_m * L_m; e.g. "
        "{method: crd, weight: 0.8} or a list of such entries. Empty: today's cGAN-KD loss. "
        "The baselines (NOKD, BLKD, oracle) and the ablation rows never read it"))
    mix: MixConfig = Field(default_factory=MixConfig, description=(
        "the mixing lever (default off): MixUp / CutMix within the cGAN-KD student's real + fake batches, "
        "each mixed view labelled by the teacher online; read by the KD students (cGAN-KD, cGAN-KD + m) only"))
    select_fakes: SelectFakesConfig = Field(default_factory=SelectFakesConfig, description=(
        "the useful-fakes lever (default off): {by: entropy|kl, share, every, score_size}: fake batches drawn "
        "from the top share by teacher entropy or KL(teacher || current student), re-scored every `every` "
        "steps in the training worker; read by the KD students (cGAN-KD, cGAN-KD + m) only"))

    @model_serializer(mode="wrap")
    def _keys_without_default_levers(self, handler):
        """`mix` and `select_fakes` are dumped only when on: every key and config.yaml written before
        they existed stays valid."""
        out = handler(self)
        if out.get("mix", {}).get("kind", "none") == "none":
            out.pop("mix", None)
        if out.get("select_fakes", {}).get("by", "none") == "none":
            out.pop("select_fakes", None)
        return out


class PipelineConfig(_Strict):
    """Top-level run: everything `rayflow run` needs."""

    name: str = Field("run", description="the run's name (report titles, TensorBoard and MLflow run names)")
    output_dir: str = Field("outputs", description="where artifacts, results and reports go: a local path or a "
                            "pyarrow.fs URI (s3://bucket/prefix); shared storage on a multi-node cluster")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherSpec = Field(default_factory=lambda: TeacherSpec(model=ModelConfig(name="resnet20")))
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
    function_matching: FunctionMatchingConfig = Field(default_factory=FunctionMatchingConfig, description=(
        "the function-matching baseline (Beyer et al. 2022), a row of every table: the BLKD student on "
        "mixed real images (MixUp / CutMix), the teacher labelling each mixed view online, with the cGAN-KD "
        "student's steps, batch size and step selection (student.train)"))
    ablation: bool = Field(True, description="train the ablation's students (raw fakes, + cDR-RS, + filtering, "
                           "+ relabelling) beside cGAN-KD; false: cGAN-KD only, e.g. for a KD-method table run")
    lever_rows: list[LeverName] = Field(default_factory=list, description=(
        "ablation rows of the cGAN-KD levers (rayflow/levers.py): per lever named, one more cGAN-KD student "
        "with that lever alone on, at its configured setting or, when off, mix: mixup alpha 1; select_fakes: "
        "entropy, share 0.5, every 50; latent_scale: 1.5; trained by rayflow run beside the other students"))
    kd_table: KDTableList = Field(default_factory=list, description=(
        "the KD-method comparison table (docs/kd_methods.md): per method m and seed, the student on "
        "real images with the online teacher (loss task + weight_m * L_m, baseline_steps) and the "
        "cGAN-KD student + weight_m * L_m; blkd's rows are the BLKD and cGAN-KD students themselves. "
        "E.g. [{method: blkd}, {method: fitnet}, {method: at}, {method: crd}]"))

    @model_validator(mode="after")
    def _kd_combinations(self) -> "PipelineConfig":
        """What the zoo can refuse without the models: a method twice in the table, and blkd next to
        the Hinton term fake.kd_weight already weights (the models' checks run before training)."""
        names = [m.method for m in self.kd_table]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"kd_table: method(s) {', '.join(twice)} appear more than once; each method is "
                             "one pair of rows of the table")
        for m in self.kd_table:
            if m.method == "takd":
                try:
                    ModelConfig(name=m.assistant)
                except ValidationError as e:
                    raise ValueError(f"kd_table: takd's assistant: {e.errors()[0]['msg'].removeprefix('Value error, ')}")
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

    @model_validator(mode="after")
    def _levers(self) -> "PipelineConfig":
        """A lever's knob or option that cannot act here (config_levers.py)."""
        from rayflow.config_levers import check_levers

        check_levers(self)
        return self

    @model_validator(mode="after")
    def _step_selection(self) -> "PipelineConfig":
        """train.select=best_val scores a validation split at every evaluation: both must exist."""
        for name in ("teacher", "student"):
            t = getattr(self, name).train
            if t.select != "best_val":
                continue
            if not (self.data.val_per_class or self.data.val_fraction):
                raise ValueError(f"{name}.train.select=best_val needs a validation split: set data.val_per_class "
                                 "(labelled images set aside for choosing the step; a total for regression)")
            if not t.eval_every or t.eval_every >= t.steps:
                raise ValueError(f"{name}.train.select=best_val chooses among evaluations every "
                                 f"{name}.train.eval_every steps: set it below {name}.train.steps={t.steps} "
                                 f"(got {t.eval_every})")
        return self


# loading lives in rayflow/config_load.py (re-exported here: `from rayflow.config import load_config`)
from rayflow.config_load import (  # noqa: E402,F401
    apply_overrides,
    build_config,
    load_config,
    parse_override,
    read_yaml,
    to_yaml,
)
