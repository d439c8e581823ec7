"""Every bad user input ends in ONE line `rayflow: error: ...` naming the file or field, exit code 2,
before any compute: one table row per input mistake, run through the real CLI entry point.

Each row builds its bad input under tmp_path and returns the CLI arguments; the messages must hold
the given substrings (and must not hold the `absent` ones, e.g. a config file blamed for a --set).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rayflow.cli import main

TINY = str(Path(__file__).parents[1] / "rayflow" / "configs" / "tiny.yaml")


def base(cmd: str, tmp: Path, *sets: str) -> list[str]:
    """A tiny local run writing under tmp/out; one training step in case a check ever lets data through."""
    argv = [cmd, "--config", TINY, "--executor", "local", "--set", f"output_dir={tmp / 'out'}",
            "--set", "teacher.train.steps=1"]
    for s in sets:
        argv += ["--set", s]
    return argv


def npz(tmp: Path, name: str = "d.npz", **arrays) -> Path:
    p = tmp / name
    np.savez(p, **arrays)
    return p


def train_on(tmp: Path, path: Path, *sets: str, source: str = "npz") -> list[str]:
    return base("train-teacher", tmp, f"data.name={source}", f"data.path={path}", *sets)


def images(n: int = 12, size: int = 8, dtype=np.uint8, hi: float = 255) -> np.ndarray:
    return np.linspace(0, hi, n * size * size).reshape(n, size, size).astype(dtype)


def labels(n: int = 12, k: int = 3) -> np.ndarray:
    return np.arange(n) % k


def folder(tmp: Path, classes: dict[str, int], mode: str = "L") -> Path:
    from PIL import Image

    root = tmp / "imgs"
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new(mode, (8, 8), color=40 * i if mode == "L" else (40 * i,) * len(mode)).save(
                root / name / f"{i}.png")
    return root


def model_dir(tmp: Path, name: str = "mlp", size: int = 16, outputs: int = 10, arch: dict | None = None,
              weights_of: str | None = None) -> Path:
    """A model artifact; `weights_of` saves another network's weights, `arch` edits model.json."""
    from rayflow.config import ModelConfig
    from rayflow.models import build_model
    from rayflow.models.io import ARCH, save_model

    d = tmp / "model"
    d.mkdir()
    net = build_model(weights_of or name, in_channels=1, image_size=size, num_outputs=outputs)
    save_model(d, net.state_dict(), ModelConfig(name=name), 1, size, outputs)
    if arch is not None:
        doc = {**json.loads((d / ARCH).read_text()), **arch}
        (d / ARCH).write_text(json.dumps({k: v for k, v in doc.items() if v is not None}))
    return d


def evaluate(tmp: Path, d: Path) -> list[str]:
    return base("evaluate", tmp) + ["--model", str(d)]


def config_file(tmp: Path, text: str) -> Path:
    p = tmp / "my.yaml"
    p.write_text(text)
    return p


# -- the table: (id, build(tmp, monkeypatch) -> argv, expected substrings, absent substrings) ------

