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
    with pytest.raises(DataError, match="images differ in size .*odd.png is 8x9.*set data.image_size"):
        load_splits(DataConfig(name="folder", path=str(tmp_path)))
    s = load_splits(DataConfig(name="folder", path=str(tmp_path), image_size=8))
    assert s.shape == (1, 8, 8) and s.class_names == ["cat", "dog"]


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


def _picture_folder(root, spec: dict[str, list[tuple[str, int, int]]]):
    """class -> [(mode, width, height)]: pictures of mixed sizes and modes under root/<class>/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, pics in spec.items():
        (root / c).mkdir(parents=True)
        for i, (mode, w, h) in enumerate(pics):
            bands = len(Image.new(mode, (1, 1)).getbands())
            a = rng.integers(0, 256, (h, w, bands) if bands > 1 else (h, w), dtype=np.uint8)
            Image.fromarray(a, mode).save(root / c / f"{i}.png")
    return root


def test_folder_of_mixed_sizes_and_modes_is_resized_to_one_rgb_set(tmp_path, caplog):
    root = _picture_folder(tmp_path / "pics", {"cat": [("RGB", 20, 30), ("L", 60, 41), ("RGB", 33, 33)],
                                               "dog": [("RGBA", 45, 25), ("RGBA", 21, 58), ("L", 40, 40)]})
    with caplog.at_level("WARNING", logger="rayflow"):
        s = load_splits(DataConfig(name="folder", path=str(root), image_size=32))
    assert s.shape == (3, 32, 32)  # one colour picture makes the set RGB
    assert s.class_names == ["cat", "dog"] and len(s.train) + len(s.test) == 6
    alpha = [r for r in caplog.records if "alpha" in r.getMessage()]
    assert len(alpha) == 1 and "2 image(s)" in alpha[0].getMessage()


def test_grey_folder_stays_one_channel(tmp_path):
    root = _picture_folder(tmp_path / "pics", {"a": [("L", 20, 30)] * 3, "b": [("LA", 50, 24)] * 3})
    assert load_splits(DataConfig(name="folder", path=str(root), image_size=16)).shape == (1, 16, 16)


def test_folder_resizes_with_interpolation_not_a_centre_crop(tmp_path):
    """A 64-px picture with a white 16-px frame around a black centre: a 32-px centre crop would be
    all black; a resize keeps the frame (and the shorter side decides the scale)."""
    from PIL import Image

    from rayflow.data.images import fit

    a = np.full((64, 64), 255, np.uint8)
    a[16:48, 16:48] = 0
    for c in ("x", "y"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(a).save(tmp_path / c / f"{i}.png")
    s = load_splits(DataConfig(name="folder", path=str(tmp_path), image_size=32))
    img = s.train.images[0, 0]
    assert img[0].min() > 200 and img[16, 16] < 50  # frame kept, centre black
    wide = fit(Image.fromarray(np.zeros((40, 80), np.uint8)), 20)
    assert wide.size == (20, 20)  # 80x40 -> 40x20 -> centre crop 20x20


def test_user_arrays_are_resized_builtin_sets_still_pad(tmp_path):
    p = tmp_path / "d.npz"
    x = np.zeros((12, 16, 16), np.uint8)
    x[:, :, 8:] = 255
    np.savez(p, images=x, labels=np.arange(12) % 2)
    s = load_splits(DataConfig(name="npz", path=str(p), image_size=8))
    assert s.shape == (1, 8, 8) and s.train.images[0, 0, 0, 0] == 0 and s.train.images[0, 0, 0, -1] == 255
    assert s.class_names == ["0", "1"]
    d = load_splits(DataConfig(name="digits", image_size=12))  # 8x8 digits padded to 12, as before
    assert d.shape == (1, 12, 12) and d.train.images[:, :, :2].max() == 0
    assert d.class_names == [str(i) for i in range(10)]


def test_fashion_mnist_class_names():
    from rayflow.data.sources import FASHION_MNIST_CLASSES

    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[9] == "Ankle boot"
