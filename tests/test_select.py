"""train.select=best_val: a run ends with the weights of its best validation score, chooses the same
step when resumed, never scores the test set before the end, and keeps every older cache key."""

import numpy as np
import pytest
import torch

from rayflow.cli import resolve_config
from rayflow.config import ConfigError, ModelConfig, TrainConfig, load_config
from rayflow.train.job import SupervisedJob, run_job
from rayflow.train.loop import train_steps
from rayflow.train.sources import ArraySource
from rayflow.train.tasks import Task


def _source(digits, task: Task) -> ArraySource:  # regression: the digit as a float target
    return ArraySource(digits.train.images, digits.train.labels, 32, seed=0, label_dtype=task.label_dtype)


def _run(digits, scores: dict[int, float], task: Task, start_state=None, steps=100):
    """train_steps on digits with a scripted validation score per evaluation step; returns (metrics,
    {step: weights reported}, {step: state reported}, number of test evaluations, model)."""
    cfg = TrainConfig(steps=steps, augment=[], eval_every=20, select="best_val", seed=0)
    from rayflow.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, image_size=digits.train.shape[1], num_outputs=task.num_outputs)
    src = _source(digits, task)
    at: dict[int, dict] = {}
    states: dict[int, dict] = {}
    start = int(start_state["step"]) if start_state is not None else 0
    vals, tests = [], []

    def reporter(m, s):
        if s is not None:
            at[m["step"]] = {k: v.clone() for k, v in s["model"].items()}
            states[m["step"]] = s

    def validate(model):
        vals.append(1)
        return {f"val_{task.metric}": scores[start + 20 * len(vals)]}

    def evaluate(model):
        tests.append(1)
        return {f"test_{task.metric}": 0.0}

    m = train_steps(model, src, cfg, task, evaluate_fn=evaluate, validate_fn=validate, reporter=reporter,
                    start_state=start_state)
    return m, at, states, len(tests), model


@pytest.mark.parametrize("task, scores, best", [
    (Task.of(10), {20: 50.0, 40: 80.0, 60: 70.0, 80: 80.0, 100: 60.0}, 40),   # accuracy: max, ties keep the first
    (Task.of(None), {20: 9.0, 40: 7.0, 60: 5.0, 80: 6.0, 100: 5.5}, 60),      # MAE: min
])
def test_run_ends_with_the_best_validation_step(digits, task, scores, best):
    m, at, _, n_test, model = _run(digits, scores, task)
    assert m["selected_step"] == best and m[f"selected_val_{task.metric}"] == scores[best]
    assert n_test == 1  # the test set is scored once, for the selected weights
    final = model.state_dict()
    assert all(torch.equal(final[k], at[100][k]) for k in final)  # the final state carries the selection ...
    # ... and equals what the model had at the chosen step: replay the run without selection up to it
    plain = TrainConfig(steps=100, augment=[], eval_every=20, seed=0)
    from rayflow.models import build_model

    torch.manual_seed(0)
    ref = build_model("mlp", in_channels=1, image_size=digits.train.shape[1], num_outputs=task.num_outputs)
    seen = {}
    train_steps(ref, _source(digits, task), plain, task,
                reporter=lambda mm, s: s is not None and seen.__setitem__(mm["step"], {k: v.clone() for k, v in s["model"].items()}))
    assert all(torch.equal(final[k], seen[best][k]) for k in final)
    assert not all(torch.equal(final[k], seen[100][k]) for k in final)


def test_resumed_run_selects_the_same_step(digits):
    scores = {20: 50.0, 40: 80.0, 60: 70.0, 80: 75.0, 100: 60.0}
    _, _, states, _, full = _run(digits, scores, Task.of(10))
    m, _, _, _, resumed = _run(digits, scores, Task.of(10), start_state=states[60])
    assert m["selected_step"] == 40
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in full.state_dict().items())


def test_real_run_picks_a_step_and_learns(digits):
    val = digits.test.subset(np.arange(100))
    job = SupervisedJob(model=ModelConfig(name="mlp"), val=val, test=digits.test, train=digits.train,
                        train_cfg=TrainConfig(steps=120, augment=[], eval_every=30, select="best_val", seed=0))
    m = run_job(job, job.build())
    assert m["selected_step"] in (30, 60, 90, 120) and m["test_acc"] > 85.0


def test_config_needs_a_split_and_evaluations():
    with pytest.raises(ConfigError, match="val_per_class"):
        load_config(resolve_config("tiny"), ["student.train.select=best_val", "student.train.eval_every=50"])
    with pytest.raises(ConfigError, match="eval_every"):
        load_config(resolve_config("tiny"), ["student.train.select=best_val", "data.val_per_class=5"])
    cfg = load_config(resolve_config("tiny"), ["student.train.select=best_val", "data.val_per_class=5", "student.train.eval_every=50"])
    assert cfg.student.train.model_dump()["select"] == "best_val"
    assert "select" not in TrainConfig().model_dump(mode="json")  # the default leaves every older key as it was


def test_results_table_names_the_kept_step():
    from rayflow.report.summary import format_results

    rows = [{"model": "NOKD", "seed": 0, "test_mae": 8.5, "step": 1500, "selected_step": 450, "wall_s": 3.0},
            {"model": "cGAN-KD", "seed": 0, "test_mae": 7.5, "step": 1500, "selected_step": 1350, "wall_s": 3.0}]
    text = format_results({"metric": "test_mae", "rows": rows})
    assert "step(val)" in text and " 450 " in text and " 1350 " in text
    plain = [{k: v for k, v in r.items() if k != "selected_step"} for r in rows]
    assert "step(val)" not in format_results({"metric": "test_mae", "rows": plain})  # no selection: no column
