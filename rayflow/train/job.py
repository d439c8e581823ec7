"""A supervised training job as plain data, runnable in-process or inside a Ray Train worker.

Both executors call `run_job` with the worker's rank and a reporter, so the numbers a user sees
from `executor: local` and from Ray Train come from the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rayflow.config import ModelConfig, TrainConfig
from rayflow.config_mix import MixConfig, SelectFakesConfig
from rayflow.data.imageset import ImageSet
from rayflow.models import build_model
from rayflow.progress import Progress
from rayflow.train.loop import Reporter, evaluate, predict, train_steps
from rayflow.train.sources import ArraySource, BatchSource, MixedSource
from rayflow.train.tasks import Task


@dataclass
class FakeData:
    """Filtered, teacher-labelled synthetic samples and how to mix them in."""

    images: np.ndarray
    labels: np.ndarray
    teacher_logits: np.ndarray | None
    real_fraction: float = 0.75


@dataclass
class SupervisedJob:
    model: ModelConfig
    train_cfg: TrainConfig
    train: ImageSet
    val: ImageSet | None = None
    test: ImageSet | None = None
    init_state: dict[str, torch.Tensor] | None = None  # fine-tune from (e.g. the NOKD student)
    teacher: ModelConfig | None = None  # online KD teacher (BLKD) ...
    teacher_state: dict[str, torch.Tensor] | None = None  # ... and its weights
    kd_alpha: float = 0.0
    temperature: float = 4.0
    kd_methods: list[Any] = field(default_factory=list)  # rayflow.kd method configs added to the loss
    fake: FakeData | None = None
    real_logits: np.ndarray | None = None  # teacher logits on the real train images (no-aug KD)
    mix: MixConfig | None = None  # MixUp/CutMix every batch, labelled by the online teacher (train/mix.py)
    select_fakes: SelectFakesConfig | None = None  # fake batches from the most useful fakes (train/select_fakes.py)
    log_every: int = 100
    checkpoint_every: int = 0  # a resume point every N steps (results do not depend on it)

    @property
    def task(self) -> Task:
        return Task.of(self.train.num_classes)

    def build(self, cfg: ModelConfig | None = None) -> torch.nn.Module:
        """Initial weights depend on the job's seed only (not on what ran before in this process,
        e.g. earlier models of a batched Ray Train run)."""
        c, h, _ = self.train.shape
        cfg = cfg or self.model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.train_cfg.seed)
            return build_model(cfg.name, in_channels=c, image_size=h, num_outputs=self.task.num_outputs,
                               **cfg.kwargs)


def make_source(job: SupervisedJob, rank: int, world: int, fake_source: BatchSource | None = None,
                real_fraction: float = 0.75, model: torch.nn.Module | None = None,
                device: torch.device | str = "cpu") -> BatchSource:
    """Real batches, or real + fake at a fixed share (`job.fake`'s own, else `real_fraction` for a
    streamed `fake_source`). With KD methods, batches carry `i`, the CRD sample index: a real
    image's position in the train array, a fake's N_real + its position in the fake set. With
    `job.select_fakes` on, the fakes (in memory) are drawn by usefulness to `model`, the student."""
    tc, task = job.train_cfg, job.task
    offset = 0 if job.kd_methods else None
    if job.fake is None and fake_source is None:
        return ArraySource(job.train.images, job.train.labels, tc.batch_size, augment_ops=tc.augment,
                           teacher_logits=job.real_logits, seed=tc.seed, rank=rank, world_size=world,
                           label_dtype=task.label_dtype, index_offset=offset)
    frac = job.fake.real_fraction if job.fake is not None else real_fraction
    n_real = max(1, round(tc.batch_size * frac))
    real = ArraySource(job.train.images, job.train.labels, n_real, augment_ops=tc.augment, seed=tc.seed,
                       teacher_logits=job.real_logits, rank=rank, world_size=world, label_dtype=task.label_dtype,
                       index_offset=offset)
    if fake_source is None:
        f = job.fake
        kw = dict(augment_ops=tc.augment, teacher_logits=f.teacher_logits, seed=tc.seed + 1, rank=rank,
                  world_size=world, label_dtype=task.label_dtype,
                  index_offset=None if offset is None else len(job.train))
        if job.select_fakes is not None and job.select_fakes.on:
            from rayflow.train.select_fakes import SelectedSource

            fake_source = SelectedSource(f.images, f.labels, tc.batch_size - n_real, select=job.select_fakes,
                                         student=model, device=device, temperature=job.temperature, **kw)
        else:
            fake_source = ArraySource(f.images, f.labels, tc.batch_size - n_real, **kw)
    elif job.select_fakes is not None and job.select_fakes.on:
        raise ValueError("student.select_fakes re-scores the fakes in memory: the fakes must not be streamed")
    return MixedSource(real, fake_source)


def build_job_criterion(job: SupervisedJob, model: torch.nn.Module, teacher: torch.nn.Module | None,
                        num_fake: int = 0):
    """The job's loss: (1 - kd_alpha) * task + kd_alpha * KD_T + sum_m weight_m * L_m; None for a
    job without any KD (the bare task loss). Method adapters are sized by one dummy batch of the
    job's image shape through both models; their initial weights depend on the job's seed only."""
    if job.kd_alpha <= 0 and not job.kd_methods:
        return None
    from rayflow.kd import KDConfig, build_criterion

    cfg = KDConfig(alpha=job.kd_alpha, temperature=job.temperature, methods=list(job.kd_methods))
    if not cfg.methods:
        return build_criterion(cfg, job.task)
    if teacher is None:
        raise ValueError(f"KD methods {[m.method for m in cfg.methods]} need the online teacher: the job has none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.train_cfg.seed)
        return build_criterion(cfg, job.task, student=model, teacher=teacher, input_shape=job.train.shape,
                               num_samples=len(job.train) + num_fake, student_name=job.model.name,
                               teacher_name=job.teacher.name if job.teacher is not None else None)


def run_job(job: SupervisedJob, model: torch.nn.Module, *, rank: int = 0, world: int = 1,
            device: torch.device | str = "cpu", reporter: Reporter | None = None,
            start_state: dict | None = None, fake_source: BatchSource | None = None,
            real_fraction: float = 0.75, progress: Progress | None = None) -> dict:
    """Trains `model` (already moved/wrapped by the caller) and returns final metrics. The final
    state the reporter gets holds the criterion's state ("criterion") when the loss has any."""
    torch.manual_seed(job.train_cfg.seed * 1000 + rank)
    teacher = None
    mixing = job.mix is not None and job.mix.on
    if (job.kd_alpha > 0 or job.kd_methods or mixing) and job.teacher is not None:
        teacher = job.build(job.teacher)
        teacher.load_state_dict(job.teacher_state)
        teacher.to(device).eval()
    num_fake = len(job.fake.images) if job.fake is not None else int(getattr(fake_source, "num_rows", 0) or 0)
    criterion = build_job_criterion(job, model, teacher, num_fake)
    if teacher is not None and not (criterion is not None and criterion.needs_teacher_features) \
            and not job.train_cfg.augment and job.real_logits is None and not mixing:
        # un-augmented reals always look the same: one teacher pass instead of one per step
        job.real_logits = predict(teacher, job.train.images, device=device).numpy()
    task = job.task

    has_val = job.val is not None and len(job.val) > 0

    def validate_fn(m: torch.nn.Module) -> dict:
        return evaluate(m, job.val, task, device, prefix="val_", spread=True)

    def evaluate_fn(m: torch.nn.Module) -> dict:
        out = validate_fn(m) if has_val else {}
        if job.test is not None:
            out.update(evaluate(m, job.test, task, device, prefix="test_"))
        return out

    source = make_source(job, rank, world, fake_source, real_fraction, model=model, device=device)
    return train_steps(model, source, job.train_cfg, task, criterion=criterion, teacher=teacher, device=device,
                       evaluate_fn=evaluate_fn, validate_fn=validate_fn if has_val else None,
                       reporter=reporter, start_state=start_state, log_every=job.log_every,
                       is_main=rank == 0, rank=rank, checkpoint_every=job.checkpoint_every, progress=progress,
                       name=progress.name if progress is not None else "", mix=job.mix)
