"""Supervised model stages (teacher, NOKD, BLKD, function matching, perfect generator, DRE
features, cGAN-KD students): each declares what it reads and consumes; the runner trains the missing ones of a
pipeline step together in one executor run (`train/batched.py`).

KD methods (rayflow.kd): the cGAN-KD student (cgankd, kd=True) adds `student.kd`; a node with a
`method` parameter is a row of the KD-method table (`kd_table`): blkd(method=m) is "m" (real images,
online teacher, loss task + weight_m * L_m) and cgankd(kd=True, method=m) is "cGAN-KD + m". The
parameter only exists when set, so the other nodes keep their keys."""

from __future__ import annotations

from typing import Any

from rayflow.config import ConfigError, PipelineConfig, StageSpec
from rayflow.stages import takd, teacher_import
from rayflow.stages.graph import Node, StageDef, View, register

# the student's model and schedule, not student.kd: only the cGAN-KD student reads that
SPEC_READS = ("data", "student.model", "student.train")


def seeded(spec: StageSpec, seed: int, steps: int | None = None) -> StageSpec:
    train = {"seed": seed} if steps is None else {"seed": seed, "steps": steps}
    return spec.model_copy(update={"train": spec.train.model_copy(update=train)}, deep=True)


def _teacher(cfg: PipelineConfig, p: dict) -> dict[str, Node]:
    if p.get("method") == takd.TAKD:  # the takd row's student learns from the assistant
        return {"assistant": takd.assistant_node(p)}
    return {"teacher": Node.of("teacher")}


def _kd_fields(runner: Any, v: View, teacher: Any) -> dict:
    """Online-teacher Hinton KD (BLKD, perfect generator)."""
    return {**online_teacher(teacher), "kd_alpha": v["fake.kd_weight"], "temperature": v["fake.temperature"]}


def table_path(method: str) -> str:
    """The config path of a kd_table entry (graph.lookup_path picks list items by `method`)."""
    return f"kd_table.{method}"


def kd_methods_of(node: Node, v: View) -> list:
    """The KD method configs a student node adds to its loss."""
    p = node.p
    if takd.is_takd(node):  # a chain of stages, not a loss term
        return []
    if p.get("method"):
        return [v[table_path(p["method"])]]
    if node.stage == "cgankd" and p.get("kd"):
        return list(v["student.kd"])
    return []


def spec_of(node: Node, v: View) -> StageSpec:
    """The model + training schedule a supervised node trains."""
    p = node.p
    if node.stage == "teacher":
        return v["teacher"]
    if node.stage == "dre_features":
        return StageSpec(model=v["dre.feature_net"], train=v["dre.feature_train"])
    if node.stage == "assistant":
        return takd.assistant_spec(node, v)
    steps = v["baseline_steps"] if node.stage in ("nokd", "blkd") else None
    return seeded(StageSpec(model=v["student.model"], train=v["student.train"]), p["seed"], steps)


def online_teacher(art: Any) -> dict:
    """Job fields that run model artifact `art` online as the KD teacher (its own architecture, as its
    model.json says: a trained teacher's teacher.model, an imported one's adapter)."""
    from rayflow.checkpoint import load_weights
    from rayflow.config import ModelConfig
    from rayflow.models.io import WEIGHTS, read_arch

    arch = read_arch(art.path)
    return {"teacher": ModelConfig(name=arch["name"], kwargs=arch["kwargs"]),
            "teacher_state": load_weights(art.file(WEIGHTS))}


def fake_spec(runner: Any, view_art: Any, v: View, *, orig_labels: bool, use_logits: bool):
    """The fakes of view artifact `view_art` as a student streams them: conditioning or final labels,
    with the teacher's stored logits or without."""
    from rayflow.executors import FakeSpec
    from rayflow.stages.synth import view_files

    rows = view_files(runner, view_art)
    return FakeSpec(rows["file"], rows["sample_id"], rows["orig_label"] if orig_labels else rows["label"],
                    v["fake.real_fraction"], use_logits=use_logits)


def job_fields(runner: Any, node: Node, v: View, inputs: dict) -> tuple[dict, Any]:
    """(extra SupervisedJob fields, FakeSpec or None): computed only when the node is trained; a
    node with an `init` input (fake.init: nokd) starts from that model's weights."""
    fields, fake = _job_fields(runner, node, v, inputs)
    if "init" in inputs:
        from rayflow.checkpoint import load_weights
        from rayflow.models.io import WEIGHTS

        fields["init_state"] = load_weights(inputs["init"].file(WEIGHTS))
    return fields, fake


