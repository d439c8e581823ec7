"""Regression data sets: rotation angles on real images and rendered chairs (RC-49-like).

Everything runs on tiny meshes the tests write themselves, so nothing needs the Debian package."""

import json
import zipfile

import numpy as np
import pytest

from rayflow.config import ChairsConfig, ConfigError, DataConfig, RotationConfig, load_config
from rayflow.data import DataError, LabelRange, label_range, load_splits
from rayflow.data import render as render_mod
from rayflow.data.chairs import load_chairs_with_metadata, render_dir
from rayflow.data.mesh import MeshRef, load_mesh, parse_obj, read_catalog
from rayflow.data.render import RenderChairs, render, work_items
from rayflow.data.rotation import make_rotated, pad_and_resize, rotate

# A chair: seat and back as quads (fan triangulation), legs as boxes; last face uses relative indices.
CHAIR = """# tiny chair
v -1 0 -1\nv 1 0 -1\nv 1 0 1\nv -1 0 1
v -1 0 -1\nv 1 0 -1\nv 1 2 -1\nv -1 2 -1
f 1 2 3 4
f 5/1 6/1 7/1 8/1
v -1 -1.5 1\nv -0.8 -1.5 1\nv -0.8 0 1\nv -1 0 1
f -4 -3 -2 -1
v 1 -1.5 1\nv 0.8 -1.5 1\nv 0.8 0 1\nv 1 0 1
f 13 14 15 16
"""
STOOL = """v -0.5 0 -0.5\nv 0.5 0 -0.5\nv 0.5 0 0.5\nv -0.5 0 0.5
v 0 -2 0\nf 1 2 3 4\nf 1 2 5\nf 2 3 5\nf 3 4 5\nf 4 1 5
"""


def _obj_variant(k: int) -> str:
    """A distinct chair per k (back height), so every model renders differently."""
    return CHAIR.replace("v 1 2 -1\nv -1 2 -1", f"v 1 {1 + 0.3 * k:g} -1\nv -1 {1 + 0.3 * k:g} -1")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def meshes(tmp_path):
    d = tmp_path / "meshes"
    d.mkdir()
    for k in range(5):
        (d / f"chair{k}.obj").write_text(_obj_variant(k))
    (d / "stool.obj").write_text(STOOL)
    return d


def _chairs_cfg(meshes, **kw) -> DataConfig:
    cc = dict(yaw_step=15.0, size=24, supersample=2, n_test=2)
    cc.update(kw)
    return DataConfig(name="chairs", path=str(meshes), chairs=ChairsConfig(**cc))


# -- meshes and rendering ----------------------------------------------------------------------


def test_tiny_mesh_renders_non_empty_and_deterministic(meshes):
    v, f = load_mesh(MeshRef(name="c", path=str(meshes / "chair0.obj")))
    assert f.shape == (2 + 2 + 2 + 2, 3)  # four quads, fan-triangulated
    assert np.linalg.norm(v, axis=1).max() == pytest.approx(1.0)
    a = render(v, f, 0.0, size=32)
    assert a.dtype == np.uint8 and a.shape == (32, 32) and (a > 0).mean() > 0.05
    assert np.array_equal(a, render(v, f, 0.0, size=32))  # same angle: same bytes
    views = [render(v, f, y, size=32) for y in (0, 15, 30, 60, 89)]
    for i in range(len(views)):
        for j in range(i + 1, len(views)):
            assert not np.array_equal(views[i], views[j]), (i, j)


def test_unparseable_obj_is_one_clear_error(tmp_path):
    bad = tmp_path / "broken.obj"
    bad.write_text("v 0 0 0\nv 1 0 0\nv 0 x 1\nf 1 2 3\n")
    with pytest.raises(DataError, match=r"broken.obj line 3: cannot parse vertex"):
        load_mesh(MeshRef(name="b", path=str(bad)))
    with pytest.raises(DataError, match=r"m.obj line 3: face 'f 1 2 7' names a vertex that does not exist"):
        parse_obj(b"v 0 0 0\nv 1 0 0\nf 1 2 7\n", "m.obj")
    with pytest.raises(DataError, match="no faces found"):
        parse_obj(b"hello\n", "x.obj")