CONFIG = [
    ("unknown_field_in_file", lambda t, m: ["graph", "--config", str(config_file(
        t, "teacher:\n  model: {name: resnet8}\n  train: {stepz: 3}\n"))],
     ["my.yaml", "teacher.train.stepz: unknown field"], []),
    ("unknown_field_in_set", lambda t, m: base("graph", t, "data.sourc=npz"),
     ["--set data.sourc=npz", "data.sourc: unknown field"], ["tiny.yaml"]),
    ("rho_out_of_range_in_set", lambda t, m: base("graph", t, "filter.rho=1.5"),
     ["--set filter.rho=1.5", "filter.rho: must be in (0, 1]"], ["tiny.yaml"]),
    ("rho_out_of_range_in_file", lambda t, m: ["graph", "--config", str(config_file(t, "filter: {rho: 0}\n"))],
     ["my.yaml", "filter.rho: must be in (0, 1]"], ["--set"]),
    ("tune_rho_range", lambda t, m: base("graph", t, "tune.rho=[0.8,0.2]"),
     ["tune.rho: must be a range within (0, 1]"], ["tiny.yaml"]),
    ("m_per_class_zero", lambda t, m: base("graph", t, "synth.m_per_class=0"),
     ["synth.m_per_class", "--set synth.m_per_class=0"], ["tiny.yaml"]),
    ("tune_m_range", lambda t, m: base("graph", t, "tune.m_per_class=[0,10]"),
     ["tune.m_per_class: must be a range of positive sample counts"], []),
    ("set_without_equals", lambda t, m: base("graph", t, "teacher.train.steps"), ["key=value"], []),
    ("config_file_missing", lambda t, m: ["graph", "--config", str(t / "nope.yaml")],
     ["config file not found", "nope.yaml"], []),
    ("unknown_model_in_config", lambda t, m: base("graph", t, "student.model.name=resnet9000"),
     ["unknown model 'resnet9000'"], []),
]

NPZ = [
    ("npz_missing_file", lambda t, m: train_on(t, t / "nope.npz"), ["NPZ file not found", "nope.npz"], []),
    ("npz_random_bytes", lambda t, m: train_on(t, _write(t / "d.npz", os.urandom(200))),
     ["d.npz is not a valid NPZ file (not a zip archive)"], ["pickled"]),
    ("npz_truncated_zip", lambda t, m: train_on(t, _write(t / "d.npz", b"PK\x03\x04" + os.urandom(200))),
     ["d.npz is not a valid NPZ file (not a zip archive)"], []),
    ("npz_is_npy", lambda t, m: train_on(t, _npy_as_npz(t)), ["d.npz is a single .npy array"], []),
    ("npz_empty", lambda t, m: train_on(t, npz(t)), ["d.npz holds no arrays"], []),
    ("npz_object_arrays", lambda t, m: train_on(t, npz(t, images=np.array([{}, 1], dtype=object),
                                                        labels=labels(2))),
     ["d.npz", "'images' holds object arrays (pickled data), which rayflow does not load"], []),
    ("npz_no_labels", lambda t, m: train_on(t, npz(t, images=images(), lbls=labels())),
     ["d.npz has no array 'labels'", "it has: 'images', 'lbls'"], []),
    ("npz_test_images_without_labels", lambda t, m: train_on(t, npz(
        t, images=images(), labels=labels(), test_images=images(4))),
     ["d.npz has 'test_images' but no 'test_labels'", "it has: 'images', 'labels', 'test_images'"], []),
    ("npz_bad_image_shape", lambda t, m: train_on(t, npz(t, images=np.zeros((12, 64), np.uint8),
                                                         labels=labels())),
     ["d.npz: images must be (N,H,W), (N,H,W,C) or (N,C,H,W), got shape (12, 64)"], []),
    ("npz_length_mismatch", lambda t, m: train_on(t, npz(t, images=images(12), labels=labels(11))),
     ["d.npz: 12 images but labels of shape (11,)"], []),
    ("npz_nan_labels", lambda t, m: train_on(t, npz(t, images=images(), labels=np.r_[labels(11), np.nan])),
     ["d.npz: classification labels hold NaN"], []),
    ("npz_nan_images", lambda t, m: train_on(t, npz(t, images=np.full((12, 8, 8), np.nan, np.float32),
                                                    labels=labels())),
     ["d.npz: images hold NaN", "uint8"], []),
    ("npz_string_labels", lambda t, m: train_on(t, npz(t, images=images(), labels=np.array(["a", "b"] * 6))),
     ["d.npz: classification labels must be integers"], []),
    ("npz_negative_label", lambda t, m: train_on(t, npz(t, images=images(), labels=labels() - 1)),
     ["d.npz: label -1 is out of range"], []),
    ("npz_label_above_num_classes", lambda t, m: train_on(
        t, npz(t, images=images(), labels=np.r_[labels(11), 5]), "data.num_classes=3"),
     ["d.npz: label 5 at index 11 is out of range for data.num_classes=3 (valid: 0..2)"], []),
    ("float_images_above_one", lambda t, m: train_on(t, npz(t, images=images(dtype=np.float32, hi=3),
                                                            labels=labels())),
     ["d.npz: float32 images have values in [0, 3]", "images must be uint8 (0..255) or float in [0, 1]"], []),
    ("int16_images_above_255", lambda t, m: train_on(t, npz(t, images=images(dtype=np.int16, hi=1000),
                                                            labels=labels())),
     ["d.npz: int16 images have values in [0, 1000]", "must be uint8"], []),
    ("one_class", lambda t, m: train_on(t, npz(t, images=images(), labels=np.zeros(12, int))),
     ["d.npz: classification needs at least 2 classes, found labels {0}"], []),
    ("label_gaps", lambda t, m: train_on(t, npz(t, images=images(), labels=np.array([0, 1, 2, 9] * 3))),
     ["d.npz: labels must be 0..K-1 without gaps; found {0..2, 9}, missing 3..8"], []),
    ("num_classes_contradicts_labels", lambda t, m: train_on(t, npz(t, images=images(), labels=labels()),
                                                             "data.num_classes=5"),
     ["d.npz: data.num_classes=5 but the labels are {0..2}", "classes 3, 4 have no images"], []),
    ("num_classes_contradicts_builtin", lambda t, m: base("train-teacher", t, "data.num_classes=5"),
     ["data.num_classes=5 but data.name=digits has 10 classes"], []),
    ("rgba_images", lambda t, m: train_on(t, npz(t, images=np.zeros((12, 16, 16, 4), np.uint8),
                                                 labels=labels())),
     ["d.npz: images have 4 channels (RGBA), shape (12, 16, 16, 4)", "drop the alpha channel"],
     ["16 channels"]),
    ("test_split_shape_mismatch", lambda t, m: train_on(t, npz(
        t, images=images(), labels=labels(), test_images=images(4, size=9), test_labels=labels(4)),
        "data.image_size=null"),  # with an image_size both splits are resized to it
     ["d.npz: image shape mismatch", "(1, 8, 8)", "(1, 9, 9)"], []),
    ("test_label_out_of_range", lambda t, m: train_on(t, npz(
        t, images=images(), labels=labels(), test_images=images(4), test_labels=np.array([0, 1, 2, 7]))),
     ["d.npz (test split): label 7 at index 3 is out of range for 3 classes"], []),
]

