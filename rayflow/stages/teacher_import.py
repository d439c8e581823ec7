"""The teacher stage with `teacher.checkpoint`: the user's teacher imported, never trained.

`check` holds the checkpoint against the data before any compute (weights readable without
arbitrary unpickling, state_dict keys, channels, output count: one CheckpointError line each);
`build` writes the same teacher artifact a trained teacher has (model.json + model.safetensors,
the adapter's weights) and scores it on the test and validation splits as training would, so the
results and the report show its accuracy. The key covers the weights file's bytes (`content`), so
a changed file is a new teacher.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
import re
import time
from pathlib import Path
from typing import Any

import torch

from rayflow.checkpoint import CheckpointError
from rayflow.config import ModelConfig, PipelineConfig
from rayflow.config_teacher import TeacherCheckpoint

log = logging.getLogger("rayflow")
FIELD = "teacher.checkpoint"


def applies(cfg: PipelineConfig, node: Any) -> bool:
    return node.stage == "teacher" and cfg.teacher.checkpoint is not None


def model_config(ck: TeacherCheckpoint) -> ModelConfig:
    """The network the imported teacher is, as model.json names it."""
    if ck.artifact is not None:
        from rayflow.models.io import read_arch

        arch = read_arch(ck.artifact)
        return ModelConfig(name=arch["name"], kwargs=arch["kwargs"])
    from rayflow.models.external import NAME

    return ModelConfig(name=NAME, kwargs=ck.adapter_kwargs())


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_digest(p: Path) -> str:
    st = p.stat()
    return _sha256(str(p.resolve()), st.st_size, st.st_mtime_ns)


def content(cfg: PipelineConfig, params: dict) -> dict:
    """What the teacher's key covers beyond config values: the checkpoint files' bytes."""
    ck = cfg.teacher.checkpoint
    if ck is None:
        return {}
    if ck.artifact is not None:
        from rayflow.models.io import ARCH, WEIGHTS

        files = [Path(ck.artifact) / ARCH, Path(ck.artifact) / WEIGHTS]
    else:
        files = [Path(ck.weights).expanduser()]
    try:
        return {FIELD: [_file_digest(f) for f in files]}
    except OSError as e:
        raise CheckpointError(f"{FIELD}: cannot read {e.filename}: {e.strerror}") from None


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from safetensors, or from a torch file read with weights_only=True (also inside
    a {'state_dict': ...} or {'model': ...} wrapper); anything needing arbitrary unpickling is refused."""
    p = Path(path).expanduser()
    if p.suffix == ".safetensors":
        from rayflow.checkpoint import load_weights

        return load_weights(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it holds {found.group(1)}, not only tensors" if found else "torch.load(weights_only=True) refused it"
        raise CheckpointError(f"{FIELD}.weights {p}: refused: unpickling it would run arbitrary code ({what}); "
                              "save model.state_dict() or a .safetensors file instead") from None
    except Exception as e:  # noqa: BLE001 - a corrupt file: one line naming it
        raise CheckpointError(f"{FIELD}.weights {p} is corrupt or not a torch file: {type(e).__name__}: "
                              f"{str(e).strip()[:160]}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{FIELD}.weights {p}: expected a state_dict (names -> tensors), got "
                              f"{type(obj).__name__}")
    return obj


def _net(cfg: ModelConfig, shape: tuple[int, int, int], outputs: int) -> torch.nn.Module:
    from rayflow.models import build_model

    c, h, _ = shape
    try:
        return build_model(cfg.name, in_channels=c, image_size=h, num_outputs=outputs, **cfg.kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{FIELD}: the teacher does not fit the data ({c}x{h}x{h} images): {e}") from None


def teacher_net(cfg: PipelineConfig, shape: tuple[int, int, int], num_classes: int | None) -> torch.nn.Module:
    """A freshly built teacher network (the imported one's architecture, or teacher.model)."""
    outputs = 1 if num_classes is None else num_classes
    if cfg.teacher.checkpoint is None:
        from rayflow.models import build_model

        m = cfg.teacher.model
        return build_model(m.name, in_channels=shape[0], image_size=shape[1], num_outputs=outputs, **m.kwargs)
    return _net(model_config(cfg.teacher.checkpoint), shape, outputs)


def check(ck: TeacherCheckpoint, shape: tuple[int, int, int], num_classes: int | None) -> torch.nn.Module:
    """The imported teacher, weights loaded, held against the data: CheckpointError otherwise."""
    from rayflow.checkpoint import load_into

    outputs = 1 if num_classes is None else num_classes
    if ck.artifact is not None:
        from rayflow.models.io import check_fits, load_model, read_arch

        check_fits(ck.artifact, read_arch(ck.artifact), shape, num_classes)
        return load_model(ck.artifact)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _net(model_config(ck), shape, outputs)
    load_into(model.net, read_state(ck.weights), f"{FIELD}.weights {ck.weights}")
    model.eval()
    c, h, _ = shape
    try:
        with torch.no_grad():
            out, feats = model(torch.zeros(2, c, h, h), return_features=True)
    except Exception as e:  # noqa: BLE001 - the user's forward: one line, not its traceback
        raise CheckpointError(f"{FIELD}: one forward of a zero batch failed ({ck.factory}, input "
                              f"{model._in_channels}x{model.input_size}x{model.input_size}): "
                              f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}; check input_size and "
                              "input_channels") from None
    if out.dim() != 2 or out.shape[1] != outputs:
        kind = "regression (1 output)" if num_classes is None else f"{num_classes} classes"
        raise CheckpointError(f"{FIELD}: the teacher gives outputs of shape {list(out.shape[1:])} per image; the "
                              f"data has {kind}")
    log.debug("%s: %s gives %d outputs and %d-dim features", FIELD, ck.factory, outputs, feats[-1].shape[1])
    return model


def build(runner: Any, node: Any, v: Any, inputs: dict, out: Path, key: str) -> dict:
    """The teacher artifact from the checkpoint, and its scores (test unless validation mode, val)."""
    from rayflow.models.io import save_model
    from rayflow.train.loop import evaluate
    from rayflow.train.tasks import Task

    t0 = time.perf_counter()
    cfg, s = runner.cfg, runner.splits
    ck = cfg.teacher.checkpoint
    model = check(ck, s.shape, s.num_classes)
    mc = model_config(ck)
    c, h, _ = s.shape
    task = Task.of(s.num_classes)
    log.info("[teacher] importing %s (no training)", ck.artifact or f"{ck.factory} with {ck.weights}")
    save_model(out, model.state_dict(), mc, c, h, task.num_outputs)
    metrics: dict = {"imported": 1}
    if s.val is not None and len(s.val):
        metrics.update(evaluate(model, s.val, task, prefix="val_"))
    if not cfg.data.val_fraction:  # a validation-mode run never looks at the test set
        metrics.update(evaluate(model, s.test, task, prefix="test_"))
    metrics["wall_s"] = time.perf_counter() - t0
    shown = {k: round(val, 4) for k, val in metrics.items() if k.startswith(("test_", "val_"))}
    log.info("[teacher] imported teacher: %s", shown)
    return metrics
