"""The stage graph: every stage's key changes with exactly the config it (and its inputs) reads."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from rayflow import kd_table
from rayflow.ablation import ABLATION, CGAN_KD, plan
from rayflow.config import PipelineConfig, load_config
from rayflow.models import list_models
from rayflow.stages.graph import REGISTRY, Node, describe, node_inputs, node_key

# fields that choose a stage's inputs rather than being hashed as values
SHAPE = {"dre.feature_net.name": ("dre_features",), "fake.init": ("cgankd",)}


def _leaves(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        out += _leaves(v, path + ".") if isinstance(v, dict) and v else [path]
    return out


def _candidates(path: str, v):
    if path == "lever_rows":  # the levers' ablation rows: under configs of their own, no stage reads it
        return [["mix"]]
    if path in ("student.kd", "kd_table"):  # lists of KD method configs: one more method
        have = {m["method"] for m in v}
        return [v + [{"method": m}] for m in ("crd", "pkt", "rkd") if m not in have]
    if path.endswith(("model.name", "feature_net.name")):
        return [m for m in ("mlp", "cnn_small", "resnet8") if m != v]
    if isinstance(v, bool):
        return [not v]
    if isinstance(v, int):
        return [v + 1, v - 1, v * 2]
    if isinstance(v, float):
        return [v * 0.5 if v else 0.5, v + 0.01]
    if isinstance(v, str):
        return [v + "x", "cosine", "adam", "local", "best_fid", "last", "regression", "npz", "color", "nokd", "scratch", "random",
                "hard", "sinusoidal", "mixup", "entropy"]
    if isinstance(v, list):
        return [v + v[-1:] if v else [1], ["crop"], [0.5, 0.9], [v[0], v[-1] * 2] if v else [1]]
    if isinstance(v, dict):
        return [{"x": 1}]
    return ["x", 5, 0.5, [0.2, 0.8]]


def _perturbed(raw: dict, path: str) -> PipelineConfig | None:
    parts = path.split(".")
    node = raw
    for p in parts[:-1]:
        node = node[p]
    for cand in [c for c in _candidates(path, node[parts[-1]]) if c != node[parts[-1]]]:
        new = copy.deepcopy(raw)
        n = new
        for p in parts[:-1]:
            n = n[p]
        n[parts[-1]] = cand
        try:
            return PipelineConfig.model_validate(new)
        except ValidationError:
            continue
    return None


def _closure_reads(cfg: PipelineConfig, node: Node) -> set[str]:
    reads = set()
    for n, _ in describe(cfg, [node]):
        reads |= set(REGISTRY[n.stage].reads(n.p))
    return reads


def _under(path: str, reads: set[str]) -> bool:
    return any(path == r or path.startswith(r + ".") for r in reads)


CASES = [("tiny", []), ("own feature net, fine-tuned students, levers on",
                       ["dre.feature_net.name=resnet8", "fake.init=nokd", "synth.latent_scale=1.5",
                        "synth.truncation=2", "student.select_fakes={by: kl}"]),
         ("KD methods", ["student.model.name=cnn_small", "kd_table=[{method: blkd}, {method: at}, {method: crd}, {method: takd}]",
                         "student.kd={method: rkd, weight: 2}"])]


@pytest.mark.parametrize("name,overrides", CASES)
def test_each_stage_key_hashes_exactly_what_it_reads(name, overrides):
    cfg = load_config("rayflow/configs/tiny.yaml", overrides)
    raw = cfg.model_dump(mode="json")
    variants = plan(cfg)
    roots = [Node.of(s, seed=0) for s in ("nokd", "blkd", "fm", "oracle")] + [v.student(0) for v in variants] + \
        [n for _, _, n in kd_table.nodes(cfg, next(v for v in variants if v.kd))]
    nodes = [n for n, _ in describe(cfg, roots)]
    assert {n.stage for n in nodes} == set(REGISTRY) - ({"dre_features"} if cfg.dre.feature_net.name == "teacher"
                                                        else set()) - \
        (set() if any(m.method == "takd" for m in cfg.kd_table) else {"assistant"}) - \
        (set() if cfg.gan.label_input == "y2h" else {"y2h"})  # TAKD's chain; the CcGAN's fitted label input
    untested = []
    # sub-configs of other data sources: valid only with their data.name (covered by the "data" read)
    for path in [p for p in _leaves(raw) if p not in ("data.rotation", "data.chairs")]:
        other = _perturbed(raw, path)
        if other is None:
            untested.append(path)
            continue
        for n in nodes:
            shape_change = any(path == f and any(m.stage in stages for c in (cfg, other) for m, _ in describe(c, [n]))
                               for f, stages in SHAPE.items())
            expect = _under(path, _closure_reads(cfg, n)) or shape_change
            changed = node_key(cfg, n) != node_key(other, n)
            assert changed == expect, f"{n}: changing {path} {'changed' if changed else 'kept'} its key"
    if cfg.student.select_fakes.on:  # refused for a regression task; the other cases perturb data.task
        untested.remove("data.task")
    assert not untested, f"no valid perturbation for {untested}"


def test_rho_and_m_stay_out_of_stages_that_do_not_use_them():
    cfg = load_config("rayflow/configs/tiny.yaml")
    rho = load_config("rayflow/configs/tiny.yaml", ["filter.rho=0.5"])
    m = load_config("rayflow/configs/tiny.yaml", ["synth.m_per_class=77"])
    raw, dre_only = ABLATION[0].fake_set(), ABLATION[1].fake_set()
    for n in (Node.of("teacher"), Node.of("gan"), Node.of("dre"), raw, dre_only, ABLATION[0].student(0)):
        assert node_key(cfg, n) == node_key(rho, n), n
    for n in (Node.of("teacher"), Node.of("gan"), Node.of("dre"), Node.of("nokd", seed=0)):
        assert node_key(cfg, n) == node_key(m, n), n
    assert node_key(cfg, CGAN_KD.student(0)) != node_key(rho, CGAN_KD.student(0))
    assert node_key(cfg, CGAN_KD.student(0)) != node_key(m, CGAN_KD.student(0))


def test_kd_rows_add_nodes_without_rekeying_the_others():
    """student.kd re-keys the cGAN-KD student only; a kd_table method's settings re-key its own two
    rows only; the rows' `method` parameter exists only when set."""
    base = load_config("rayflow/configs/tiny.yaml", ["student.model.name=cnn_small",
                                                     "kd_table=[{method: blkd}, {method: at}, {method: crd}]"])
    kd = load_config("rayflow/configs/tiny.yaml", ["student.model.name=cnn_small", "student.kd=crd",
                                                   "kd_table=[{method: blkd}, {method: at}, {method: crd}]"])
    at = load_config("rayflow/configs/tiny.yaml", ["student.model.name=cnn_small",
                                                   "kd_table=[{method: blkd}, {method: at, weight: 10}, {method: crd}]"])
    variants = plan(base)
    cgan = next(v for v in variants if v.kd)
    table = {label: n for _, label, n in kd_table.nodes(base, cgan)}
    assert set(table) == {"at", "cGAN-KD + at", "crd", "cGAN-KD + crd"}  # blkd's rows are BLKD and cGAN-KD
    assert table["at"] == Node.of("blkd", seed=0, method="at") and dict(table["cGAN-KD + at"].params)["method"] == "at"
    others = [Node.of(s, seed=0) for s in ("nokd", "blkd", "fm", "oracle")] + [v.student(0) for v in variants]
    for n in others:
        assert node_key(base, n) == node_key(at, n), n
        assert (node_key(base, n) != node_key(kd, n)) == (n == cgan.student(0)), n
    for label, n in table.items():
        assert node_key(base, n) == node_key(kd, n), label  # the table's rows do not read student.kd
        assert (node_key(base, n) != node_key(at, n)) == label.endswith("at"), label
    assert "method" not in dict(cgan.student(0).params)


