"""Image folders that need not fit the driver: local or on S3, decoded once per machine into a
memory-mapped cache (rayflow/data/folder.py), the same arrays as the in-memory reader."""

import json
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
from s3_server import s3_location, s3_server  # noqa: F401

from rayflow.config import DataConfig, load_config
from rayflow.data import DataError, image_steps, images, load_splits, mapped
from rayflow.data.folder import MARKER, cache_dir, cache_key, list_folder, load_folder

SIZE = 16


def digit_folder(root: Path, per_class: int = 6, classes: int = 3) -> Path:
    """sklearn's digits as tinted RGB PNGs and greyscale JPEGs of 10-24 px, in class folders."""
    from PIL import Image
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    x, y = load_digits(return_X_y=True)
    for c in range(classes):
        (root / f"digit{c}").mkdir(parents=True)
        for i, idx in enumerate(np.flatnonzero(y == c)[:per_class]):
            a = (x[idx].reshape(8, 8) / 16.0)[..., None]
            rgb = (255 * (a * rng.uniform(0.5, 1, 3) + (1 - a) * rng.uniform(0, 0.35, 3))).astype(np.uint8)
            w, h = rng.integers(10, 25, 2)
            im = Image.fromarray(rgb).resize((int(w), int(h)), Image.BILINEAR)
            if i % 3 == 2:
                im.convert("L").save(root / f"digit{c}" / f"{i:03d}.jpg", quality=90)
            else:
                im.save(root / f"digit{c}" / f"{i:03d}.png")
    return root


