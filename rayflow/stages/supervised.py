"""Teacher, NOKD student and BLKD student stages: a SupervisedJob run as a cached artifact."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from rayflow.artifacts import Artifact, run_stage, stage_key
from rayflow.config import PipelineConfig, StageSpec
from rayflow.data.imageset import Splits
from rayflow.executors import run_training
from rayflow.stages.models_io import save_model
from rayflow.train.job import SupervisedJob

log = logging.getLogger("rayflow")


def train_stage(cfg: PipelineConfig, splits: Splits, stage: str, spec: StageSpec, *,
                inputs: list[Artifact] = (), key_extra: dict | None = None,
                job_fields: dict | Callable[[], dict] | None = None, fake=None) -> Artifact:
    """Trains `spec` on the real split (plus whatever `job_fields` adds) unless cached.

    `job_fields` may be a callable, so costly inputs (teacher predictions) are only computed when
    the stage actually runs, not when it is found in the cache."""
    key_cfg = {"data": cfg.data.model_dump(mode="json"), "spec": spec.model_dump(mode="json"), **(key_extra or {})}
    c, h, _ = splits.shape
    # The Ray Train run is named after the artifact key: a killed run of the same stage resumes
    # from its last checkpoint, and a changed config never picks up a stale one.
    run_name = f"{cfg.name}-{stage}-{stage_key(stage, key_cfg, list(inputs))}"

    def build(out: Path) -> dict:
        fields = job_fields() if callable(job_fields) else (job_fields or {})
        job = SupervisedJob(model=spec.model, train_cfg=spec.train, train=splits.train, val=splits.val,
                            test=splits.test, **fields)
        log.info("[%s] training %s for %d steps on %s", stage, spec.model.name, spec.train.steps, splits.summary())
        state, metrics = run_training(job, cfg.scaling, cfg.runtime, Path(cfg.output_dir) / "ray_storage",
                                      run_name, fake=fake)
        save_model(out, state, spec.model, c, h, job.task.num_outputs)
        return metrics

    return run_stage(Path(cfg.output_dir) / "artifacts", stage, key_cfg, list(inputs), build)