OTHER_DATA = [
    ("val_per_class_too_large", lambda t, m: base("train-teacher", t, "data.val_per_class=100"),
     ["data.val_per_class=100 + data.heldout_per_class=60 + data.n_per_class=40 need 200 images per class",
      "training images"], []),
    ("folder_missing", lambda t, m: train_on(t, t / "nope", source="folder"), ["image folder not found"], []),
    ("folder_empty_class", lambda t, m: train_on(t, folder(t, {"cat": 3, "dog": 0}), source="folder"),
     ["class folder", "dog holds no images"], []),
    ("folder_one_class", lambda t, m: train_on(t, folder(t, {"cat": 3}), source="folder"),
     ["needs at least 2 classes, found 1 class folder (cat)"], []),
    ("folder_corrupt_image", lambda t, m: train_on(t, _corrupt(folder(t, {"cat": 3, "dog": 3}), "dog/1.png",
                                                               b"\x89PNG\r\n\x1a\n junk"), source="folder"),
     ["cannot read image", "dog/1.png"], []),
    ("folder_mixed_sizes_without_image_size", lambda t, m: train_on(t, _odd(folder(t, {"cat": 3, "dog": 3})),
                                                                    "data.image_size=null", source="folder"),
     ["imgs: images differ in size", "odd.png is 9x7", "set data.image_size"], []),
    ("folder_num_classes", lambda t, m: train_on(t, folder(t, {"cat": 3, "dog": 3}), "data.num_classes=3",
                                                 source="folder"),
     ["data.num_classes=3 but image folder", "has 2 class folders (cat, dog)"], []),
    ("fashion_mnist_missing", lambda t, m: (m.setenv("RAYFLOW_DATA_DIR", str(t)),
                                            base("train-teacher", t, "data.name=fashion_mnist"))[1],
     ["Fashion-MNIST file train-images-idx3-ubyte(.gz) not found", "apt-get install dataset-fashion-mnist"], []),
]

