import numpy as np
import pytest
import torch

from rayflow.config import DataConfig
from rayflow.data import DataError, ImageSet, load_splits
from rayflow.data.transforms import augment, to_float, to_uint8


def test_fashion_mnist_limited_labels_is_stratified_and_seeded():
    cfg = DataConfig(name="fashion_mnist", n_per_class=20, val_per_class=5, heldout_per_class=30, seed=3)
    s = load_splits(cfg)
    assert s.shape == (1, 28, 28) and len(s.test) == 10_000
    assert (s.train.class_counts() == 20).all() and (s.val.class_counts() == 5).all()
    assert (s.heldout.class_counts() == 30).all()
    again = load_splits(cfg)
    assert np.array_equal(s.train.images, again.train.images)
    other = load_splits(cfg.model_copy(update={"seed": 4}))
    assert not np.array_equal(s.train.images, other.train.images)
    # train, val and held-out pools are disjoint
    keys = lambda x: {a.tobytes() for a in x.images}  # noqa: E731
    assert not keys(s.train) & keys(s.heldout) and not keys(s.train) & keys(s.val)


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_splits(DataConfig(name="fashion_mnist"))


def test_digits_resize_and_pad(digits):
    assert digits.shape == (1, 16, 16) and digits.num_classes == 10
    s = load_splits(DataConfig(name="digits", image_size=12))
    assert s.shape == (1, 12, 12)


def test_npz_label_out_of_range(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, images=np.zeros((6, 8, 8), np.uint8), labels=np.array([0, 1, 2, 0, 1, 5]))
    with pytest.raises(DataError, match="label 5 .*out of range"):
        load_splits(DataConfig(name="npz", path=str(p), num_classes=3))
    np.savez(p, images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, -1, 0]))
    with pytest.raises(DataError, match="label -1 .*out of range"):
        load_splits(DataConfig(name="npz", path=str(p)))


def test_npz_regression_and_shape_mismatch(tmp_path):
    p = tmp_path / "r.npz"
    np.savez(p, images=np.zeros((10, 8, 8), np.uint8), labels=np.linspace(0, 1, 10),
             test_images=np.zeros((3, 9, 9), np.uint8), test_labels=np.zeros(3))
    with pytest.raises(DataError, match="image shape mismatch"):
        load_splits(DataConfig(name="npz", path=str(p), task="regression"))
    np.savez(p, images=np.zeros((10, 8, 8), np.uint8), labels=np.linspace(0, 1, 10))
    s = load_splits(DataConfig(name="npz", path=str(p), task="regression"))
    assert s.num_classes is None and s.train.labels.dtype == np.float32


def test_folder_source_and_mismatched_image(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    s = load_splits(DataConfig(name="folder", path=str(tmp_path)))
    assert s.num_classes == 2 and len(s.train) + len(s.test) == 10
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "dog" / "odd.png")
    with pytest.raises(DataError, match="image shape mismatch: .*odd.png"):
        load_splits(DataConfig(name="folder", path=str(tmp_path)))


def test_parquet_source(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    def png(v):
        b = io.BytesIO()
        Image.fromarray(np.full((8, 8), v, np.uint8)).save(b, format="PNG")
        return b.getvalue()

    pq.write_table(pa.table({"image": [png(i * 20) for i in range(10)], "label": [i % 2 for i in range(10)]}),
                   tmp_path / "d.parquet")
    s = load_splits(DataConfig(name="parquet", path=str(tmp_path / "d.parquet")))
    assert s.shape == (1, 8, 8) and s.num_classes == 2


def test_imageset_rejects_bad_shapes():
    with pytest.raises(DataError, match="shape"):
        ImageSet(np.zeros((4, 8, 8), np.uint8), np.zeros(4, np.int64), 2)
    with pytest.raises(DataError, match="labels"):
        ImageSet(np.zeros((4, 1, 8, 8), np.uint8), np.zeros(3, np.int64), 2)


def test_transforms_keep_shape_and_range():
    x = to_float(torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8))
    assert x.min() >= -1 and x.max() <= 1
    g = torch.Generator().manual_seed(0)
    y = augment(x, ["crop", "flip", "cutout"], g)
    assert y.shape == x.shape and not torch.equal(x, y)
    assert torch.equal(to_uint8(to_float(torch.arange(256, dtype=torch.uint8))), torch.arange(256, dtype=torch.uint8))