def test_ablation_is_planned_from_typed_variants():
    cfg = load_config("rayflow/configs/tiny.yaml")
    assert [v.label for v in plan(cfg)] == [v.label for v in ABLATION]
    off = load_config("rayflow/configs/tiny.yaml", ["filter.enabled=false"])
    assert "+ filtering (rho-quantile)" not in [v.label for v in plan(off)]  # would repeat "+ cDR-RS"
    no_dre = plan(cfg, dre_ok=False)
    assert "+ cDR-RS subsampling" not in [v.label for v in no_dre] and not any(v.subsample for v in no_dre)
    assert node_inputs(cfg, CGAN_KD.student(0))["fake"] == CGAN_KD.fake_set()
    only = load_config("rayflow/configs/tiny.yaml", ["ablation=false"])
    assert plan(only) == [CGAN_KD]  # cGAN-KD alone, the same node (and cache key) as in the ablation
    assert node_key(only, plan(only)[0].student(0)) == node_key(cfg, CGAN_KD.student(0))


def test_unknown_stage_is_named():
    with pytest.raises(KeyError, match="unknown stage 'nope'"):
        node_key(load_config(None), Node.of("nope"))
    assert "mlp" in list_models()


# the keys of tiny's nodes before the function-matching baseline and the mixing lever existed
# (`rayflow graph --config tiny`, when tiny's ratio net still had a feature net of its own and penalty
# 0.01, which `pinned_tiny` restores): a default-valued new field must not re-key any of them
PINNED = {Node.of("teacher"): "84db50183d11", Node.of("nokd", seed=0): "604bb4d62ce6",
          Node.of("blkd", seed=0): "19b3ca64100f", Node.of("oracle", seed=0): "6dab20bf89c5",
          Node.of("gan"): "61fd0b5e79e7", CGAN_KD.student(0): "38e3856a48dd", ABLATION[0].student(0): "e5f7457e4ea2"}