MODELS = [
    ("model_wrong_image_size", lambda t, m: evaluate(t, model_dir(t, size=28)),
     ["(image size differs)", "model expects 1x28x28 images with 10 outputs; test data is 1x16x16 with 10 classes"],
     []),
    ("model_wrong_outputs", lambda t, m: evaluate(t, model_dir(t, outputs=3)),
     ["(number of outputs differs)", "model expects 1x16x16 images with 3 outputs; test data is 1x16x16 with 10 classes"], []),
    ("model_json_missing_key", lambda t, m: evaluate(t, model_dir(t, arch={"image_size": None})),
     ["model.json has no key 'image_size'", "it has: "], []),
    ("model_json_unknown_name", lambda t, m: evaluate(t, model_dir(t, arch={"name": "resnet9000"})),
     ["model.json: unknown model 'resnet9000'; known models: ", "resnet8"], []),
    ("model_json_corrupt", lambda t, m: evaluate(t, _corrupt(model_dir(t), "model.json", b"{not json")),
     ["model.json is corrupt"], []),
    ("model_dir_missing", lambda t, m: evaluate(t, t / "nope"), ["nope is not a model artifact (no model.json)"], []),
    ("model_weights_corrupt", lambda t, m: evaluate(t, _corrupt(model_dir(t), "model.safetensors", b"junk" * 9)),
     ["model.safetensors is corrupt or not a safetensors file"], []),
    ("model_of_another_architecture", lambda t, m: evaluate(t, model_dir(t, name="resnet8", weights_of="mlp")),
     ["model.safetensors does not fit model", "missing keys (", "unexpected keys ("], []),
]

REGRESSION_TINY = str(Path(__file__).parents[1] / "rayflow" / "configs" / "regression_tiny.yaml")

# KD methods (rayflow.kd): names at load time; what the models and the task allow before any training
KD = [
    ("kd_unknown_method", lambda t, m: base("graph", t, "student.kd={method: foo, weight: 1}"),
     ["--set student.kd={method: foo, weight: 1}", "student.kd: unknown KD method 'foo'",
      "known methods: blkd, fitnet, at, sp, vid, rkd, pkt, crd"], ["tiny.yaml"]),
    ("kd_sskd_not_implemented", lambda t, m: base("graph", t, "kd_table=[{method: blkd}, {method: sskd}]"),
     ["kd_table: SSKD is not implemented"], []),
    ("kd_takd_is_stages", lambda t, m: base("graph", t, "student.kd=takd"),
     ["TAKD is not a loss", "list it in kd_table"], []),
    ("kd_takd_unknown_assistant", lambda t, m: base("graph", t, "kd_table=[{method: takd, assistant: resnet9000}]"),
     ["kd_table: takd's assistant: unknown model 'resnet9000'; known: "], []),
    ("kd_takd_assistant_too_small", lambda t, m: base("run", t, "kd_table=[{method: takd, assistant: cnn_small, "
                                                                "assistant_kwargs: {widths: [8, 8, 8, 8, 8]}}]"),
     ["kd_table (takd): assistant model 'cnn_small' cannot be built for images 1x16x16", "too small"], []),
    ("kd_blkd_twice", lambda t, m: base("graph", t, "student.kd=blkd"),
     ["--set student.kd=blkd: student.kd: method 'blkd' repeats the Hinton term that fake.kd_weight=0.5"], []),
    ("kd_table_method_twice", lambda t, m: base("graph", t, "kd_table=[at, at]"),
     ["kd_table: method(s) at appear more than once"], []),
    ("kd_at_on_mlp", lambda t, m: base("run", t, "kd_table=[{method: blkd}, {method: at}]"),
     ["kd_table (at): at: needs (N,C,H,W) feature maps on both models", "student 'mlp' has only vector features",
      "student mlp, teacher resnet8"], []),
    ("kd_map_vs_vector", lambda t, m: base("run", t, "student.model.name=cnn_small",
                                           "student.kd={method: fitnet, student_layer: 0, teacher_layer: -1}"),
     ["student.kd: fitnet: cannot regress between a feature map and a vector"], []),
    ("kd_missing_layer", lambda t, m: base("run", t, "student.kd={method: pkt, student_layer: 7}"),
     ["student.kd: pkt: layer 7 does not exist in student 'mlp'"], []),
    ("kd_regression_class_negatives", lambda t, m: ["run", "--config", REGRESSION_TINY, "--set",
                                                    f"output_dir={t / 'out'}", "--set", "teacher.train.steps=1",
                                                    "--set", "kd_table=[{method: crd, negatives: other_class}]"],
     ["kd_table (crd): crd: negatives='other_class' needs classes, but the task is regression", "regression"], []),
]



