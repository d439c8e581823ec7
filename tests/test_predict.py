"""`rayflow predict` and the student folder's contract, on hand-made students (no pipeline): the
exported program loads in a process where rayflow cannot be imported and predicts what rayflow
predicts; in-process and Ray Data batch inference agree exactly; bad inputs fail in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import rayflow
from rayflow.cli import main
from s3_server import s3_location, s3_server  # noqa: F401

CLASSES = ["cat", "dog", "eel"]

# Plain torch + PIL only: rayflow is made unimportable before anything else runs.
PLAIN = """
import sys
sys.modules["rayflow"] = None
import json
import numpy as np
import torch
from PIL import Image
folder, files = sys.argv[1], json.loads(sys.argv[2])
try:
    import rayflow
    raise SystemExit("rayflow was importable")
except ImportError:
    pass
contract = json.load(open(folder + "/student.json"))
inp = contract["input"]
model = torch.export.load(folder + "/" + contract["files"]["program"]).module()
out = []
for f in files:
    img = Image.open(f).convert(inp["mode"])
    if img.size != (inp["width"], inp["height"]):
        img = img.resize((inp["width"], inp["height"]), Image.BILINEAR)
    a = np.asarray(img, dtype=np.uint8)
    x = torch.from_numpy(a[None] if a.ndim == 2 else a.transpose(2, 0, 1).copy())[None]
    y = model(x)
    out.append(y.softmax(1)[0].tolist() if contract["task"] == "classification" else float(y[0]))
print(json.dumps(out))
"""


def plain_torch_outputs(student: Path, files: list[str]) -> list:
    """Per image: the probabilities (or the value) the exported program gives, with rayflow unimportable."""
    p = subprocess.run([sys.executable, "-c", PLAIN, str(student), json.dumps(files)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def assert_matches_program(df: pd.DataFrame, outputs: list, class_names: list[str]) -> None:
    """rayflow's rows and the plain-torch outputs: the same class for every image, the same probabilities."""
    probs = np.array(outputs)
    assert list(df["predicted"]) == [class_names[i] for i in probs.argmax(1)]
    np.testing.assert_allclose(df[[f"prob_{c}" for c in class_names]].to_numpy(), probs, rtol=0, atol=1e-6)


def make_student(root: Path, task: str = "classification", channels: int = 1, size: int = 16) -> Path:
    """A student folder from an untrained (seeded) network, through the exporter `distill` uses."""
    from rayflow.config import ModelConfig
    from rayflow.data.labels import LabelRange
    from rayflow.labels import space_of
    from rayflow.models import build_model
    from rayflow.models.io import read_arch, save_model
    from rayflow.student.export import build_folder, contract_of

    k = len(CLASSES) if task == "classification" else None
    torch.manual_seed(0)
    net = build_model("cnn_small", in_channels=channels, image_size=size, num_outputs=k or 1)
    src = root / "artifact"
    src.mkdir(parents=True)
    save_model(src, net.state_dict(), ModelConfig(name="cnn_small"), channels, size, k or 1)
    splits = SimpleNamespace(num_classes=k, train=SimpleNamespace(class_names=CLASSES))
    space = space_of(k, LabelRange(0.0, 90.0, "deg") if k is None else None)
    contract = contract_of(read_arch(src), splits, space, {"artifact": str(src)}, {"seed": 0})
    out = root / "student"
    out.mkdir()
    build_folder(out, src, contract, lambda module, folder: "card\n")
    return out