def test_step_renders_items_and_counts(meshes):
    refs = [MeshRef(name=n, path=str(meshes / f"{n}.obj")).__dict__ for n in ("chair0", "stool")]
    step = RenderChairs(refs, [0.0, 30.0, 60.0], size=16, supersample=1)
    items = work_items(2, 3, per_item=2)
    assert [(i["model"], i["yaw"], i["count"]) for i in items] == [(0, 0, 2), (0, 2, 1), (1, 0, 2), (1, 2, 1)]
    out = step({k: np.array([items[0][k]]) for k in items[0]})
    assert out["image"].shape == (2, 16, 16) and out["yaw"].tolist() == [0, 1]


def test_sweethome3d_archive_catalogue(tmp_path):
    """The .sh3f reader on an archive written here: chairs picked by name, licence recorded."""
    a = tmp_path / "Mini-CC-0.sh3f"
    props = ("id=x\nlicense=Public domain\nname#1=Oak chair\nid#1=Mini#oakChair\nmodel#1=/mini/oak/oak.obj\n"
             "creator#1=Doug\nname#2=Table\nmodel#2=/mini/table/table.obj\nname#3=Stool\n"
             "model#3=/mini/stool/stool.obj\ncreator#3=Ann\nmodelRotation#3=1 0 0 0 0 1 0 -1 0\n")
    with zipfile.ZipFile(a, "w") as z:
        z.writestr("PluginFurnitureCatalog.properties", props)
        z.writestr("mini/oak/oak.obj", CHAIR)
        z.writestr("mini/oak/LICENSE.txt", "CC0")
        z.writestr("mini/table/table.obj", STOOL)
        z.writestr("mini/stool/stool.obj", STOOL)
    refs = read_catalog(a)
    assert [r.name for r in refs] == ["mini/oak", "mini/stool"]
    assert refs[0].licence == "Public domain" and refs[0].creator == "Doug"
    assert refs[0].licence_file.endswith("mini/oak/LICENSE.txt") and refs[1].rotation == (1, 0, 0, 0, 0, 1, 0, -1, 0)
    assert len(load_mesh(refs[1])[1]) == 6


# -- the chairs data set ------------------------------------------------------------------------


def test_chairs_split_by_model_cached_and_licensed(meshes, cache, monkeypatch):
    cfg = _chairs_cfg(meshes)
    train, test, meta = load_chairs_with_metadata(cfg)
    tr = {m["name"] for m in meta["train_models"]}
    te = {m["name"] for m in meta["test_models"]}
    assert len(te) == 2 and len(tr) == 4 and not tr & te  # train and test chairs are different models
    assert all(m["licence"] for m in meta["train_models"] + meta["test_models"])
    assert train.num_classes is None and train.shape == (1, 24, 24) and len(train) == 4 * 6 and len(test) == 2 * 6
    assert not {x.tobytes() for x in train.images} & {x.tobytes() for x in test.images}
    lr = label_range(cfg)
    assert np.allclose(lr.to_unit(train.labels[:6]), [0, 15, 30, 45, 60, 75], atol=1e-4)
    assert (train.labels >= 0).all() and (train.labels < 1).all()
    assert len(list(render_dir().glob("*.npz"))) == 6
    saved = json.loads(next(render_dir().glob("dataset-*.json")).read_text())
    assert saved["test_models"] == meta["test_models"]

    def boom(*a, **k):
        raise AssertionError("rendered although cached")

    with monkeypatch.context() as m:
        m.setattr(render_mod, "render", boom)
        again, _, _ = load_chairs_with_metadata(cfg)  # served from the cache
        assert np.array_equal(again.images, train.images) and np.array_equal(again.labels, train.labels)
        with pytest.raises(AssertionError, match="rendered although cached"):  # other parameters: new key
            load_chairs_with_metadata(_chairs_cfg(meshes, elevation=30.0))
    # an explicit test list, through load_splits
    s = load_splits(_chairs_cfg(meshes, test_models=["stool"]))
    assert s.num_classes is None and len(s.test) == 6


