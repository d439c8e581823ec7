"""Runner.batch: one executor run for the missing students of several configs, each key trained once."""

from __future__ import annotations

from rayflow.config import load_config
from rayflow.stages.graph import Node
from rayflow.stages.runner import Runner


def test_a_student_asked_for_twice_in_one_batch_trains_once(tmp_path, monkeypatch):
    """`rayflow tune`'s final test asks for the chosen and the hand-set students in one batch; when the
    two settings are one (the one-SE rule keeps the hand-set), both rows get the one artifact."""
    sets = [f"output_dir={tmp_path}", "runtime.executor=local", "student.train.steps=20"]
    a = Runner(load_config("rayflow/configs/tiny.yaml", sets))
    b = a.with_config(load_config("rayflow/configs/tiny.yaml", sets))
    trained = []
    real = Runner._train
    monkeypatch.setattr(Runner, "_train", lambda self, todo: trained.append(len(todo)) or real(self, todo))
    arts = a.batch([(a, Node.of("nokd", seed=0)), (b, Node.of("nokd", seed=0)), (b, Node.of("nokd", seed=1))])
    assert trained == [2]  # seeds 0 and 1, once each, in one executor run
    assert arts[0] is arts[1] and arts[0].uri != arts[2].uri
    assert len(list((tmp_path / "artifacts" / "nokd").glob("nokd-*/_COMMITTED"))) == 2
