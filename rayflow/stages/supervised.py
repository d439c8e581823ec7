"""Supervised model stages (teacher, NOKD, BLKD, perfect generator, DRE features, cGAN-KD
students): each declares what it reads and consumes; the runner trains the missing ones of a
pipeline step together in one executor run (`train/batched.py`)."""

from __future__ import annotations

from typing import Any

from rayflow.config import ConfigError, PipelineConfig, StageSpec
from rayflow.stages.graph import Node, StageDef, View, register

SPEC_READS = ("data", "student")


def seeded(spec: StageSpec, seed: int, steps: int | None = None) -> StageSpec:
    train = {"seed": seed} if steps is None else {"seed": seed, "steps": steps}
    return spec.model_copy(update={"train": spec.train.model_copy(update=train)}, deep=True)


def _teacher(cfg: PipelineConfig, p: dict) -> dict[str, Node]:
    return {"teacher": Node.of("teacher")}


def _kd_fields(runner: Any, v: View, teacher: Any) -> dict:
    """Online-teacher Hinton KD (BLKD, perfect generator)."""
    from rayflow.checkpoint import load_weights
    from rayflow.models.io import WEIGHTS

    return {"teacher": v["teacher.model"], "teacher_state": load_weights(teacher.file(WEIGHTS)),
            "kd_alpha": v["fake.kd_weight"], "temperature": v["fake.temperature"]}


def spec_of(node: Node, v: View) -> StageSpec:
    """The model + training schedule a supervised node trains."""
    p = node.p
    if node.stage == "teacher":
        return v["teacher"]
    if node.stage == "dre_features":
        return StageSpec(model=v["dre.feature_net"], train=v["dre.feature_train"])
    steps = v["baseline_steps"] if node.stage in ("nokd", "blkd") else None
    return seeded(v["student"], p["seed"], steps)


def job_fields(runner: Any, node: Node, v: View, inputs: dict) -> tuple[dict, Any]:
    """(extra SupervisedJob fields, FakeSpec or None): computed only when the node is trained."""
    from rayflow.executors import FakeSpec

    p = node.p
    if node.stage == "blkd":
        return _kd_fields(runner, v, inputs["teacher"]), None
    if node.stage == "oracle":
        from rayflow.train.job import FakeData

        check_heldout(runner)
        held = runner.splits.heldout
        logits = runner.teacher_logits(inputs["teacher"], "heldout")
        fake = FakeData(held.images, logits.argmax(1), logits, real_fraction=v["fake.real_fraction"])
        return {**_kd_fields(runner, v, inputs["teacher"]), "fake": fake}, None
    if node.stage == "cgankd":
        out: dict = {}
        if p["kd"]:  # fakes and reals carry stored teacher logits: no online teacher needed
            out = {"kd_alpha": v["fake.kd_weight"], "temperature": v["fake.temperature"],
                   "real_logits": runner.teacher_logits(inputs["teacher"], "train")}
        if "init" in inputs:
            from rayflow.checkpoint import load_weights
            from rayflow.models.io import WEIGHTS

            out["init_state"] = load_weights(inputs["init"].file(WEIGHTS))
        from rayflow.stages.synth import view_files

        rows = view_files(runner, inputs["fake"])
        spec = FakeSpec(rows["file"], rows["sample_id"], rows["orig_label"] if p["orig_labels"] else rows["label"],
                        v["fake.real_fraction"], use_logits=p["kd"])
        return out, spec
    return {}, None


def check_heldout(runner: Any) -> None:
    held = runner.splits.heldout
    if held is None or not len(held):
        raise ConfigError("the headroom diagnostic needs held-out real images: set data.heldout_per_class "
                          "(e.g. 1000)")


register(StageDef("teacher", reads=lambda p: ("data", "teacher"), kind="train",
                  doc="the teacher on the real (limited-label) train split"))
register(StageDef("nokd", reads=lambda p: (*SPEC_READS, "baseline_steps"), kind="train",
                  doc="the student on real images alone"))
register(StageDef("blkd", reads=lambda p: (*SPEC_READS, "baseline_steps", "teacher.model", "fake.kd_weight",
                                           "fake.temperature"),
                  inputs=_teacher, kind="train", doc="plain KD (Hinton) with the online teacher: the bar to clear"))
register(StageDef("oracle", reads=lambda p: (*SPEC_READS, "teacher.model", "fake.real_fraction", "fake.kd_weight",
                                             "fake.temperature"),
                  inputs=_teacher, kind="train",
                  doc="'perfect generator': held-out real images labelled by the teacher, mixed in like fakes"))
register(StageDef("dre_features", reads=lambda p: ("data", "dre.feature_net", "dre.feature_train"), kind="train",
                  doc="a dedicated feature extractor for the density-ratio net"))


def _cgankd_reads(p: dict) -> tuple[str, ...]:
    return (*SPEC_READS, "fake.real_fraction", "fake.init") + (("fake.kd_weight", "fake.temperature") if p["kd"]
                                                                else ())


def _cgankd_inputs(cfg: PipelineConfig, p: dict) -> dict[str, Node]:
    ins = {"fake": Node.of("view", subsample=p["subsample"], filter=p["filter"], relabel=p["relabel"])}
    if p["kd"]:
        ins["teacher"] = Node.of("teacher")
    if cfg.fake.init == "nokd":
        ins["init"] = Node.of("nokd", seed=p["seed"])
    return ins


register(StageDef("cgankd", reads=_cgankd_reads, inputs=_cgankd_inputs, kind="train",
                  doc="a student on real + fake images (fixed real share per batch), hard labels, optionally + KD"))