def test_chairs_without_package_says_how_to_install(tmp_path, cache):
    with pytest.raises(DataError, match="make chairs-data"):
        load_splits(DataConfig(name="chairs", chairs=ChairsConfig(furniture_dir=str(tmp_path))))


@pytest.mark.slow
def test_ray_data_renders_the_same_bytes_as_local(meshes, cache, ray_session):
    from rayflow.config import RuntimeConfig
    from rayflow.executors import get_executor

    cfg = _chairs_cfg(meshes)
    local, _, _ = load_chairs_with_metadata(cfg)
    for f in render_dir().glob("*.npz"):
        f.unlink()
    ray_train, _, _ = load_chairs_with_metadata(cfg, get_executor(RuntimeConfig(executor="ray")))
    assert np.array_equal(local.images, ray_train.images)


# -- labels ------------------------------------------------------------------------------------


def test_label_range_maps_and_rejects_bad_labels():
    lr = LabelRange(0.0, 90.0, "deg", source="angles.npz")
    assert lr.to_unit(lr.from_unit(37.5)) == pytest.approx(37.5)
    assert np.allclose(lr.normalise([0, 45, 90]), [0, 0.5, 1])
    with pytest.raises(DataError, match=r"angles.npz: label 91 at index 2 is outside the label range \[0, 90\] deg"):
        lr.check([0, 10, 91, 95])
    with pytest.raises(DataError, match="angles.npz: label nan at index 1 is NaN"):
        lr.check([3.0, float("nan")])
    with pytest.raises(DataError, match="lo < hi"):
        LabelRange(5, 5)


# -- rotation ------------------------------------------------------------------------------------


def test_rotation_angle_zero_is_padded_original_and_turns_change_images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 1, 28, 28), dtype=np.uint8)
    assert np.array_equal(rotate(x, np.zeros(6), 28), pad_and_resize(x, 28))
    turned = rotate(x, np.full(6, 30.0), 28)
    assert all(not np.array_equal(a, b) for a, b in zip(turned, pad_and_resize(x, 28)))
    # a bright block at the top moves to the left after a 90-degree (counter-clockwise) turn
    dot = np.zeros((1, 1, 28, 28), np.uint8)
    dot[0, 0, 1:6, 11:17] = 255
    r, c = np.argwhere(rotate(dot, np.array([90.0]), 28)[0, 0] > 60).mean(0)
    assert c < 9 and 11 < r < 16


def test_rotated_set_labels_normalised_and_seeded(digits):
    lr = LabelRange(0.0, 90.0, "deg")
    s = make_rotated(digits.train.subset(np.arange(20)), 3, lr, 16, None, np.random.default_rng(5), "t")
    angles = np.random.default_rng(5).uniform(0, 90, 60)
    assert s.labels.dtype == np.float32 and (s.labels >= 0).all() and (s.labels < 1).all()
    assert np.allclose(lr.to_unit(s.labels), angles, atol=1e-4)
    assert not np.array_equal(s.images[0], s.images[1])  # one image, three angles


def test_load_splits_rotation_is_regression_and_disjoint():
    cfg = DataConfig(name="rotation", rotation=RotationConfig(base="digits", angles_per_image=2), n_per_class=200,
                     val_per_class=50, image_size=20)
    s = load_splits(cfg)
    assert s.num_classes is None and s.train.labels.dtype == np.float32
    assert len(s.train) == 200 and len(s.val) == 50 and s.shape == (1, 20, 20)
    assert (s.test.labels >= 0).all() and (s.test.labels < 1).all()
    assert label_range(cfg).unit == "deg" and label_range(DataConfig(name="digits")) is None
    assert np.array_equal(load_splits(cfg).train.images, s.train.images)  # seeded
    with pytest.raises(DataError, match="not classes of digits"):
        load_splits(DataConfig(name="rotation", rotation=RotationConfig(base="digits", exclude_classes=[12])))


