"""Builds graph nodes: finds each in the artifact store by its key, or builds it (inputs first).

The runner owns what a run shares: the config, the store, the executor (the one place the
ray/local choice is made), the loaded data splits and teacher predictions. `artifact(node)` is all a
caller needs, the pipeline and a Tune trial alike, so both get the same cached artifact.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from rayflow.config import PipelineConfig
from rayflow.stages import supervised, teacher_import
from rayflow.stages.graph import (
    REGISTRY,
    Node,
    View,
    digest,
    key_doc,
    node_inputs,
    view,
)
from rayflow.store import ArtifactStore, StoredArtifact, open_store

log = logging.getLogger("rayflow")

Artifact = StoredArtifact


class Runner:
    def __init__(self, cfg: PipelineConfig, store: ArtifactStore | None = None):
        from rayflow.executors import get_executor
        from rayflow.tracking import spec_for

        self.cfg = cfg
        self.store = store or open_store(cfg.output_dir)
        self.store.check_writable()  # before any compute: a bad output location fails in one line
        self.executor = get_executor(cfg.runtime)
        self.tracking = spec_for(cfg.runtime, self.store, cfg.name)  # where stages write their metrics
        self._splits = None
        self._built: dict[Node, Artifact] = {}
        self._logits: dict[tuple[str, str], np.ndarray] = {}

    @property
    def splits(self):
        if self._splits is None:
            from rayflow.data import load_splits

            self._splits = load_splits(self.cfg.data, executor=self.executor)
            if self.cfg.teacher.checkpoint is not None:  # the user's teacher against the data, before any compute
                teacher_import.check(self.cfg.teacher.checkpoint, self._splits.shape, self._splits.num_classes)
            log.info("data: %s (%s)", self.cfg.data.name, self._splits.summary())
        return self._splits

    def teacher_logits(self, teacher: Artifact, split: str) -> np.ndarray:
        """Teacher predictions on a real split, once per run (every seed's student shares them)."""
        if (teacher.key, split) not in self._logits:
            from rayflow.models.io import load_model
            from rayflow.train.loop import predict

            images = getattr(self.splits, split).images
            self._logits[(teacher.key, split)] = predict(load_model(teacher.path), images).numpy()
        return self._logits[(teacher.key, split)]

    def key_of(self, node: Node) -> str:
        from rayflow.stages.graph import node_key

        return node_key(self.cfg, node)

    def ray_storage(self) -> tuple[str, Any]:
        return self.store.ray_storage()

    # -- building ----------------------------------------------------------------------------

    def artifact(self, node: Node) -> Artifact:
        return self.artifacts([node])[0]

    def artifacts(self, nodes: list[Node]) -> list[Artifact]:
        """The artifacts of `nodes`, in order; missing training stages among them train together."""
        return self.batch([(self, n) for n in nodes])

    def with_config(self, cfg: PipelineConfig) -> Runner:
        """A runner for `cfg` sharing this one's store, executor, data and teacher predictions (the
        configs of one search differ in knobs the data split does not depend on)."""
        other = Runner.__new__(Runner)
        other.__dict__.update(self.__dict__, cfg=cfg, _built={})
        return other

    def batch(self, pairs: list[tuple[Runner, Node]]) -> list[Artifact]:
        """Like `artifacts`, over nodes of several configs (a grid of trials): the missing training
        stages of all of them train together, in executor runs of up to `runtime.models_per_run` models."""
        todo: list[tuple[int, Runner, Node, View, dict, str, dict]] = []
        out: list[Artifact | None] = []
        reused: dict[str, list[Artifact]] = {}
        first: dict[tuple[str, str], int] = {}  # (stage, key) -> its first position among the nodes to train
        twins: list[tuple[int, Runner, Node, int]] = []
        self._inputs_together(pairs)
        for i, (r, node) in enumerate(pairs):
            if node in r._built:
                out.append(r._built[node])
                continue
            inputs = {role: r.artifact(n) for role, n in node_inputs(r.cfg, node).items()}
            doc = key_doc(r.cfg, node, {role: a.key for role, a in inputs.items()})
            key = digest(doc)
            found = self.store.lookup(node.stage, key)
            if found is not None:
                reused.setdefault(node.stage, []).append(found)
                r._built[node] = found
            elif (node.stage, key) in first:  # the same student asked for twice (e.g. chosen = hand-set)
                twins.append((i, r, node, first[node.stage, key]))
            elif REGISTRY[node.stage].kind == "train" and not teacher_import.applies(r.cfg, node):
                first[node.stage, key] = i
                todo.append((i, r, node, view(r.cfg, node), inputs, key, doc))
            else:
                r._built[node] = r._build_task(node, inputs, key, doc)
            out.append(r._built.get(node))
        _log_reused(reused)
        if todo:
            with self.store.holding([(node.stage, key) for _, _, node, _, _, key, _ in todo], on_wait=log.info):
                # a concurrent run may have committed some while we waited for their locks
                again = [(t, self.store.lookup(t[2].stage, t[5])) for t in todo]
                for (i, r, node, *_), found in again:
                    if found is not None:
                        r._built[node] = out[i] = found
                left = [t for t, found in again if found is None]
                # runtime.models_per_run at a time: each Ray Train run holds one SplitCoordinator (~200 MB)
                # per fake dataset until it ends (a 96-student grid in one run held 20 GB); each chunk's
                # students are committed as it ends
                per = self.cfg.runtime.models_per_run
                for k in range(0, len(left), per):
                    chunk = left[k:k + per]
                    for (i, r, node, *_), art in zip(chunk, self._train([t[1:] for t in chunk])):
                        r._built[node] = out[i] = art
        for i, r, node, j in twins:
            r._built[node] = out[i] = out[j]
        return out  # type: ignore[return-value]

    def _inputs_together(self, pairs: list[tuple[Runner, Node]]) -> None:
        """Builds the inputs of several nodes in one `batch` before the nodes themselves: missing
        training stages among them (TAKD's assistants of every seed, the NOKD students that cGAN-KD
        students fine-tune from) share one executor run instead of one fit each."""
        if len(pairs) < 2:
            return
        seen: set[tuple[int, Node]] = set()
        wanted: list[tuple[Runner, Node]] = []
        for r, node in pairs:
            if node in r._built:
                continue
            for n in node_inputs(r.cfg, node).values():
                if n not in r._built and (id(r), n) not in seen:
                    seen.add((id(r), n))
                    wanted.append((r, n))
        if len(wanted) > 1:
            self.batch(wanted)

    def _check_gpus(self) -> None:
        """GPUs asked for but absent fail before the first build (a cached run, `rayflow graph`, need none)."""
        from rayflow.executors import check_gpu_request

        check_gpu_request(self.cfg)

    def _build_task(self, node: Node, inputs: dict, key: str, doc: dict) -> Artifact:
        self._check_gpus()
        # a training stage built as a task: the teacher imported from teacher.checkpoint
        build = teacher_import.build if teacher_import.applies(self.cfg, node) else REGISTRY[node.stage].build
        v = view(self.cfg, node)
        return self.store.build(node.stage, key, lambda out: build(self, node, v, inputs, Path(out), key),
                                config_doc=doc, on_wait=log.info)

    def _train(self, todo: list[tuple[Runner, Node, View, dict, str, dict]]) -> list[Artifact]:
        """Trains the missing supervised nodes in one executor run named after their keys (a killed
        run of the same nodes resumes; a changed config never picks up a stale one)."""
        from rayflow.checkpoint import save_weights
        from rayflow.models.io import KD_WEIGHTS, save_model
        from rayflow.train.batched import split_criterion, train_jobs
        from rayflow.train.job import SupervisedJob

        self._check_gpus()
        s = self.splits
        names = [f"{node.stage}-{key}" for _, node, _, _, key, _ in todo]
        run_name = names[0] if len(names) == 1 else \
            f"batch-{hashlib.sha256(' '.join(names).encode()).hexdigest()[:12]}"
        jobs, fakes = [], []
        checked: set[int] = set()
        for r, node, v, inputs, _, _ in todo:
            if id(r.cfg) not in checked and supervised.kd_methods_of(node, v):
                from rayflow.kd_table import preflight  # a KD method the models cannot use: one line, now

                preflight(r.cfg, s.shape, s.num_classes)
                checked.add(id(r.cfg))
            spec = supervised.spec_of(node, v)
            fields, fake = supervised.job_fields(r, node, v, inputs)
            # a validation-mode run (choosing rho and M) never looks at the test set
            test = None if r.cfg.data.val_fraction else s.test
            jobs.append(SupervisedJob(model=spec.model, train_cfg=spec.train, train=s.train, val=s.val, test=test,
                                      checkpoint_every=r.cfg.runtime.checkpoint_every, **fields))
            fakes.append(fake)
            log.log(logging.INFO if len(todo) == 1 else logging.DEBUG, "[%s] training %s for %d steps on %s",
                    node.stage, spec.model.name, spec.train.steps, s.summary())
        if len(todo) > 1:
            log.info("training %d models (%s) on %s in one %s run (%s)", len(todo),
                     _batch_summary([(node.stage, job.model.name, job.train_cfg.steps)
                                     for (_, node, *_), job in zip(todo, jobs)]),
                     s.summary(), self.executor.name, run_name)
        outs = train_jobs(self.executor, jobs, names=names, run_name=run_name, scaling=self.cfg.scaling,
                          storage=self.ray_storage(), fakes=fakes, tracking=getattr(self, "tracking", None))
        c, h, _ = s.shape
        arts = []
        for (_, node, _, _, key, doc), job, (state, metrics) in zip(todo, jobs, outs):
            def build(out: Path, state=state, metrics=metrics, job=job) -> dict:
                weights, kd_state = split_criterion(state)
                save_model(out, weights, job.model, c, h, job.task.num_outputs)
                if kd_state:  # the KD methods' adapters / CRD bank: resumable record, not needed to predict
                    save_weights(kd_state, out / KD_WEIGHTS)
                return metrics

            arts.append(self.store.build(node.stage, key, build, config_doc=doc, on_wait=log.info,
                                         announce=len(todo) == 1))
        if len(todo) > 1:
            parents = sorted({a.uri.rstrip("/").rsplit("/", 1)[0] for a in arts})
            log.info("wrote %d models under %s", len(arts), ", ".join(parents))
        return arts


def _log_reused(reused: dict[str, list[Artifact]]) -> None:
    """One line per stage: the artifact, or for a batch (the students of a grid) their count."""
    for stage, arts in reused.items():
        if len(arts) == 1:
            log.info("[%s] reusing cached artifact %s", stage, arts[0].uri)
            continue
        for a in arts:
            log.debug("[%s] reusing cached artifact %s", stage, a.uri)
        parents = sorted({a.uri.rstrip("/").rsplit("/", 1)[0] for a in arts})
        log.info("[%s] reusing %d cached artifacts under %s", stage, len(arts), ", ".join(parents))


def _batch_summary(items: list[tuple[str, str, int]]) -> str:
    """`nokd, blkd, oracle: mlp, 150 steps` / `cgankd ×5: mlp, 150 steps` from (stage, model, steps)
    per job: one line for a batch instead of one per model."""
    groups: dict[tuple[str, int], dict[str, int]] = {}
    for stage, model, steps in items:
        stages = groups.setdefault((model, steps), {})
        stages[stage] = stages.get(stage, 0) + 1
    return "; ".join(", ".join(st if n == 1 else f"{st} ×{n}" for st, n in stages.items())
                     + f": {model}, {steps} steps" for (model, steps), stages in groups.items())