def upload(local: Path, location: str) -> str:
    from rayflow.store_fs import resolve

    _, fs, root, _ = resolve(location)
    pafs.copy_files(str(local), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    return location


@pytest.fixture
def decodes(monkeypatch):
    """Counts pictures decoded (the local executor decodes in this process)."""
    calls = []
    real = images.decoded
    monkeypatch.setattr(images, "decoded", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    return calls


def test_folder_is_a_memmap_with_the_in_memory_readers_bytes(tmp_path):
    root = digit_folder(tmp_path / "pics")
    s, names = load_folder(str(root), None, SIZE)
    listing = list_folder(str(root), None)
    ref = images.stack([Path(p) for p in listing.paths], listing.names, SIZE, str(root))
    assert isinstance(s.images, np.memmap) and not s.images.flags.writeable
    assert s.images.shape == (18, 3, SIZE, SIZE) and np.array_equal(s.images, ref)
    assert names == ["digit0", "digit1", "digit2"] and s.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6


def test_listing_is_compact_and_keys_the_cache_as_before(tmp_path):
    """The listing keeps one bytes array of relative paths (shipped to every decode actor), and the cache
    key is still the sha256 of the whole {version, prep, location, size, files} document: caches built
    before stay valid."""
    import hashlib
    import json

    from rayflow.config_data import USER_PREP
    from rayflow.data.folder import CACHE_VERSION

    root = digit_folder(tmp_path / "pics")
    listing = list_folder(str(root), None)
    assert listing.paths.rels.dtype.kind == "S" and listing.paths.rels.nbytes < 18 * 32
    assert list(listing.paths) == [str(p) for c in range(3) for p in sorted((root / f"digit{c}").iterdir())]
    assert listing.names[7] == f"{listing.location}/digit1/001.png"
    stamps = [[f"{p.parent.name}/{p.name}", p.stat().st_size, p.stat().st_mtime_ns] for p in map(Path, listing.paths)]
    for size in (SIZE, None):
        doc = {"version": CACHE_VERSION, "prep": USER_PREP, "location": listing.location, "size": size,
               "files": stamps}
        assert cache_key(listing, size) == hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:20]


def test_cache_is_reused_and_a_half_built_one_rebuilt(tmp_path, decodes):
    root = digit_folder(tmp_path / "pics")
    first, _ = load_folder(str(root), None, SIZE)
    ref = np.array(first.images)
    assert len(decodes) == 18
    again, _ = load_folder(str(root), None, SIZE)
    assert len(decodes) == 18 and np.array_equal(ref, again.images)  # nothing decoded
    d = cache_dir(cache_key(list_folder(str(root), None), SIZE))
    (d / MARKER).unlink()  # a build killed before its marker
    np.lib.format.open_memmap(d / "images.npy", mode="r+")[:] = 0
    rebuilt, _ = load_folder(str(root), None, SIZE)
    assert len(decodes) == 36 and np.array_equal(rebuilt.images, ref)
    load_folder(str(root), None, 12)  # another size: another key
    assert len(decodes) == 54


def test_reused_cache_warns_about_dropped_alpha_as_the_build_did(tmp_path, caplog):
    from PIL import Image

    root = digit_folder(tmp_path / "pics", per_class=2)
    Image.new("RGBA", (12, 12)).save(root / "digit0" / "rgba.png")
    for _ in range(2):
        caplog.clear()
        load_folder(str(root), None, SIZE)
        assert [r.getMessage() for r in caplog.records if "alpha" in r.getMessage()] == [
            f"{root}: 1 image(s) have an alpha channel (e.g. {root}/digit0/rgba.png); it is dropped (transparent "
            "pixels keep their colour)"]


def test_a_header_past_the_first_bytes_is_read_from_the_whole_file(tmp_path, monkeypatch):
    root = digit_folder(tmp_path / "pics", per_class=2)
    ref = np.array(load_folder(str(root), None, SIZE)[0].images)
    monkeypatch.setenv("RAYFLOW_CACHE", str(tmp_path / "other-cache"))
    monkeypatch.setattr(image_steps, "HEAD_BYTES", 16)  # no PNG or JPEG header fits
    calls = []
    real = images.header
    monkeypatch.setattr(images, "header", lambda *a: calls.append(a[1]) or real(*a))
    assert np.array_equal(load_folder(str(root), None, SIZE)[0].images, ref) and len(calls) == 2 * 6


def test_changed_file_builds_a_new_cache(tmp_path, decodes):
    root = digit_folder(tmp_path / "pics")
    first, _ = load_folder(str(root), None, SIZE)
    from PIL import Image

    Image.new("RGB", (20, 20), (255, 0, 0)).save(root / "digit1" / "000.png")
    changed, _ = load_folder(str(root), None, SIZE)
    assert len(decodes) == 36 and not np.array_equal(first.images, changed.images)


def test_splits_of_a_mapped_folder_stay_mapped_and_equal(tmp_path, monkeypatch):
    root = digit_folder(tmp_path / "pics", per_class=10)
    cfg = DataConfig(name="folder", path=str(root), image_size=SIZE, n_per_class=3, heldout_per_class=2)
    small = load_splits(cfg)  # every subset fits IN_MEMORY_BYTES: plain arrays
    monkeypatch.setattr(mapped, "IN_MEMORY_BYTES", 0)
    big = load_splits(cfg)
    for k in ("train", "test", "heldout"):
        a, b = getattr(small, k), getattr(big, k)
        assert not isinstance(a.images, np.memmap) and isinstance(b.images, np.memmap), k
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels), k
    assert len(big.train) == 9 and len(big.heldout) == 6 and big.class_names == ["digit0", "digit1", "digit2"]