def write_images(root: Path, n: int = 12, size: int = 16, rgb_every: int = 4) -> list[str]:
    """PNGs of mixed modes and sizes (every `rgb_every`-th RGB at twice the size: converted, resized)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        if i % rgb_every == 0:
            img = Image.fromarray(rng.integers(0, 256, (2 * size, 2 * size, 3), dtype=np.uint8), "RGB")
        else:
            img = Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L")
        f = root / f"img{i:03d}.png"
        img.save(f)
        files.append(str(f))
    return files


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    return make_student(root), write_images(root / "images")


def test_program_without_rayflow_predicts_what_rayflow_predicts(student, tmp_path):
    folder, files = student
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "model.json", "model.pt2", "student.json",
                                                  "MODEL_CARD.md"}
    df = rayflow.predict(folder, Path(files[0]).parent)  # a folder: its images, sorted
    assert list(df["input"]) == files
    assert_matches_program(df, plain_torch_outputs(folder, files), CLASSES)
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(folder), *files, "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), df, check_dtype=False, check_exact=False, atol=1e-7)
    # load_student: the same module, for uint8 NCHW tensors
    m = rayflow.load_student(folder)
    from rayflow.student.inputs import read_image_file

    x = torch.from_numpy(np.stack([read_image_file(f, 1, 16) for f in files]))
    assert torch.equal(m(x).softmax(1), torch.tensor(df[[f"prob_{c}" for c in CLASSES]].to_numpy()))


def test_arrays_go_through_the_data_loaders_sizing(student, tmp_path):
    """NPZ `x` and a Parquet `image` column: 8x8 arrays are upscaled to 16 as the data loader does,
    an (N, H, W) array is one channel, and ids come from the Parquet `id` column."""
    folder, _ = student
    x = np.random.default_rng(1).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=x)
    df = rayflow.predict(folder, tmp_path / "x.npz")
    assert list(df["input"]) == ["0", "1", "2", "3", "4"]
    up = torch.from_numpy(x.repeat(2, 1).repeat(2, 2)[:, None].copy())
    expect = rayflow.load_student(folder)(up).softmax(1).detach().numpy()
    np.testing.assert_array_equal(df[[f"prob_{c}" for c in CLASSES]].to_numpy(), expect)
    pd.testing.assert_frame_equal(rayflow.predict(folder, x), df)  # the same images, in memory
    table = pd.DataFrame({"id": [f"a{i}" for i in range(5)], "image": [a.tolist() for a in x]})
    table.to_parquet(tmp_path / "x.parquet")
    out = tmp_path / "p.parquet"
    assert main(["predict", "--model", str(folder), str(tmp_path / "x.parquet"), "--out", str(out)]) == 0
    got = pd.read_parquet(out)
    assert list(got["input"]) == [f"a{i}" for i in range(5)]
    pd.testing.assert_frame_equal(got.drop(columns="input"), df.drop(columns="input"))


def test_arrays_are_sized_as_the_students_training_images_were(student, tmp_path):
    """A student trained on a user's own arrays (data.name npz / parquet / folder) saw them resized by
    data/images.py `resize_array` (its student.json says `input.resize: fit`): predict sizes arrays the
    same way, not by the built-in sets' upscale / pad rule, so a picture predicts as it trained."""
    from rayflow.data.images import resize_array
    from rayflow.student.export import contract_of
    from rayflow.student.inputs import BUILTIN, FIT

    import shutil

    folder = tmp_path / "student"
    shutil.copytree(student[0], folder)  # the module's student stays as it is
    doc = json.loads((folder / "student.json").read_text())
    assert doc["input"]["resize"] == BUILTIN  # a built-in set's student (contract_of without data_name)
    arch = {"in_channels": 1, "image_size": 16}
    splits = SimpleNamespace(num_classes=len(CLASSES), train=SimpleNamespace(class_names=CLASSES))
    assert contract_of(arch, splits, None, {}, {}, "npz")["input"]["resize"] == FIT
    assert contract_of(arch, splits, None, {}, {}, "digits")["input"]["resize"] == BUILTIN
    doc["input"]["resize"] = FIT
    (folder / "student.json").write_text(json.dumps(doc))
    x = np.random.default_rng(2).integers(0, 256, (4, 1, 12, 12), dtype=np.uint8)  # 12 -> 16: no multiple
    fitted = resize_array(x, 16)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    assert not np.array_equal(fitted, padded)
    expect = rayflow.load_student(folder)(torch.from_numpy(fitted)).softmax(1).detach().numpy()
    np.testing.assert_allclose(rayflow.predict(folder, x)[[f"prob_{c}" for c in CLASSES]].to_numpy(), expect,
                               rtol=1e-5, atol=1e-6)


