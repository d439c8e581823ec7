"""TAKD (teacher-assistant KD, Mirzadeh et al. 2020) as a chain of cached stages, for `kd_table`.

teacher -> assistant -> student, every link the Hinton term (fake.kd_weight, fake.temperature):

- "takd": assistant(seed, fakes=False) is the BLKD student of the assistant's model (real images,
  online teacher, `baseline_steps`); the row's student, blkd(seed, method=takd), is distilled from
  it the same way.
- "cGAN-KD + takd": assistant(seed, fakes=True, <view>) is the cGAN-KD student of the assistant's
  model (real + processed fakes with the teacher's stored soft labels); the row's student,
  cgankd(kd=True, method=takd), trains on the same real + fake mix with the assistant online as its
  teacher (the fakes' stored logits are the teacher's, so they are not read).

Each assistant is an artifact of its own: both seeds' rows, and a re-run, reuse it.
"""

from __future__ import annotations

from typing import Any

from rayflow.config import ModelConfig, PipelineConfig, StageSpec
from rayflow.stages.graph import Node, StageDef, View, register

TAKD = "takd"
TABLE = "kd_table.takd"
HINTON = ("fake.kd_weight", "fake.temperature")


def assistant_node(p: dict) -> Node:
    """The assistant a takd row's student (blkd or cgankd node params `p`) learns from."""
    if "subsample" not in p:  # blkd(method=takd): real images only
        return Node.of("assistant", seed=p["seed"], fakes=False)
    return Node.of("assistant", seed=p["seed"], fakes=True, subsample=p["subsample"], filter=p["filter"],
                   relabel=p["relabel"])


def is_takd(node: Node) -> bool:
    return node.p.get("method") == TAKD


def _reads(p: dict) -> tuple[str, ...]:
    base = ("data", TABLE, "student.train", "teacher.model") + HINTON
    return base + (("fake.real_fraction",) if p["fakes"] else ("baseline_steps",))


def _inputs(cfg: PipelineConfig, p: dict) -> dict[str, Node]:
    ins = {"teacher": Node.of("teacher")}
    if p["fakes"]:
        ins["fake"] = Node.of("view", subsample=p["subsample"], filter=p["filter"], relabel=p["relabel"])
    return ins


def assistant_spec(node: Node, v: View) -> StageSpec:
    from rayflow.stages.supervised import seeded

    t = v[TABLE]
    spec = StageSpec(model=ModelConfig(name=t.assistant, kwargs=dict(t.assistant_kwargs)), train=v["student.train"])
    return seeded(spec, node.p["seed"], None if node.p["fakes"] else v["baseline_steps"])


def hinton(v: View) -> dict:
    return {"kd_alpha": v["fake.kd_weight"], "temperature": v["fake.temperature"]}


def job_fields(runner: Any, node: Node, v: View, inputs: dict) -> tuple[dict, Any]:
    """(SupervisedJob fields, FakeSpec or None) of an assistant or of a takd row's student; the
    cGAN-KD links train on the view's final (relabelled) labels."""
    from rayflow.stages.supervised import fake_spec, online_teacher

    if node.stage == "assistant":
        fields = {**online_teacher(inputs["teacher"]), **hinton(v)}
        if not node.p["fakes"]:
            return fields, None
        # like the cGAN-KD student: the teacher's stored soft labels on fakes, its logits on reals
        fields["real_logits"] = runner.teacher_logits(inputs["teacher"], "train")
        return fields, fake_spec(runner, inputs["fake"], v, orig_labels=False, use_logits=True)
    fields = {**online_teacher(inputs["assistant"]), **hinton(v)}  # the assistant is this student's teacher
    if node.stage == "blkd":
        return fields, None
    fields["real_logits"] = runner.teacher_logits(inputs["assistant"], "train")
    return fields, fake_spec(runner, inputs["fake"], v, orig_labels=False, use_logits=False)  # assistant online


register(StageDef("assistant", reads=_reads, inputs=_inputs, kind="train",
                  doc="TAKD's teacher assistant: distilled from the teacher (BLKD; with fakes=True as a "
                      "cGAN-KD student on real + fake), the teacher of the takd rows of kd_table"))
