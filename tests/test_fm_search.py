"""The function-matching baseline's own search (rayflow/tuning/fm_search.py): as many validation trials as
cGAN-KD's, the hand-set setting among them, spread over the configured ranges."""

from __future__ import annotations

import math

import pytest

from rayflow.config import load_config
from rayflow.tuning.fm_search import fm_candidates, fm_dims
from rayflow.tuning.search import search_name


def test_fm_gets_as_many_trials_as_the_search_with_the_hand_set_one_first():
    cfg = load_config("rayflow/configs/tiny.yaml", ["tune.trials=5", "tune.fm_alpha=[0.2,2]"])
    c = fm_candidates(cfg)
    assert fm_dims(cfg) == ["fm_alpha"] and len(c) == 5
    assert c[0] == {"fm_alpha": cfg.function_matching.alpha}  # the hand-set alpha
    alphas = [x["fm_alpha"] for x in c[1:]]
    assert alphas == sorted(alphas) and 0.2 < alphas[0] and alphas[-1] < 2  # inside the range ...
    steps = [math.log(b / a) for a, b in zip(alphas, alphas[1:])]
    assert max(steps) - min(steps) < 1e-3  # ... log-spaced


def test_fm_searches_the_kd_weight_when_cgankds_search_does():
    cfg = load_config("rayflow/configs/tiny.yaml", ["tune.trials=6", "tune.kd_weight=[0.2,0.8]"])
    c = fm_candidates(cfg)
    assert fm_dims(cfg) == ["fm_alpha", "kd_weight"] and len(c) == 6
    assert c[0]["kd_weight"] == cfg.fake.kd_weight
    weights = [x["kd_weight"] for x in c[1:]]
    assert len(set(weights)) == 5 and all(0.2 <= w <= 0.8 for w in weights)


def test_the_fm_range_is_checked_and_not_part_of_the_searchs_name():
    with pytest.raises(Exception, match="positive mixing alphas"):
        load_config("rayflow/configs/tiny.yaml", ["tune.fm_alpha=[0,1]"])
    from rayflow.stages.runner import Runner

    a = load_config("rayflow/configs/tiny.yaml", ["runtime.executor=local"])
    b = load_config("rayflow/configs/tiny.yaml", ["runtime.executor=local", "tune.fm_alpha=[0.5,1]"])
    assert search_name(a, Runner(a)) == search_name(b, Runner(b))  # a saved cGAN-KD search still resumes
