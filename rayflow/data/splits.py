"""DataConfig -> Splits: the limited-label subset, validation and held-out pools, all seeded."""

from __future__ import annotations

import logging

import numpy as np

from rayflow.config import DataConfig
from rayflow.config_data import USER_SOURCES
from rayflow.data import sources
from rayflow.data.imageset import DataError, ImageSet, Splits
from rayflow.data.images import resize_array
from rayflow.data.labels import label_range

log = logging.getLogger("rayflow")


def _stratified(labels: np.ndarray, num_classes: int, per_class: int, rng: np.random.Generator,
                what: str) -> np.ndarray:
    out = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise DataError(f"{what}: class {c} has only {len(idx)} images, {per_class} requested")
        out.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(out))


def _split_off(pool: ImageSet, per_class: int, rng: np.random.Generator, what: str,
               fraction_if_regression: float = 0.0) -> tuple[ImageSet, ImageSet]:
    """Takes `per_class` images per class out of `pool`: (taken, rest)."""
    if pool.num_classes is None:
        n = per_class if per_class else int(len(pool) * fraction_if_regression)
        idx = np.sort(rng.choice(len(pool), n, replace=False))
    else:
        idx = _stratified(pool.labels, pool.num_classes, per_class, rng, what)
    mask = np.zeros(len(pool), bool)
    mask[idx] = True
    return pool.subset(mask), pool.subset(~mask)