def own_teacher(tmp: Path, cmd: str = "train-teacher", *sets: str, weights=None, **ck) -> list[str]:
    """`cmd` with teacher.checkpoint naming the user's package (tests/user_teacher.py) in tmp;
    `weights(ut)` writes another weights file."""
    from user_teacher import untrained

    ut = untrained(tmp / "user")
    return base(cmd, tmp, *ut.sets(**({"weights": weights(ut)} if weights else {}), **ck), *sets)


def _renamed_key(ut) -> Path:
    import torch

    state = torch.load(ut.pt, weights_only=True)
    state["head.weight"] = state.pop("fc.weight")
    torch.save(state, ut.root / "renamed.pt")
    return ut.root / "renamed.pt"


def _pickled_module(ut) -> Path:
    import torch

    torch.save(ut.net, ut.root / "whole_module.pt")  # the module object: unpickling runs the user's code
    return ut.root / "whole_module.pt"


TEACHER = [
    ("teacher_factory_does_not_import", lambda t, m: own_teacher(t, factory="nope_pkg.net:build"),
     ["teacher.checkpoint.factory: 'nope_pkg.net:build': cannot import module nope_pkg.net",
      "No module named 'nope_pkg'"], []),
    ("teacher_factory_missing_attr", lambda t, m: own_teacher(t, factory="byot_teacher.net:bulid"),
     ["teacher.checkpoint.factory: 'byot_teacher.net:bulid': module byot_teacher.net has no attribute 'bulid'"],
     []),
    ("teacher_weights_missing", lambda t, m: own_teacher(t, weights=lambda ut: ut.root / "nope.pt"),
     ["teacher.checkpoint.weights:", "nope.pt does not exist"], []),
    ("teacher_weights_need_unpickling", lambda t, m: own_teacher(t, weights=_pickled_module),
     ["whole_module.pt: refused: unpickling it would run arbitrary code (it holds byot_teacher.net.TinyNet, not "
      "only tensors)", "save model.state_dict()"], []),
    ("teacher_state_dict_keys", lambda t, m: own_teacher(t, weights=_renamed_key),
     ["renamed.pt does not fit model", "1 missing key (fc.weight)", "1 unexpected key (head.weight)"],
     []),
    ("teacher_channels", lambda t, m: own_teacher(t, input_channels=3),
     ["teacher.checkpoint: the teacher does not fit the data (1x16x16 images)",
      "the network takes 3-channel images; the data has 1"], []),
    ("teacher_input_size", lambda t, m: own_teacher(t, factory="byot_teacher.net:build_fixed", kwargs={},
                                                    input_size=16, weights=_fixed_weights),
     ["teacher.checkpoint: one forward of a zero batch failed (byot_teacher.net:build_fixed, input 1x16x16)"], []),
    ("teacher_outputs", lambda t, m: own_teacher(t, factory="byot_teacher.net:build_fixed", kwargs={"num_classes": 3},
                                                 weights=lambda ut: _fixed_weights(ut, 3)),
     ["teacher.checkpoint: the teacher gives outputs of shape [3] per image; the data has 10 classes"], []),
    ("teacher_kd_needs_maps", lambda t, m: own_teacher(t, "run", "student.model.name=resnet8", "fake.kd_weight=0",
                                                       "student.kd=at"),
     ["student.kd: KD method 'at' cannot use the external teacher: it exposes only logits and penultimate "
      "features"], []),
    ("student_factory_does_not_import", lambda t, m: base("graph", t, "student.model.name=nope_pkg.net:build"),
     ["student.model.name: 'nope_pkg.net:build': cannot import module nope_pkg.net"], []),
]