def _job_fields(runner: Any, node: Node, v: View, inputs: dict) -> tuple[dict, Any]:
    p = node.p
    if node.stage == "assistant" or takd.is_takd(node):
        return takd.job_fields(runner, node, v, inputs)
    if node.stage == "blkd" and p.get("method"):  # a kd_table row "m": task + weight_m * L_m, no Hinton term
        return {**online_teacher(inputs["teacher"]), "kd_alpha": 0.0, "kd_methods": kd_methods_of(node, v)}, None
    if node.stage == "blkd":
        return _kd_fields(runner, v, inputs["teacher"]), None
    if node.stage == "fm":  # BLKD's loss and teacher, on mixed views the teacher labels online
        return {**_kd_fields(runner, v, inputs["teacher"]), "mix": v["function_matching"]}, None
    if node.stage == "oracle":
        from rayflow.train.job import FakeData

        check_heldout(runner)
        held = runner.splits.heldout
        logits = runner.teacher_logits(inputs["teacher"], "heldout")
        import torch

        from rayflow.labels import as_space

        labels = as_space(runner.splits.num_classes).teacher_label(torch.from_numpy(logits)).numpy()  # argmax, or
        fake = FakeData(held.images, labels, logits, real_fraction=v["fake.real_fraction"])  # the prediction
        return {**_kd_fields(runner, v, inputs["teacher"]), "fake": fake}, None
    if node.stage == "cgankd":
        out: dict = {}
        if p["kd"]:  # fakes and reals carry stored teacher logits: no online teacher needed ...
            out = {"kd_alpha": v["fake.kd_weight"], "temperature": v["fake.temperature"],
                   "real_logits": runner.teacher_logits(inputs["teacher"], "train")}
            methods = kd_methods_of(node, v)
            if methods:  # ... unless KD methods want the teacher's features (and its weights online)
                out.update(kd_methods=methods, **online_teacher(inputs["teacher"]))
            if v["student.mix"].on:  # ... or the mixing lever wants each mixed view labelled online
                out.update(mix=v["student.mix"], **online_teacher(inputs["teacher"]))
            if v["student.select_fakes"].on:  # the useful-fakes lever: scored by the stored logits
                out["select_fakes"] = v["student.select_fakes"]
        return out, fake_spec(runner, inputs["fake"], v, orig_labels=p["orig_labels"], use_logits=p["kd"])
    return {}, None


def check_heldout(runner: Any) -> None:
    held = runner.splits.heldout
    if held is None or not len(held):
        raise ConfigError("the headroom diagnostic needs held-out real images: set data.heldout_per_class "
                          "(e.g. 1000)")


register(StageDef("teacher", reads=lambda p: ("data", "teacher"), kind="train", content=teacher_import.content,
                  doc="the teacher on the real (limited-label) train split, or imported from teacher.checkpoint"))
register(StageDef("nokd", reads=lambda p: (*SPEC_READS, "baseline_steps"), kind="train",
                  doc="the student on real images alone"))
def _blkd_reads(p: dict) -> tuple[str, ...]:
    if p.get("method") == takd.TAKD:  # the Hinton term, from the assistant
        return (*SPEC_READS, "baseline_steps", table_path(p["method"])) + takd.HINTON
    if p.get("method"):  # kd_table row "m": its method's settings instead of the Hinton term's
        return (*SPEC_READS, "baseline_steps", "teacher.model", table_path(p["method"]))
    return (*SPEC_READS, "baseline_steps", "teacher.model", "fake.kd_weight", "fake.temperature")


register(StageDef("blkd", reads=_blkd_reads, inputs=_teacher, kind="train",
                  doc="plain KD (Hinton) with the online teacher: the bar to clear; with method=m, the "
                      "student distilled by KD method m alone (a kd_table row)"))
register(StageDef("fm", reads=lambda p: (*SPEC_READS, "teacher.model", "fake.kd_weight", "fake.temperature",
                                         "function_matching"),
                  inputs=_teacher, kind="train",
                  doc="function matching (Beyer et al. 2022), the strong KD baseline: BLKD on MixUp / CutMix of the "
                      "real images, each mixed view labelled by the online teacher; the cGAN-KD student's schedule"))
register(StageDef("oracle", reads=lambda p: (*SPEC_READS, "teacher.model", "fake.real_fraction", "fake.kd_weight",
                                             "fake.temperature"),
                  inputs=_teacher, kind="train",
                  doc="'perfect generator': held-out real images labelled by the teacher, mixed in like fakes"))
register(StageDef("dre_features", reads=lambda p: ("data", "dre.feature_net", "dre.feature_train"), kind="train",
                  doc="a dedicated feature extractor for the density-ratio net"))


def _cgankd_reads(p: dict) -> tuple[str, ...]:
    kd: tuple[str, ...] = ()
    if p["kd"]:
        kd = ("fake.kd_weight", "fake.temperature",
              table_path(p["method"]) if p.get("method") else "student.kd")
        if p.get("method") != takd.TAKD:  # the levers (hashed only when on: graph._student_reads)
            kd += ("student.mix", "student.select_fakes")
    return (*SPEC_READS, "fake.real_fraction", "fake.init") + kd


def _cgankd_inputs(cfg: PipelineConfig, p: dict) -> dict[str, Node]:
    ins = {"fake": Node.of("view", subsample=p["subsample"], filter=p["filter"], relabel=p["relabel"])}
    if p.get("method") == takd.TAKD:
        ins["assistant"] = takd.assistant_node(p)
    elif p["kd"]:
        ins["teacher"] = Node.of("teacher")
    if cfg.fake.init == "nokd":
        ins["init"] = Node.of("nokd", seed=p["seed"])
    return ins


register(StageDef("cgankd", reads=_cgankd_reads, inputs=_cgankd_inputs, kind="train",
                  doc="a student on real + fake images (fixed real share per batch), hard labels, optionally + KD "
                      "(+ student.kd; with method=m: + kd_table's m instead, the row 'cGAN-KD + m')"))