def pinned_tiny(overrides=()) -> PipelineConfig:
    return load_config("rayflow/configs/tiny.yaml", ["dre.feature_net.name=resnet8", "dre.penalty=0.01", *overrides])


def test_function_matching_and_mixing_lever_keep_existing_keys():
    """fm is a new node (keyed by function_matching); student.mix, off by default, is hashed only
    when on, and then re-keys the KD students alone."""
    cfg = pinned_tiny()
    assert {n: node_key(cfg, n) for n in PINNED} == PINNED
    fm = Node.of("fm", seed=0)
    assert node_inputs(cfg, fm) == {"teacher": Node.of("teacher")}
    alpha = pinned_tiny(["function_matching.alpha=0.4"])
    assert node_key(alpha, fm) != node_key(cfg, fm)
    assert all(node_key(alpha, n) == k for n, k in PINNED.items())
    lever = pinned_tiny(["student.mix={kind: both, alpha: 0.5}"])
    changed = {n for n, k in PINNED.items() if node_key(lever, n) != k}
    assert changed == {CGAN_KD.student(0)}
    assert node_key(lever, fm) == node_key(cfg, fm)
    assert "mix" not in cfg.student.model_dump() and lever.student.model_dump()["mix"]["kind"] == "both"


def test_select_fakes_and_latent_draws_keep_existing_keys():
    """student.select_fakes, synth.latent_scale and synth.truncation at their defaults re-key nothing
    (the keys of `rayflow graph --config tiny` before they existed, pools included)."""
    from rayflow.stages.synth import pool_node

    cfg = pinned_tiny()
    pools = {pool_node(False): "a8e7def1c963", pool_node(True): "ce77187bdf00", CGAN_KD.fake_set(): "cc906bb0a65a"}
    assert {n: node_key(cfg, n) for n in {**PINNED, **pools}} == {**PINNED, **pools}
    dump = cfg.model_dump()
    assert "select_fakes" not in dump["student"] and not {"latent_scale", "truncation"} & set(dump["synth"])