@pytest.mark.parametrize("case, match", [
    ("missing", "image folder not found: s3://.*/nope"),
    ("empty_class", "class folder s3://.*/digit1 holds no images"),
    ("corrupt", "cannot read image s3://.*/digit2/001.png: not an image file"),
])
def test_s3_folder_problems_are_one_data_error(tmp_path, s3_location, case, match):  # noqa: F811
    root = digit_folder(tmp_path / "pics", per_class=2)
    if case == "empty_class":
        for f in (root / "digit1").iterdir():
            f.rename(root / "digit1" / f"{f.name}.txt")
    if case == "corrupt":
        (root / "digit2" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n junk")
    upload(root, s3_location)
    with pytest.raises(DataError, match=match):
        load_folder(s3_location + ("/nope" if case == "missing" else ""), None, SIZE)


@pytest.mark.slow
def test_tiny_pipeline_reads_s3_folder_like_its_local_copy(tmp_path, s3_location):  # noqa: F811
    """The acceptance test of issue 28: data.path on S3 gives the metrics of the local copy."""
    from rayflow.pipeline import Pipeline

    root = digit_folder(tmp_path / "pics", per_class=20, classes=3)
    fast = ["runtime.executor=local", "data.name=folder", f"data.image_size={SIZE}", "data.n_per_class=8",
            "data.heldout_per_class=4", "seeds=[0]", "teacher.train.steps=15", "student.train.steps=10",
            "baseline_steps=10", "gan.steps=4", "gan.checkpoint_every=2", "gan.batch_size=16", "dre.steps=5",
            "dre.feature_net.name=teacher", "dre.burnin=10", "filter.burnin=5", "synth.m_per_class=4",
            "synth.pool_draws=20", "synth.batch_size=20", "synth.shard_size=20"]
    rows = {}
    for where, path in (("local", str(root)), ("s3", upload(root, s3_location + "/pics"))):
        cfg = load_config("rayflow/configs/tiny.yaml", [*fast, f"data.path={path}",
                                                        f"output_dir={tmp_path / where}"])
        rows[where] = Pipeline(cfg).run()["rows"]
        on_disk = json.loads((tmp_path / where / "results.json").read_text())
        assert on_disk["class_names"] == ["digit0", "digit1", "digit2"]
    assert not any(r["reused"] for r in rows["s3"])  # computed afresh from the S3 copy
    got = [(r["model"], r["test_acc"]) for r in rows["s3"]]
    assert got == [(r["model"], r["test_acc"]) for r in rows["local"]] and len(got) >= 4


@pytest.mark.slow
def test_ray_data_decodes_an_s3_folder_like_the_local_executor(tmp_path, s3_location, ray_session,  # noqa: F811
                                                                monkeypatch, decodes):
    """Ray Data actors read the objects through the listing's filesystem (pickled with the step), so
    they need no AWS settings of their own."""
    from rayflow.config import RuntimeConfig
    from rayflow.data import folder
    from rayflow.executors import get_executor

    monkeypatch.setattr(folder, "IN_PROCESS_BELOW", 0)  # a small folder would decode in process

    root = digit_folder(tmp_path / "pics", per_class=5)
    local, _ = load_folder(str(root), None, SIZE)
    on_ray, _ = load_folder(upload(root, s3_location), None, SIZE, get_executor(RuntimeConfig(executor="ray")))
    assert len(decodes) == 15  # the local read's: the S3 copy was decoded by Ray actors
    assert isinstance(on_ray.images, np.memmap) and np.array_equal(local.images, on_ray.images)


def test_batches_from_a_mapped_cache_leave_its_pages_unmapped(tmp_path):
    """Random training batches from a memory-mapped cache: the process maps one batch at a time, not the
    file (with large page-cache folios one row maps up to 2 MB: 20 batches of 64 rows mapped all 300 MB)."""
    import torch

    from rayflow.data.transforms import to_float
    from rayflow.train.sources import ArraySource

    n, shape = 20_000, (3, 32, 32)  # 61 MB
    w = mapped.RowWriter(tmp_path / "x.npy", (n, *shape))
    rng = np.random.default_rng(0)
    for s in range(0, n, 5000):
        w.write(s, rng.integers(0, 256, (5000, *shape), dtype=np.uint8))
    w.close()
    x = np.load(tmp_path / "x.npy", mmap_mode="r")

    def file_mb():
        return int(next(v for k, v in (line.split(":") for line in open("/proc/self/smaps_rollup").read()
                                       .splitlines()[1:]) if k == "Pss_File").split()[0]) / 1024

    before = file_mb()
    src = ArraySource(x, np.zeros(n, np.int64), 64, seed=1)
    for _ in range(20):
        b = src.next_batch()
    assert file_mb() - before < 8, (before, file_mb())  # 61 MB of rows behind the mapping, one batch mapped
    idx = np.sort(np.random.default_rng((1, 0)).permutation(n)[19 * 64:20 * 64])
    assert torch.equal(b["x"], to_float(torch.from_numpy(np.asarray(x[idx]))))  # the rows asked for