def resize(s: ImageSet, size: int) -> ImageSet:
    """Centre pad or crop to size x size (28 -> 32 for CIFAR-style nets); no interpolation. Built-in
    sets only (their cache keys and figures depend on it); user images are resized (data/images.py)."""
    h, w = s.images.shape[2:]
    if (h, w) == (size, size):
        return s
    x = s.images
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        x = np.pad(x, ((0, 0), (0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))
    h, w = x.shape[2:]
    top, left = (h - size) // 2, (w - size) // 2
    return ImageSet(np.ascontiguousarray(x[:, :, top:top + size, left:left + size]), s.labels, s.num_classes)


def upscale(s: ImageSet, size: int) -> ImageSet:
    """Nearest-neighbour upscale (8x8 digits -> 16x16) when the target is a multiple of the size."""
    h = s.images.shape[2]
    k = size // h
    x = s.images.repeat(k, axis=2).repeat(k, axis=3)
    return ImageSet(np.ascontiguousarray(x), s.labels, s.num_classes)


def _read_source(cfg: DataConfig, executor=None) -> tuple[ImageSet, ImageSet | None, list[str] | None]:
    """(train, test or None, class names or None)."""
    if cfg.name == "rotation":
        from rayflow.data.rotation import load_rotation

        return (*load_rotation(cfg), None)
    if cfg.name == "chairs":  # renders through `executor` (default: in process), cached
        from rayflow.data.chairs import load_chairs

        return (*load_chairs(cfg, executor), None)
    if cfg.name == "fashion_mnist":
        return (*sources.load_fashion_mnist(), sources.FASHION_MNIST_CLASSES)
    if cfg.name == "digits":
        return (*sources.load_digits(seed=cfg.seed), sources.DIGITS_CLASSES)
    if cfg.path is None:
        raise DataError(f"data.path is required for data.name={cfg.name!r}")
    if cfg.name == "npz":
        return (*sources.load_npz(cfg.path, cfg.task, cfg.num_classes), None)
    if cfg.name == "parquet":
        return (*sources.load_parquet(cfg.path, cfg.task, cfg.num_classes, cfg.image_size), None)
    from rayflow.data.folder import load_folder

    train, names = load_folder(cfg.path, cfg.num_classes, cfg.image_size, executor)
    return train, None, names


def _user_images(cfg: DataConfig, s: ImageSet | None) -> ImageSet | None:
    """A user array resized to data.image_size (rayflow/data/images.py `fit`), before any split
    compares train and test shapes."""
    if s is None or cfg.name not in USER_SOURCES or not cfg.image_size or \
            s.shape[1:] == (cfg.image_size, cfg.image_size):
        return s
    return ImageSet(resize_array(s.images, cfg.image_size), s.labels, s.num_classes)


def _normalised(cfg: DataConfig, train: ImageSet, test: ImageSet | None):
    """User regression labels in any unit -> [0, 1] with the set's LabelRange (rayflow/data/labels.py);
    test labels outside a range derived from the training labels are kept (beyond [0, 1]), not refused."""
    lr = label_range(cfg) if cfg.name in USER_SOURCES and train.num_classes is None else None
    if lr is None:
        return train, test, None
    train = ImageSet(train.images, lr.normalise(train.labels), None)
    if test is not None:
        y = lr.normalise(test.labels, f"{cfg.path} (test split)") if cfg.label_range is not None else \
            lr.from_unit(test.labels.astype(np.float64)).astype(np.float32)
        test = ImageSet(test.images, y, None)
    log.info("data: regression labels in %s normalised to [0, 1]; MAE is reported in %s", lr.describe(),
             lr.unit)
    return train, test, lr


def _check_num_classes(cfg: DataConfig, train: ImageSet) -> None:
    """data.num_classes is checked against every source, the built-in ones too, never ignored."""
    if cfg.num_classes is None:
        return
    if train.num_classes is None:
        raise DataError(f"data.num_classes={cfg.num_classes} is set but data.task is regression")
    if cfg.num_classes != train.num_classes:
        raise DataError(f"data.num_classes={cfg.num_classes} but data.name={cfg.name} has "
                        f"{train.num_classes} classes")


def _check_budget(cfg: DataConfig, train: ImageSet, auto_test: bool) -> None:
    """The per-class takes come out of one pool in turn; checking their sum up front names every field
    involved instead of blaming whichever one runs out last."""
    asks = [(f"data.{k}", getattr(cfg, k)) for k in ("val_per_class", "heldout_per_class", "n_per_class")]
    asks = [(k, n) for k, n in asks if n]
    if not asks:
        return
    need = sum(n for _, n in asks)
    what = " + ".join(f"{k}={n}" for k, n in asks) + (" needs" if len(asks) == 1 else " need")
    after = " after holding out the 20 % test split" if auto_test else ""
    if train.num_classes is None:
        if need > len(train):
            raise DataError(f"{what} {need} images but the training set has only {len(train)}{after}")
        return
    counts = train.class_counts()
    c = int(counts.argmin())
    if counts[c] < need:
        raise DataError(f"{what} {need} images per class but class {c} has only {int(counts[c])} "
                        f"training images{after}")


def load_splits(cfg: DataConfig, executor=None) -> Splits:
    """`executor` (rayflow.executors) runs work a source needs (chairs renders); None: in process."""
    train, test, names = _read_source(cfg, executor)
    _check_num_classes(cfg, train)
    train, test = _user_images(cfg, train), _user_images(cfg, test)
    train, test, lr = _normalised(cfg, train, test)
    rng = np.random.default_rng(1000 + cfg.seed)
    auto_test = test is None
    if auto_test:  # user data without a test split: hold out a stratified 20 %
        per = max(1, int(0.2 * len(train) / (train.num_classes or 1))) if train.num_classes else 0
        test, train = _split_off(train, per, rng, "holding out a 20 % test split (the data has none)",
                                 fraction_if_regression=0.2)
    if test.shape != train.shape:
        raise DataError(f"{cfg.path or cfg.name}: image shape mismatch: train images are {train.shape} but test "
                        f"images are {test.shape}")
    _check_budget(cfg, train, auto_test)
    val = heldout = None
    if cfg.val_per_class:
        val, train = _split_off(train, cfg.val_per_class, rng, "data.val_per_class")
    if cfg.heldout_per_class:
        heldout, train = _split_off(train, cfg.heldout_per_class, rng, "data.heldout_per_class")
    if cfg.n_per_class:
        train, _ = _split_off(train, cfg.n_per_class, rng, "data.n_per_class")
    if cfg.val_fraction:
        if val is not None:
            raise DataError("set data.val_per_class or data.val_fraction, not both")
        per = max(1, round(cfg.val_fraction * len(train) / (train.num_classes or 1)))
        val, train = _split_off(train, per, rng, "data.val_fraction", fraction_if_regression=cfg.val_fraction)
    if cfg.test_limit and len(test) > cfg.test_limit:
        test = test.subset(np.sort(np.random.default_rng(cfg.seed).choice(len(test), cfg.test_limit, replace=False)))
    if names is None and train.num_classes is not None:
        names = [str(c) for c in range(train.num_classes)]
    if lr is None and train.num_classes is None:
        lr = label_range(cfg)  # rotation, chairs: normalised by their own loaders
    splits = Splits(train=train, test=test, val=val, heldout=heldout, class_names=names, label_range=lr)
    if cfg.image_size and cfg.name not in USER_SOURCES:  # built-in sets: pad/crop or upscale, as always
        fn = upscale if cfg.image_size % train.shape[1] == 0 and cfg.image_size > train.shape[1] else resize
        for k in ("train", "test", "val", "heldout"):
            s = getattr(splits, k)
            if s is not None:
                setattr(splits, k, fn(s, cfg.image_size))
    return splits
