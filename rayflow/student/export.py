"""Writes `<output_dir>/student/` from a trained student artifact, whole or not at all.

The folder is built in a temp dir on the store's own disk (`.student.<token>.tmp`) and committed by
renames, the store's way (rayflow/store.py): a reader sees the previous student or the new one,
never a half-written folder, and a failed export leaves the previous one as it was. On an object
store the files are uploaded with `student.json`, the folder's marker, written last.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch

from rayflow.checkpoint import CheckpointError
from rayflow.models.io import ARCH, WEIGHTS, load_model, read_arch
from rayflow.config_data import USER_SOURCES
from rayflow.student.inputs import BUILTIN, FIT
from rayflow.student.module import CONTRACT, PREPROCESSING, PROGRAM, StudentModule, wrap

log = logging.getLogger("rayflow")

STUDENT_DIR = "student"


def contract_of(arch: dict, splits, space, source: dict, settings: dict, data_name: str = "") -> dict:
    """student.json: the input contract, the task and its outputs, where the student came from."""
    c, size = arch["in_channels"], arch["image_size"]
    doc = {"format": 1, "task": "classification" if splits.num_classes is not None else "regression",
           "input": {"channels": c, "height": size, "width": size, "dtype": "uint8", "layout": "NCHW",
                     "mode": "L" if c == 1 else "RGB", "preprocessing": PREPROCESSING,
                     "resize": FIT if data_name in USER_SOURCES else BUILTIN},
           "files": {"program": PROGRAM, "weights": WEIGHTS, "architecture": ARCH, "card": "MODEL_CARD.md"}}
    if splits.num_classes is not None:
        doc["class_names"] = class_names(splits, data_name)
        doc["output"] = {"kind": "logits", "shape": ["N", splits.num_classes]}
    else:
        r = space.range
        lo, hi, unit = (0.0, 1.0, "") if r is None else (float(r.lo), float(r.hi), r.unit)
        doc["output"] = {"kind": "value", "shape": ["N"], "range": [lo, hi], "unit": unit}
    doc.update(source=source, settings=settings)
    return doc


def class_names(splits, data_name: str = "") -> list[str]:
    """The data's class names (folder names, a data set's own), else "0".."C-1"."""
    from rayflow.data.sources import FASHION_MNIST_CLASSES

    for names in (getattr(splits, "class_names", None), getattr(splits.train, "class_names", None),
                  FASHION_MNIST_CLASSES if data_name == "fashion_mnist" else None):
        if names and len(names) == splits.num_classes:
            return [str(n) for n in names]
    return [str(i) for i in range(splits.num_classes)]


def export_program(module: StudentModule, c: int, size: int, path: Path) -> None:
    """A torch.export program with a dynamic batch size, checked against the eager module before it
    counts: `torch.export.load(path).module()` must give the very same outputs."""
    x = torch.randint(0, 256, (4, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with warnings.catch_warnings():  # "No complete tensor found in the group" (BN buffers sharing storage)
        warnings.simplefilter("ignore", UserWarning)
        ep = torch.export.export(module, (x,), dynamic_shapes={"x": {0: batch}})
        torch.export.save(ep, str(path))
        loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        for xb in (x, x[:1]):
            if not torch.equal(loaded(xb), module(xb)):
                raise CheckpointError(f"{path}: the exported program's outputs differ from the model's")


def build_folder(out: Path, model_dir: Path, contract: dict, card) -> dict:
    """Fills `out`: weights + model.json copied, the exported program, MODEL_CARD.md from
    `card(module, out) -> text`, student.json last. Returns the contract written."""
    for name in (WEIGHTS, ARCH):
        shutil.copyfile(model_dir / name, out / name)
    arch = read_arch(out)
    module = wrap(load_model(out), contract).eval()
    export_program(module, arch["in_channels"], arch["image_size"], out / PROGRAM)
    (out / "MODEL_CARD.md").write_text(card(module, out))
    (out / CONTRACT).write_text(json.dumps(contract, indent=2))
    return contract


def write_student(store, model_dir: Path, contract: dict, card) -> str:
    """`<output_dir>/student/` committed whole (see the module docstring); returns its location."""
    from rayflow.store_fs import new_token

    if not store.is_local:
        return _write_remote(store, model_dir, contract, card)
    root = Path(store.root)
    final = root / STUDENT_DIR
    for stale in root.glob(f".{STUDENT_DIR}.*.tmp"):  # a killed export's leftovers
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".{STUDENT_DIR}.{new_token()}.tmp"
    tmp.mkdir(parents=True)
    try:
        build_folder(tmp, model_dir, contract, card)
        old = root / f".{STUDENT_DIR}.{new_token()}.old.tmp"
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("[student] wrote %s", final)
    return str(final)


def _write_remote(store, model_dir: Path, contract: dict, card) -> str:
    import tempfile

    import pyarrow.fs as pafs

    with tempfile.TemporaryDirectory(prefix="rayflow-student-") as tmp:
        build_folder(Path(tmp), model_dir, contract, card)
        base = f"{store.root}/{STUDENT_DIR}"
        for f in sorted(Path(tmp).iterdir(), key=lambda f: f.name == CONTRACT):  # the marker last
            pafs.copy_files(str(f), f"{base}/{f.name}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=store.fs)
    uri = f"{store.location.rstrip('/')}/{STUDENT_DIR}"
    log.info("[student] wrote %s", uri)
    return uri
