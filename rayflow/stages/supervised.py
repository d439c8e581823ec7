"""Teacher and student stages: SupervisedJobs run as cached artifacts, several per Ray Train run."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rayflow.artifacts import Artifact, cached_artifact, run_stage, stage_key
from rayflow.config import PipelineConfig, StageSpec
from rayflow.data.imageset import Splits
from rayflow.executors import TrainRequest, run_trainings
from rayflow.stages.models_io import save_model
from rayflow.train.job import SupervisedJob

log = logging.getLogger("rayflow")


@dataclass
class StageRequest:
    """A model stage to build unless cached.

    `job_fields` may be a callable, so costly inputs (teacher predictions) are only computed when
    the stage actually runs, not when it is found in the cache."""

    stage: str
    spec: StageSpec
    inputs: list[Artifact] = field(default_factory=list)
    key_extra: dict | None = None
    job_fields: dict | Callable[[], dict] | None = None
    fake: Any = None  # executors.FakeSpec

    def key_config(self, cfg: PipelineConfig) -> dict:
        return {"data": cfg.data.model_dump(mode="json"), "spec": self.spec.model_dump(mode="json"),
                **(self.key_extra or {})}


def train_stage(cfg: PipelineConfig, splits: Splits, stage: str, spec: StageSpec, *,
                inputs: list[Artifact] = (), key_extra: dict | None = None,
                job_fields: dict | Callable[[], dict] | None = None, fake=None) -> Artifact:
    """Trains `spec` on the real split (plus whatever `job_fields` adds) unless cached."""
    return train_stages(cfg, splits, [StageRequest(stage, spec, list(inputs), key_extra, job_fields, fake)])[0]


def train_stages(cfg: PipelineConfig, splits: Splits, requests: list[StageRequest]) -> list[Artifact]:
    """The artifacts of `requests`, in order; the missing ones are trained together in one Ray
    Train run (on a 2-core machine each separate fit() costs ~15-20 s of actor start-up, more
    than an MLP student's training)."""
    root = Path(cfg.output_dir) / "artifacts"
    keyed = [(r, r.key_config(cfg)) for r in requests]
    found = [cached_artifact(root, r.stage, k, r.inputs) for r, k in keyed]
    todo = [i for i, a in enumerate(found) if a is None]
    if not todo:
        return found
    c, h, _ = splits.shape
    # Ray Train runs are named after the artifact keys: a killed run of the same stages resumes
    # from its last checkpoint, and a changed config never picks up a stale one (the pipeline's
    # name is left out: renaming a config keeps its runs).
    names = [f"{keyed[i][0].stage}-{stage_key(keyed[i][0].stage, keyed[i][1], keyed[i][0].inputs)}"
             for i in todo]
    run_name = names[0] if len(names) == 1 else \
        f"batch-{hashlib.sha256(' '.join(names).encode()).hexdigest()[:12]}"
    jobs = []
    for i in todo:
        r = keyed[i][0]
        fields = r.job_fields() if callable(r.job_fields) else (r.job_fields or {})
        jobs.append(SupervisedJob(model=r.spec.model, train_cfg=r.spec.train, train=splits.train, val=splits.val,
                                  test=splits.test, **fields))
        log.info("[%s] training %s for %d steps on %s", r.stage, r.spec.model.name, r.spec.train.steps,
                 splits.summary())
    if len(todo) > 1:
        log.info("training %d models in one %s run (%s)", len(todo), cfg.runtime.executor, run_name)
    outs = run_trainings([TrainRequest(j, n, keyed[i][0].fake) for j, n, i in zip(jobs, names, todo)],
                         cfg.scaling, cfg.runtime, Path(cfg.output_dir) / "ray_storage", run_name)
    for i, job, (state, metrics) in zip(todo, jobs, outs):
        r, key_cfg = keyed[i]

        def build(out: Path, state=state, metrics=metrics, r=r, job=job) -> dict:
            save_model(out, state, r.spec.model, c, h, job.task.num_outputs)
            return metrics

        found[i] = run_stage(root, r.stage, key_cfg, r.inputs, build)
    return found