def test_fashion_mnist_rotation_leaves_out_bags():
    s = load_splits(DataConfig(name="rotation", test_limit=100))
    assert len(s.train) == 54_000 and s.shape == (1, 28, 28)  # 60k minus 6k bags


def test_config_guards_regression_sets():
    assert DataConfig(name="rotation").task == "regression"
    with pytest.raises(ConfigError, match="data.task must be regression"):
        load_config(overrides=["data.name=chairs", "data.task=classification"])
    with pytest.raises(ConfigError, match="data.rotation is set but data.name is 'digits'"):
        load_config(overrides=["data.name=digits", "data.rotation.base=digits"])
    with pytest.raises(ConfigError, match="chairs.yaw_range: must be a range"):
        load_config(overrides=["data.name=chairs", "data.chairs.yaw_range=[90, 0]"])


# -- user regression files: labels in their own unit ------------------------------------------


def _reg_npz(path, y, test_y=None):
    arrays = {"images": np.zeros((len(y), 8, 8), np.uint8), "labels": np.asarray(y, np.float64)}
    if test_y is not None:
        arrays.update(test_images=np.zeros((len(test_y), 8, 8), np.uint8), test_labels=np.asarray(test_y))
    np.savez(path, **arrays)
    return str(path)


def test_user_labels_in_unit_interval_are_used_as_given(tmp_path):
    y = np.linspace(0, 1, 50)
    s = load_splits(DataConfig(name="npz", path=_reg_npz(tmp_path / "a.npz", y), task="regression"))
    assert s.label_range is None and label_range(DataConfig(name="npz", path=str(tmp_path / "a.npz"),
                                                            task="regression")) is None
    assert set(np.round(np.r_[s.train.labels, s.test.labels], 6)) == set(np.round(y.astype(np.float32), 6))


def test_user_labels_in_any_unit_are_normalised_with_the_training_range(tmp_path):
    p = _reg_npz(tmp_path / "b.npz", np.linspace(-10, 30, 40), test_y=[-20.0, 10.0])
    cfg = DataConfig(name="npz", path=p, task="regression", label_unit="C")
    s = load_splits(cfg)
    assert (s.label_range.lo, s.label_range.hi, s.label_range.unit) == (-10, 30, "C")
    assert s.train.labels.min() == 0 and s.train.labels.max() == 1
    assert np.allclose(s.test.labels, [-0.25, 0.5])  # outside the training range: kept, not refused
    assert label_range(cfg) == s.label_range  # the report's range is the data's


def test_declared_label_range_normalises_and_checks(tmp_path):
    p = _reg_npz(tmp_path / "c.npz", np.linspace(10, 20, 40))
    s = load_splits(DataConfig(name="npz", path=p, task="regression", label_range=(0, 40)))
    assert s.train.labels.min() >= 0.25 - 1e-6 and s.train.labels.max() <= 0.5 + 1e-6
    with pytest.raises(DataError, match="c.npz .*label 15.1282 at index 20 is outside the label range \\[0, 15\\]"):
        load_splits(DataConfig(name="npz", path=p, task="regression", label_range=(0, 15)))
    with pytest.raises(ConfigError, match="regression npz or parquet"):
        load_config(None, ["data.name=digits", "data.label_range=[0, 1]"])


def test_parquet_regression_labels_of_mixed_size_pictures(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    imgs = []
    for i in range(30):
        b = io.BytesIO()
        Image.new("RGB", (20 + i, 30), (i * 8, 0, 0)).save(b, format="PNG")
        imgs.append(b.getvalue())
    pq.write_table(pa.table({"image": imgs, "label": np.linspace(0, 90, 30)}), tmp_path / "p.parquet")
    s = load_splits(DataConfig(name="parquet", path=str(tmp_path / "p.parquet"), task="regression", image_size=16))
    assert s.shape == (3, 16, 16) and s.label_range.span == 90 and s.train.labels.max() <= 1