def _fixed_weights(ut, num_classes: int = 10) -> Path:
    import importlib

    import torch

    net = importlib.import_module("byot_teacher.net").build_fixed(num_classes)
    torch.save(net.state_dict(), ut.root / "fixed.pt")
    return ut.root / "fixed.pt"


TABLE = CONFIG + NPZ + OTHER_DATA + MODELS + KD + TEACHER


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def _npy_as_npz(tmp: Path) -> Path:
    np.save(tmp / "d.npy", images())
    return (tmp / "d.npy").rename(tmp / "d.npz")


def _odd(root: Path) -> Path:
    from PIL import Image

    Image.new("L", (9, 7)).save(root / "dog" / "odd.png")
    return root


def _corrupt(d: Path, name: str, data: bytes) -> Path:
    (d / name).write_bytes(data)
    return d


@pytest.mark.parametrize("build, expected, absent", [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_bad_input_is_one_clear_line(build, expected, absent, tmp_path, monkeypatch, capsys):
    argv = build(tmp_path, monkeypatch)
    capsys.readouterr()  # building a model artifact may print; only main's output counts
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("rayflow: error: "), err
    assert "Traceback" not in err and len(lines[0]) < 400, err
    for s in expected:
        assert s in lines[0], f"{s!r} not in {lines[0]!r}"
    for s in absent:
        assert s not in lines[0], f"{s!r} in {lines[0]!r}"
    assert not list((tmp_path / "out").rglob("model.safetensors")), "an artifact was written before the error"


def test_consistent_num_classes_is_used(tmp_path):
    """data.num_classes that fits the labels is the class count (labels 0..2 of 3 classes)."""
    from rayflow.config import DataConfig
    from rayflow.data import load_splits

    p = npz(tmp_path, images=images(30), labels=labels(30), test_images=images(6), test_labels=labels(6))
    assert load_splits(DataConfig(name="npz", path=str(p), num_classes=3)).num_classes == 3


def test_float_images_in_unit_range_become_uint8(tmp_path):
    from rayflow.config import DataConfig
    from rayflow.data import load_splits

    x = np.linspace(0, 1, 30 * 64, dtype=np.float32).reshape(30, 8, 8)
    s = load_splits(DataConfig(name="npz", path=str(npz(tmp_path, images=x, labels=labels(30)))))
    assert s.train.images.dtype == np.uint8 and {0, 255} <= set(np.unique(np.r_[
        s.train.images.ravel(), s.test.images.ravel()]).tolist())


# -- during training: a loss that goes non-finite, labels in natural units -----------------------


def _last_line_is_the_error(rc: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert "Traceback" not in err and lines[-1].startswith("rayflow: error: "), err
    assert sum(line.startswith("rayflow: error") for line in lines) == 1, err
    return lines[-1]


def test_non_finite_loss_stops_the_stage_at_once(tmp_path, capsys):
    """A huge learning rate: the teacher's loss goes NaN within a few steps; the stage stops there
    (not after its 150 steps) with one line naming it, the step and the likely cause."""
    rc = main(base("train-teacher", tmp_path, "teacher.train.optim.lr=1e6", "teacher.train.steps=150"))
    line = _last_line_is_the_error(rc, capsys.readouterr().err)
    assert "teacher" in line and "learning rate too high, or labels not normalised?" in line, line
    step = int(line.split(" at step ")[1].split()[0])
    assert 1 <= step < 150, line
    assert " loss is nan " in line or " loss is inf " in line, line
    assert not list((tmp_path / "out").rglob("model.safetensors")), "a diverged teacher was stored"


@pytest.mark.slow
def test_non_finite_loss_is_one_line_through_ray_train(tmp_path, capsys, ray_session):
    """The same through Ray Train: the worker's error reaches the CLI as the same one line."""
    argv = base("train-teacher", tmp_path, "teacher.train.optim.lr=1e6", "teacher.train.steps=150",
                "runtime.executor=ray")
    argv.remove("--executor"), argv.remove("local")
    line = _last_line_is_the_error(main(argv), capsys.readouterr().err)
    assert "teacher" in line and "at step" in line and "learning rate too high" in line, line


def _angles_npz(tmp: Path, n: int = 240) -> Path:
    """Labels are angles in 0..90 degrees; the image's brightness follows the angle (learnable)."""
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 90, n)
    x = (np.clip(y[:, None, None] / 90 * 200 + rng.normal(0, 10, (n, 8, 8)), 0, 255)).astype(np.uint8)
    return npz(tmp, "angles.npz", images=x, labels=y)


def test_regression_labels_in_degrees_are_normalised_and_mae_is_in_degrees(tmp_path, capsys):
    rc = main(train_on(tmp_path, _angles_npz(tmp_path), "data.task=regression", "data.label_unit=deg",
                       "data.heldout_per_class=0", "data.n_per_class=null", "teacher.train.steps=60"))
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "labels in [" in err and "deg normalised to [0, 1]" in err, err
    m = dict(kv.split("=") for kv in out.split(": ", 1)[1].split())
    mae, mae_deg = float(m["test_mae"]), float(m["test_mae_deg"])
    assert np.isfinite(mae) and 0 < mae < 1, out  # the networks saw [0, 1] labels
    lo, hi = 0, 90  # the span of the training labels, about 90 degrees
    assert mae_deg == pytest.approx(mae * (hi - lo), rel=0.05), out  # reported in the user's unit
    assert mae_deg < 30, out  # learned something (predicting the mean would be ~22.5; noise-free ~0)


def test_declared_label_range_refuses_a_label_outside_it(tmp_path, capsys):
    rc = main(train_on(tmp_path, _angles_npz(tmp_path), "data.task=regression", "data.label_range=[0, 45]"))
    line = _last_line_is_the_error(rc, capsys.readouterr().err)
    assert "angles.npz" in line and "outside the label range [0, 45]" in line, line


def test_images_too_small_for_the_gan_are_refused_before_any_training(tmp_path, capsys):
    """2x2 pictures used to train every model and then crash at the cGAN (and in the summary)."""
    p = npz(tmp_path, images=np.random.default_rng(0).integers(0, 255, (600, 2, 2), dtype=np.uint8),
            labels=np.arange(600) % 3)
    argv = base("run", tmp_path, "data.name=npz", f"data.path={p}", "data.image_size=null")
    line = _last_line_is_the_error(main(argv), capsys.readouterr().err)
    assert "images of 1x2x2 do not fit the cGAN" in line and "data.image_size" in line, line
    assert not list((tmp_path / "out").rglob("model.safetensors")), "a model trained before the refusal"


def test_headroom_without_a_perfect_generator_row_still_formats():
    from rayflow.report import format_results, headroom

    rows = [{"model": "teacher", "test_acc": 90.0}, {"model": "NOKD student", "test_acc": 80.0}]
    d = headroom(rows, "test_acc")
    assert "not measured" in d["verdict"] and "oracle" in d["verdict"]
    assert "not measured" in format_results({"rows": rows, "metric": "test_acc", "diagnostic": d})