def test_regression_student_gives_the_value_in_the_label_unit(tmp_path):
    folder = make_student(tmp_path, task="regression")
    contract = json.loads((folder / "student.json").read_text())
    assert contract["output"] == {"kind": "value", "shape": ["N"], "range": [0.0, 90.0], "unit": "deg"}
    files = write_images(tmp_path / "images", n=4)
    df = rayflow.predict(folder, files)
    assert list(df.columns) == ["input", "value"]
    from rayflow.models.io import load_model
    from rayflow.student.inputs import read_image_file

    x = torch.from_numpy(np.stack([read_image_file(f, 1, 16) for f in files]))
    raw = load_model(folder)(x.float() / 127.5 - 1.0)[:, 0].detach().numpy()
    np.testing.assert_allclose(df["value"].to_numpy(), raw * 90.0, rtol=1e-6)
    np.testing.assert_allclose(df["value"].to_numpy(), plain_torch_outputs(folder, files), atol=1e-4)  # deg


def test_failed_export_leaves_the_previous_student_and_no_temp_folder(student, tmp_path):
    from rayflow.store import open_store
    from rayflow.student.export import write_student

    folder, _ = student
    store = open_store(str(tmp_path / "out"))
    contract = json.loads((folder / "student.json").read_text())
    write_student(store, folder, contract, lambda module, out: "first card\n")
    final = tmp_path / "out" / "student"
    before = {p.name: p.read_bytes() for p in final.iterdir()}

    def broken(module, out):
        assert (out / "model.pt2").is_file()  # mid-export: weights and program written, card and contract not
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_student(store, folder, contract, broken)
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["student"]  # no temp folder left
    fresh = open_store(str(tmp_path / "fresh"))
    with pytest.raises(RuntimeError):
        write_student(fresh, folder, contract, broken)
    assert list((tmp_path / "fresh").iterdir()) == []  # never a half-written student/


def test_student_on_an_object_store(student, s3_location):
    """An s3:// output: every file uploaded, student.json (the folder's marker) among them."""
    from rayflow.store import open_store
    from rayflow.student.export import write_student

    folder, _ = student
    store = open_store(s3_location)
    uri = write_student(store, folder, json.loads((folder / "student.json").read_text()), lambda m, out: "card\n")
    assert uri == f"{s3_location}/student"
    from pyarrow.fs import FileSelector

    names = {f.base_name for f in store.fs.get_file_info(FileSelector(f"{store.root}/student"))}
    assert names == {p.name for p in folder.iterdir()}
    assert json.loads(store.read_text("student/student.json")) == json.loads((folder / "student.json").read_text())


@pytest.mark.parametrize("argv, says", [
    (["nothing-here.png"], "input not found: nothing-here.png"),
    (["{npz_y}"], "has no array 'x' or 'images'"),
    (["{bad_png}"], "cannot read image"),
    (["{img}", "--out", "p.txt"], "the suffix picks the format"),
    pytest.param(["{img}", "--gpu"], "this machine has no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU")),
])
def test_bad_predict_inputs_fail_in_one_line(student, tmp_path, capsys, argv, says):
    folder, files = student
    np.savez(tmp_path / "y.npz", y=np.zeros(3))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    argv = [a.format(npz_y=tmp_path / "y.npz", bad_png=tmp_path / "bad.png", img=files[0]) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "p.csv")]
    assert main(["predict", "--model", str(folder), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert main(["predict", "--model", str(tmp_path), files[0], "--out", str(tmp_path / "p.csv")]) == 2
    assert "is not a rayflow student folder" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_data_batch_inference_gives_the_same_predictions(student, tmp_path, ray_session):
    """Two chunks of 256 through a Ray Data actor pool: the very numbers of the in-process run."""
    folder, _ = student
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(2).integers(0, 256, (300, 1, 16, 16), dtype=np.uint8))
    local = rayflow.predict(folder, tmp_path / "x.npz", use_ray=False)
    on_ray = rayflow.predict(folder, tmp_path / "x.npz", use_ray=True, actors=1)
    assert len(local) == 300
    pd.testing.assert_frame_equal(on_ray, local, check_exact=True)
