"""Config of the fakes' making: the cGAN, the rho-quantile filter, the synthetic pool and its draws
(split from rayflow/config.py, which re-exports every name)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from rayflow.config_base import _Strict


# the GAN fields added after GAN keys were first pinned: dumped and hashed only away from these
LABEL_INPUT_DEFAULTS = {"label_input": "joint", "y2h_steps": 2000}


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
    label_input: Literal["joint", "y2h"] = Field("joint", description=(
        "CcGAN label input (regression only): joint = G and D each learn their own label_embedding with the "
        "GAN; y2h = the paper's improved input: a small CNN x -> h -> y trained on the real images, y2h "
        "fitted to its frozen head, frozen and shared by G's conditional norm and D's projection (needs "
        "label_embedding mlp; part of the GAN's key when not joint)"))
    y2h_steps: int = Field(2000, gt=0, description="label_input y2h: steps of the regression CNN, and of the "
                                                   "y2h fit to its head")
    seed: int = 0

    @model_serializer(mode="wrap")
    def _dump_without_default_label_input(self, handler):
        """`label_input` and `y2h_steps` are dumped only when not the default: every GAN key and
        training-run name written before they existed stays valid."""
        out = handler(self)
        drop = {k for k, v in LABEL_INPUT_DEFAULTS.items() if out.get(k) == v}
        if out.get("label_input", "joint") == "joint":
            drop.add("y2h_steps")  # read only by the y2h stage: no GAN re-keyed (and retrained) for it
        return {k: v for k, v in out.items() if k not in drop}

    @model_validator(mode="after")
    def _y2h_needs_the_mlp(self) -> "GANConfig":
        if self.label_input == "y2h" and self.label_embedding != "mlp":
            raise ValueError("gan.label_input y2h fits the paper's y2h MLP: set gan.label_embedding mlp "
                             f"(got {self.label_embedding})")
        return self


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


# the synth fields added after pool keys were first pinned: dumped and hashed only away from these
LATENT_DEFAULTS = {"latent_scale": 1.0, "truncation": None}


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
    latent_scale: float = Field(1.0, gt=0, description=(
        "z ~ N(0, latent_scale^2) for the pool's draws: above 1, more varied and less faithful fakes "
        "(GaFi searches [1, 2]); part of the pool's key when not 1"))
    truncation: float | None = Field(None, gt=0, description=(
        "redraw every z coordinate with |z| above it (the truncation trick: fewer, more typical modes); "
        "None: no truncation; part of the pool's key when set"))

    def latent_kwargs(self) -> dict:
        """The latent draw's settings away from their defaults (what `generate` takes)."""
        return {k: getattr(self, k) for k, d in LATENT_DEFAULTS.items() if getattr(self, k) != d}

    @model_serializer(mode="wrap")
    def _dump_without_default_latent(self, handler):
        """`latent_scale` and `truncation` are dumped only when not the default: every key and
        config.yaml written before they existed stays valid."""
        out = handler(self)
        return {k: v for k, v in out.items() if k not in LATENT_DEFAULTS or v != LATENT_DEFAULTS[k]}
