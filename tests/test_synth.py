"""Synthetic-data stage: UDFs on dict batches, local executor, filter/relabel, resume, Ray parity.

Tiny random-init nets on 1x16x16 images with 3 classes keep every local run well under a second.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rayflow.config import ModelConfig, SynthConfig
from rayflow.dre import RatioMLP
from rayflow.executors import LocalExecutor, PoolError
from rayflow.models import build_model
from rayflow.models.io import save_model
from rayflow.synth import (
    BurninStats,
    Generate,
    GeneratorSpec,
    Label,
    Manifest,
    Score,
    SynthError,
    SynthInputs,
    SynthOptions,
    compute_burnin,
    plan_round,
    read_fake_set,
    read_shard,
    run_synth,
)
from rayflow.synth.io import META_KEY, write_shards
from rayflow.synth.udfs import derive_seed

LOCAL = LocalExecutor()


def ray_executor():
    from rayflow.config import RuntimeConfig
    from rayflow.executors import get_executor

    return get_executor(RuntimeConfig(executor="ray"))

C, SIZE = 3, 16
QUIET = SynthOptions(progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_nets")
    torch.manual_seed(0)
    teacher = build_model("cnn_small", in_channels=1, image_size=SIZE, num_outputs=C, widths=(8, 8, 8))
    save_model(root / "teacher", teacher.state_dict(), ModelConfig(name="cnn_small", kwargs={"widths": [8, 8, 8]}),
               1, SIZE, C)
    feat = build_model("mlp", in_channels=1, image_size=SIZE, num_outputs=C, hidden=[16])
    save_model(root / "features", feat.state_dict(), ModelConfig(name="mlp", kwargs={"hidden": [16]}), 1, SIZE, C)
    ratio = RatioMLP(16, C, hidden=[16, 16])
    torch.nn.init.constant_(ratio.body[-2].bias, 1.0)  # positive ratios from a random init
    spec = GeneratorSpec(C, z_dim=8, base_channels=8, out_channels=1, image_size=SIZE)
    return SynthInputs(num_classes=C, generator=spec, generator_state=spec().state_dict(),
                       teacher_dir=str(root / "teacher"), feature_dir=str(root / "features"),
                       ratio_state=ratio.state_dict(), ratio_hidden=(16, 16), rho=0.7, dre_burnin=100,
                       filter_burnin=40)


def cfg_(**kw) -> SynthConfig:
    return SynthConfig(**{"m_per_class": 40, "batch_size": 16, "shard_size": 32, "seed": 3, **kw})


def spec_of(out_dir, m_per_class, orig_labels=False, **kw):
    """A FakeSpec over the class-balanced rows of a synth run (what a view of it selects)."""
    from rayflow.executors import FakeSpec

    files, ids, labels = [], [], []
    for sid, rel, take in Manifest.load(out_dir).selection(m_per_class):
        rows = read_shard(out_dir / rel)
        files += [str(out_dir / rel)] * take
        ids.append(rows["sample_id"][:take])
        labels.append(rows["orig_label" if orig_labels else "label"][:take])
    return FakeSpec(np.array(files, dtype=object), np.concatenate(ids), np.concatenate(labels), **kw)


def shard_tables(out_dir) -> dict[str, pa.Table]:
    return {p.name: pq.read_table(p) for p in sorted((out_dir / "shards").glob("*.parquet"))}


# ------------------------------------------------------------------------------- UDFs


def test_udfs_on_dict_batches(nets, tmp_path):
    cfg = cfg_()
    burnin = compute_burnin(nets, cfg)
    gen = Generate(nets.generator, nets.generator_state, batch_size=cfg.batch_size)
    score = Score(nets.feature_dir, nets.ratio_state, num_classes=C, ratio_hidden=(16, 16),
                  max_ratio=burnin.max_ratio, seed=cfg.seed, batch_size=cfg.batch_size)
    label = Label(nets.teacher_dir, num_classes=C, cutoffs=burnin.cutoffs, relabel=True, batch_size=cfg.batch_size)
    items = {"shard_id": np.array([4, 7]), "label": np.array([2, 0]), "n_draws": np.array([37, 20]),
             "seed": np.array([derive_seed(1, 4), derive_seed(1, 7)])}
    b = gen(items)
    assert {k: (v.dtype, v.shape) for k, v in b.items()} == {
        "shard_id": (np.int64, (57,)), "draw": (np.int64, (57,)), "n_draws": (np.int64, (57,)),
        "orig_label": (np.int64, (57,)), "image": (np.uint8, (57, 1, SIZE, SIZE))}
    assert b["orig_label"].tolist() == [2] * 37 + [0] * 20 and b["draw"][:37].tolist() == list(range(37))
    s = score(b)
    assert s["ratio"].dtype == np.float32 and s["accepted"].dtype == bool and (s["ratio"] >= 0).all()
    assert 0 < s["accepted"].sum() < 57  # the rejection sampler rejects some, not all
    lab = label(s)
    assert lab["teacher_logits"].dtype == np.float32 and lab["teacher_logits"].shape == (57, C)
    assert lab["teacher_ce"].dtype == np.float32 and lab["keep"].dtype == bool and lab["label"].dtype == np.int64
    acc = lab["accepted"]
    assert np.isnan(lab["teacher_ce"][~acc]).all() and not lab["keep"][~acc].any()
    assert np.isfinite(lab["teacher_logits"][acc]).all()
    assert (lab["label"][acc] == lab["teacher_logits"][acc].argmax(1)).all()

    # a shuffled batch, or each shard alone, gives the same numbers (no dependence on block layout)
    perm = np.random.default_rng(0).permutation(57)
    shuffled = label(score({k: v[perm] for k, v in b.items()}))
    alone = [label(score(gen({k: v[i:i + 1] for k, v in items.items()}))) for i in range(2)]
    for k in ("ratio", "accepted", "teacher_ce", "keep", "label"):
        np.testing.assert_array_equal(shuffled[k], lab[k])
        np.testing.assert_array_equal(np.concatenate([a[k] for a in alone]), lab[k])

    summary = write_shards(lab, out_dir=str(tmp_path), image_shape=(1, SIZE, SIZE), num_classes=C)
    assert summary["shard_id"].tolist() == [4, 7] and summary["n_draws"].tolist() == [37, 20]
    assert summary["n_kept"].tolist() == [int(lab["keep"][:37].sum()), int(lab["keep"][37:].sum())]
    assert summary["label_counts"].shape == (2, C) and summary["label_counts"].sum() == lab["keep"].sum()
    got = read_shard(tmp_path / summary["file"][0])
    np.testing.assert_array_equal(got["image"], b["image"][:37][lab["keep"][:37]])


def test_udfs_refuse_a_split_shard(nets):
    gen = Generate(nets.generator, nets.generator_state, batch_size=16)
    label = Label(nets.teacher_dir, num_classes=C, batch_size=16)
    b = gen({"shard_id": np.array([0]), "label": np.array([1]), "n_draws": np.array([10]), "seed": np.array([5])})
    with pytest.raises(SynthError, match="shard 0 .*incomplete.*6 of 10"):
        label({k: v[:6] for k, v in b.items()})


# ------------------------------------------------------------------------------- local executor


def test_local_run_schema_and_exact_balance(nets, tmp_path):
    cfg = cfg_()
    m = run_synth(nets, cfg, tmp_path, LOCAL, options=QUIET)
    assert all(k >= cfg.m_per_class for k in m["kept_per_class"])
    assert m["shards_run"] == m["shards"] and m["shards_skipped"] == 0
    man = Manifest.load(tmp_path)
    assert m["kept_per_class"] == man.per_class("n_kept").tolist()
    assert all(0 < r <= 1 for r in m["subsample_accept_per_class"] + m["filter_keep_per_class"])

    schema = pq.read_schema(next((tmp_path / "shards").glob("*.parquet")))
    assert {f.name: f.type for f in schema} == {
        "shard_id": pa.int64(), "row": pa.int64(), "draw": pa.int64(), "image": pa.list_(pa.uint8(), SIZE * SIZE),
        "label": pa.int64(), "orig_label": pa.int64(), "ratio": pa.float32(), "teacher_ce": pa.float32(),
        "teacher_logits": pa.list_(pa.float32(), C), "accepted": pa.bool_(), "sample_id": pa.int64()}
    meta = json.loads(schema.metadata[META_KEY])
    assert meta["image_shape"] == [1, SIZE, SIZE] and meta["num_classes"] == C

    fs = read_fake_set(tmp_path)
    n = C * cfg.m_per_class
    assert fs.images.shape == (n, 1, SIZE, SIZE) and fs.images.dtype == np.uint8
    assert fs.teacher_logits.shape == (n, C) and fs.labels.dtype == np.int64 and fs.ratio.dtype == np.float32
    assert np.bincount(fs.orig_labels, minlength=C).tolist() == [cfg.m_per_class] * C
    # truncation keeps the first rows by (shard_id, row): a smaller m is a prefix per class
    small = read_fake_set(tmp_path, m_per_class=10)
    for c in range(C):
        np.testing.assert_array_equal(small.images[small.orig_labels == c], fs.images[fs.orig_labels == c][:10])
    with pytest.raises(SynthError, match="have only"):
        read_fake_set(tmp_path, m_per_class=10_000)


def test_filter_drops_above_cutoff_and_relabels(nets, tmp_path):
    m = run_synth(nets, cfg_(), tmp_path, LOCAL, options=QUIET)
    cutoffs = np.array(m["burnin"]["cutoffs"])
    rows = [read_shard(p) for p in sorted((tmp_path / "shards").glob("*.parquet"))]
    ce = np.concatenate([r["teacher_ce"] for r in rows])
    orig = np.concatenate([r["orig_label"] for r in rows])
    logits = np.concatenate([r["teacher_logits"] for r in rows])
    assert (ce <= cutoffs[orig]).all()
    assert (np.concatenate([r["label"] for r in rows]) == logits.argmax(1)).all()
    assert (orig != logits.argmax(1)).any()  # relabelling changed something (random teacher)
    assert sum(m["accepted_per_class"]) > sum(m["kept_per_class"])  # the filter dropped samples
    assert 0.5 < np.mean(m["filter_keep_per_class"]) < 0.9  # about rho = 0.7
    # the cutoffs are rho-quantiles of CEs of *subsampled* burn-in draws
    assert m["burnin"] == compute_burnin(nets, cfg_()).to_dict()


def test_flags_off_skip_nets(nets, tmp_path):
    plain = dataclasses.replace(nets, subsample=False, filter=False, relabel=False, soft_labels=False,
                                teacher_dir=None, feature_dir=None, ratio_state=None)
    m = run_synth(plain, cfg_(m_per_class=20), tmp_path, LOCAL, options=QUIET)
    assert m["drawn_per_class"] == m["kept_per_class"] and m["burnin"]["max_ratio"] is None
    fs = read_fake_set(tmp_path)
    assert np.isnan(fs.ratio).all() and np.isnan(fs.teacher_logits).all()
    np.testing.assert_array_equal(fs.labels, fs.orig_labels)


def test_inputs_are_validated(nets, tmp_path):
    with pytest.raises(SynthError, match="teacher_dir"):
        run_synth(dataclasses.replace(nets, teacher_dir=None), cfg_(), tmp_path, options=QUIET)
    with pytest.raises(SynthError, match="feature_dir and ratio_state"):
        run_synth(dataclasses.replace(nets, ratio_state=None), cfg_(), tmp_path, options=QUIET)
    with pytest.raises(SynthError, match="rho"):
        run_synth(dataclasses.replace(nets, rho=1.5), cfg_(), tmp_path, options=QUIET)
    assert not (tmp_path / "manifest.json").exists()


def test_plan_round_covers_the_deficit():
    kept, drawn = np.array([0, 30, 50]), np.array([0, 60, 80])
    specs = plan_round(kept, drawn, np.array([0.5, 0.5, 0.5]), 50, 16, first_id=7, seed=0)
    assert [s.shard_id for s in specs] == list(range(7, 7 + len(specs)))
    per_class = np.bincount([s.label for s in specs], weights=[s.n_draws for s in specs], minlength=3)
    assert per_class[2] == 0 and per_class[0] >= 50 / 0.5 and per_class[1] >= 20 / 0.5
    assert max(s.n_draws for s in specs) <= 16 and specs[0].label == 0 and specs[1].label == 1  # interleaved
    assert len({s.seed for s in specs}) == len(specs)


# ------------------------------------------------------------------------------- resume


def test_resume_skips_finished_shards_and_matches(nets, tmp_path):
    # an optimistic prior (every draw kept) forces a second round, so the resume crosses rounds
    cfg = cfg_()
    b = compute_burnin(nets, cfg)
    inputs = dataclasses.replace(nets, burnin=BurninStats(max_ratio=b.max_ratio, subsample_rate=[1.0] * C,
                                                          cutoffs=b.cutoffs, filter_rate=[1.0] * C))
    ref = run_synth(inputs, cfg, tmp_path / "ref", LOCAL, options=QUIET)
    assert ref["rounds"] >= 2

    out = tmp_path / "resumed"
    seen = []

    def kill_after_4(rec):
        seen.append(rec["shard_id"])
        if len(seen) == 4:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run_synth(inputs, cfg, out, LOCAL, options=QUIET, on_shard=kill_after_4)
    assert sorted(Manifest.load(out).records) == sorted(seen)
    (out / "shards" / ".shard-000009.parquet.xyz.tmp").write_bytes(b"half a shard")  # left by a kill
    # a finished shard whose file is lost is regenerated: delete one file and its manifest entry
    lost = seen[1]
    data = json.loads((out / "manifest.json").read_text())
    os.remove(out / data["shards"].pop(str(lost))["file"])
    (out / "manifest.json").write_text(json.dumps(data))
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.parquet")}

    m = run_synth(inputs, cfg, out, LOCAL, options=QUIET)
    assert m["shards_skipped"] == 3 and m["shards_run"] == ref["shards"] - 3
    after = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.parquet")}
    assert all(after[name] == t for name, t in before.items())  # finished shards were not rewritten
    assert not list((out / "shards").glob(".*.tmp"))
    ref_tables, tables = shard_tables(tmp_path / "ref"), shard_tables(out)
    assert ref_tables.keys() == tables.keys() and all(tables[k].equals(ref_tables[k]) for k in tables)
    assert Manifest.load(out).records == Manifest.load(tmp_path / "ref").records
    for a, b_ in zip(read_fake_set(out), read_fake_set(tmp_path / "ref")):
        np.testing.assert_array_equal(a, b_)
    # a finished run is not redone, and a directory of another run is refused
    assert run_synth(inputs, cfg, out, LOCAL, options=QUIET)["shards_run"] == 0
    with pytest.raises(SynthError, match="different synthetic-data run"):
        run_synth(inputs, cfg_(seed=4), out, LOCAL, options=QUIET)


def test_shipped_shards_are_the_written_ones(nets, tmp_path):
    """`ship_shards` (an object store: actors return each shard's bytes, the driver writes them) writes
    byte-identical files and records, and resumes like direct writes."""
    cfg = cfg_()
    direct = run_synth(nets, cfg, tmp_path / "direct", LOCAL, options=QUIET)
    shipped = dataclasses.replace(QUIET, ship_shards=True)
    seen = []

    def kill_after_2(rec):
        seen.append(rec["shard_id"])
        assert (tmp_path / "shipped" / rec["file"]).is_file()  # written before it is recorded
        if len(seen) == 2:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run_synth(nets, cfg, tmp_path / "shipped", LOCAL, options=shipped, on_shard=kill_after_2)
    m = run_synth(nets, cfg, tmp_path / "shipped", LOCAL, options=shipped)
    assert m["shards_skipped"] == 2 and m["shards_run"] == direct["shards"] - 2
    files = {p.name: p.read_bytes() for p in sorted((tmp_path / "direct" / "shards").glob("*.parquet"))}
    assert files == {p.name: p.read_bytes() for p in sorted((tmp_path / "shipped" / "shards").glob("*.parquet"))}
    assert Manifest.load(tmp_path / "shipped").records == Manifest.load(tmp_path / "direct").records


# ------------------------------------------------------------------------------- Ray


@pytest.mark.slow
@pytest.mark.ray
def test_ray_data_matches_local(ray_session, nets, tmp_path):
    from rayflow.executors import ray_fake_dataset as fake_dataset

    cfg = cfg_(m_per_class=50, shard_size=64)
    staged = dataclasses.replace(QUIET, fused=False, gen_actors=2)
    # 3 pools x 1 CPU cannot all hold an actor on 2 CPUs: refused up front instead of hanging
    with pytest.raises(PoolError, match="needs 3 CPU"):
        run_synth(nets, cfg, tmp_path / "toobig", ray_executor(),
                  options=dataclasses.replace(staged, cpus_per_actor=1.0))
    local = run_synth(nets, cfg, tmp_path / "local", LOCAL, options=QUIET)
    # fused (one pool, default) and staged (a pool per step) pipelines write the local executor's shards
    for name, opts in (("ray", dataclasses.replace(QUIET, gen_actors=2)), ("ray-staged", staged),
                       ("ray-shipped", dataclasses.replace(QUIET, gen_actors=2, ship_shards=True))):
        ray_m = run_synth(nets, cfg, tmp_path / name, ray_executor(), options=opts)
        assert ray_m["executor"] == "ray" and ray_m["kept_per_class"] == local["kept_per_class"]
        a, b = shard_tables(tmp_path / "local"), shard_tables(tmp_path / name)
        assert a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)
        assert Manifest.load(tmp_path / name).records == Manifest.load(tmp_path / "local").records

    fs = read_fake_set(tmp_path / "ray")
    rows = fake_dataset(spec_of(tmp_path / "ray", 50)).take_all()
    rows.sort(key=lambda r: (r["shard_id"], r["row"]))
    np.testing.assert_array_equal(np.stack([r["image"] for r in rows]), fs.images)
    np.testing.assert_array_equal(np.stack([r["teacher_logits"] for r in rows]), fs.teacher_logits)
    np.testing.assert_array_equal([r["label"] for r in rows], fs.labels)


@pytest.mark.ray
def test_pool_actors_a_finished_pipeline_leaves_alive_are_reaped(ray_session):
    """A pool actor that outlives its pipeline (a handle still held somewhere) is ended, so the next
    Ray Train run that needs every CPU gets them; pool actors alive before the pipeline are kept."""
    from rayflow.executors import ray_data

    ray = ray_session

    def actor():
        a = ray.remote(num_cpus=0.5)(type("MapWorker(Lingering)", (), {"ping": lambda self: 1})).remote()
        ray.get(a.ping.remote())
        return a

    older = actor()
    before = ray_data._pool_actors()
    lingering = actor()  # noqa: F841 -- the held handle keeps it alive
    assert len(ray_data._pool_actors() - before) == 1
    ray_data._reap(before, wait_s=0.5)
    deadline = time.monotonic() + 10
    while ray_data._pool_actors() != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray_data._pool_actors() == before
    assert ray.get(older.ping.remote()) == 1
    ray.kill(older)


@pytest.mark.slow
def test_students_on_fake_sets_train_in_one_ray_run(ray_session, nets, digits, tmp_path):
    """The pipeline's batched student step on Ray: Parquet fake sets ingested through Ray Data
    while the Train worker holds every CPU of the 2-CPU cluster (lazy reads deadlocked there)."""
    from rayflow.config import ScalingConfig, TrainConfig
    from rayflow.train.batched import train_jobs
    from rayflow.train.job import SupervisedJob

    run_synth(nets, cfg_(), tmp_path / "fakes", LOCAL, options=QUIET)

    def job(seed):
        return SupervisedJob(model=ModelConfig(name="mlp"), train_cfg=TrainConfig(steps=100, augment=[], seed=seed),
                             train=digits.train, test=digits.test)

    spec = spec_of(tmp_path / "fakes", 40, real_fraction=0.5, orig_labels=True, use_logits=False)
    out = train_jobs(ray_executor(), [job(0), job(1), job(2)], names=["s0", "s1", "s2"], run_name="batch",
                     scaling=ScalingConfig(num_workers=1, cpus_per_worker=2),
                     storage=(str(tmp_path / "ray_storage"), None), fakes=[spec, None, spec])
    assert [m["step"] for _, m in out] == [100, 100, 100]
    assert all(m["test_acc"] > 50.0 for _, m in out)  # chance is 10 %; half of each batch is real
    assert all(m["wall_s"] > 0 for _, m in out)


def test_small_topup_round_runs_in_the_driver(ray_session, nets, tmp_path):
    """A burn-in that promises every draw is kept makes round 1 fall short; the top-up round (under
    one shard of draws) skips a new Ray Data pipeline and still writes the local executor's shards."""
    burnin = compute_burnin(nets, cfg_())
    optimistic = dataclasses.replace(nets, burnin=dataclasses.replace(
        burnin, subsample_rate=[1.0] * C, filter_rate=[1.0] * C))
    cfg = cfg_(shard_size=256)
    local = run_synth(optimistic, cfg, tmp_path / "local", LOCAL, options=QUIET)
    ray_m = run_synth(optimistic, cfg, tmp_path / "ray", ray_executor(), options=QUIET)
    assert ray_m["rounds"] >= 2 and ray_m["shards_in_driver"] >= 1
    assert ray_m["shards_in_driver"] < ray_m["shards"]  # round 1 ran on Ray
    assert local["shards_in_driver"] == 0
    a, b = shard_tables(tmp_path / "local"), shard_tables(tmp_path / "ray")
    assert a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)
