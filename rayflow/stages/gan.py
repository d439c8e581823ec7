"""The cGAN stage: train on the executor, probe its committed checkpoints, select, write the artifact.

Training (`gan/training.py`), the selection policy (`gan/selection.py`) and the artifact format
(`gan/artifact.py`) live in the GAN package; this module only wires them to the graph.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayflow.checkpoint import load_state, save_state
from rayflow.labels import space_of
from rayflow.stages.graph import Node, StageDef, View, digest, register
from rayflow.stages.y2h import Y2H, y2h_inputs

log = logging.getLogger("rayflow")

# Selection and sampling settings do not change training: the training run (and its checkpoints)
# is named without them, so changing them re-probes the checkpoints instead of retraining.
SAMPLING_ONLY = {"select", "min_consistency", "recalibrate_bn"}
READS = ("data", "gan", "runtime.executor", "scaling.num_workers")  # executor and DDP world change the GAN
# Label consistency (teacher argmax == conditioning class) is measured twice, on different samples:
# each checkpoint's probe (the training's "step N" lines, the report's curve) on PROBE_PER_CLASS
# samples per class, and the artifact's own generator (per_class: routed over checkpoints) on
# FINAL_PER_CLASS fresh ones (the report's cGAN table); one log line gives both, labelled.
PROBE_PER_CLASS, FINAL_PER_CLASS = 100, 200
NEAREST_GRID = "nearest_real.png"  # the artifact's samples over their nearest real training images


def train_run_name(v: View, teacher_key: str, y2h_key: str | None = None) -> str:
    """Named after what training reads, not after the pipeline (renaming a config must not throw
    away an hour of GAN training) nor the selection settings; `y2h_key`: the fitted label input's."""
    doc = {"data": v["data"].model_dump(mode="json"),
           "gan": v["gan"].model_dump(mode="json", exclude=SAMPLING_ONLY),
           "executor": v["runtime.executor"], "workers": v["scaling.num_workers"], "teacher": teacher_key}
    if y2h_key is not None:  # only then: every other run keeps its name
        doc["y2h"] = y2h_key
    return f"gan-{digest(doc)}"


def probe_checkpoints(checkpoints: list, cfg: Any, train: Any, teacher_dir: str | None) -> list[tuple[dict, Any]]:
    """(metrics, checkpoint) per committed checkpoint, probed afresh in the driver with the current
    sampling settings, so changing `gan.select`/`recalibrate_bn` needs no retraining and every
    candidate is measured the same way."""
    from rayflow.gan.sampling import (
        consistency_probe,
        ema_generator,
        for_sampling,
        probe_reals,
    )
    from rayflow.models.io import load_model

    teacher = load_model(teacher_dir) if teacher_dir and cfg.select != "last" else None
    reals = probe_reals(train) if teacher is not None else None
    out = []
    for ck in checkpoints:
        with ck.open() as d:
            st = load_state(Path(d) / "state.pt")
        m: dict = {"step": int(st["step"])}
        if teacher is not None:
            G = for_sampling(ema_generator(st, cfg, train), cfg, train.num_classes)
            m.update(consistency_probe(G, teacher, train.num_classes, per_class=PROBE_PER_CLASS, real_u8=reals))
            per = [np.nan if v is None else v for v in m["label_consistency_per_class"]]
            worst = int(np.nanargmin(per))
            log.debug("[gan] checkpoint step %5d: label consistency %5.1f %% (class %d worst: %.0f %%), "
                      "FID (teacher features) %.2f", m["step"], m["label_consistency"], worst, per[worst],
                      m["fid_teacher_features"])
        out.append((m, ck))
    return out


def _probe_range(candidates: list[tuple[dict, Any]]) -> str:
    """`; its N checkpoint probes: 10.3-20.8 %, FID 12.64-16.82 (100 samples per class, vs train reals)`."""
    ms = [m for m, _ in candidates if "label_consistency" in m and "fid_teacher_features" in m]
    if not ms:
        return ""
    lc, fid = [m["label_consistency"] for m in ms], [m["fid_teacher_features"] for m in ms]
    return (f"; its {len(ms)} checkpoint probes: {min(lc):.1f}-{max(lc):.1f} %, FID {min(fid):.2f}-{max(fid):.2f} "
            f"({PROBE_PER_CLASS} samples per class, vs train reals)")


def _state(ck: Any) -> dict:
    with ck.open() as d:
        return load_state(Path(d) / "state.pt")


def build_gan(runner: Any, node: Node, v: View, inputs: dict, out: Path, key: str) -> dict:
    from rayflow.gan.artifact import routed_generator, save_generator
    from rayflow.gan.sampling import ema_generator, for_sampling, grid_labels
    from rayflow.gan.selection import select_checkpoint, select_per_class
    from rayflow.gan.training import gan_worker

    cfg, splits, teacher, y2h = v["gan"], runner.splits, inputs["teacher"], inputs.get("y2h")
    train = splits.train
    name = train_run_name(v, teacher.key, y2h and y2h.key)
    log.info("[gan] training the cGAN for %d steps (batch %d, %d D steps per G step)", cfg.steps, cfg.batch_size,
             cfg.n_dis)
    t0 = time.perf_counter()
    # the teacher as a NodePath: the Train workers may run on nodes without the driver's download cache
    res = runner.executor.fit(gan_worker, {"gan": cfg, "train": train, "teacher_dir": teacher.node_path(),
                                           "name": name, "tracking": getattr(runner, "tracking", None),
                                           **({"y2h": y2h.node_path(Y2H)} if y2h else {})},
                              name=name, scaling=runner.cfg.scaling, storage=runner.ray_storage(),
                              keep=None)  # all kept: small, and the best one is picked afterwards
    candidates = probe_checkpoints(res.checkpoints, cfg, train, str(teacher.path))
    if not candidates:
        raise RuntimeError(f"the GAN run {res.path} left no committed checkpoint")
    chosen, chosen_ck = select_checkpoint(candidates, cfg.select, cfg.min_consistency)
    state = _state(chosen_ck)
    route_steps = None
    if cfg.select == "per_class" and any("label_consistency_per_class" in m for m, _ in candidates):
        log.debug("[gan] training state of step %d kept with the artifact", chosen["step"])
        picks = select_per_class(candidates, cfg.min_consistency, space_of(train.num_classes).num_strata)  # logs the routing
        route_steps = [int(m["step"]) for m, _ in picks]
        G = routed_generator([(int(m["step"]), _state(ck)) for m, ck in picks], cfg, train)
    else:
        log.info("[gan] using the EMA generator of step %d (select=%s%s)", chosen["step"], cfg.select,
                 _probe_text(chosen))
        G = for_sampling(ema_generator(state, cfg, train), cfg, train.num_classes)
    save_generator(out, G, cfg, train, route_steps)
    save_state(state, out / "gan_state.pt")
    for _, ck in candidates:
        with ck.open() as d:
            for g in sorted(Path(d).glob("samples_*.png")):
                (out / g.name).write_bytes(g.read_bytes())
    quality = _final_quality(runner, out, teacher, grid_labels)
    # one line for both measurements, each labelled: they differ by samples (and, per_class, by routing)
    log.info("[gan] the artifact's generator: label consistency %.1f %%, FID %.2f%s (the report's figures: %d "
             "fresh samples per class, vs held-out reals)%s", quality["label_consistency"],
             quality.get("fid_teacher_features", float("nan")), _manifold_text(quality), FINAL_PER_CLASS,
             _probe_range(candidates))
    return {"steps": cfg.steps, "selected_step": int(chosen["step"]), "wall_s": time.perf_counter() - t0,
            **({"route_steps": route_steps} if route_steps else {}),
            **({"label_input": "y2h", "y2h": y2h.metrics} if y2h else {}),
            "curve": _curve(res.return_value), **quality}


def _probe_text(m: dict) -> str:
    if "label_consistency" not in m:
        return ""
    fid = m.get("fid_teacher_features", float("nan"))
    return f", label consistency {m['label_consistency']:.1f} %, FID {fid:.2f} at its probe"


def _curve(ret: Any) -> list:
    curve = (ret or {}).get("curve", [])
    return json.loads(curve) if isinstance(curve, str) else curve


def _final_quality(runner: Any, out: Path, teacher: Any, grid_labels: Any) -> dict:
    """Label consistency, FID and per-stratum precision / recall / density / coverage of the
    artifact's own generator on fresh samples (vs held-out reals), and NEAREST_GRID: its samples
    over their nearest real training images."""
    from rayflow.gan import generate
    from rayflow.gan.artifact import load_generator
    from rayflow.gan.quality import gan_quality, manifold_quality, nearest_real_grid
    from rayflow.models.io import load_model

    splits = runner.splits
    held = splits.heldout if splits.heldout is not None else splits.test
    labels = grid_labels(splits.num_classes, FINAL_PER_CLASS)
    space, model = space_of(splits.num_classes), load_model(teacher.path)
    fakes = generate(load_generator(out), labels, seed=777)
    q = gan_quality(model, fakes, labels, real_u8=torch.tensor(held.images[:2000]), num_classes=space)
    q.update(manifold_quality(model, fakes, labels, held.images, held.labels, space))
    q.update(nearest_real_grid(model, fakes, labels, splits.train.images, space, out / NEAREST_GRID))
    return q


def _manifold_text(q: dict) -> str:
    """`, precision / recall / density / coverage 0.81 / 0.42 / 0.95 / 0.63 (mean over classes)`."""
    vals = [q.get(k) for k in ("precision", "recall", "density", "coverage")]
    if any(v is None for v in vals):
        return ""
    return ", precision / recall / density / coverage " + " / ".join(f"{v:.2f}" for v in vals) + \
        " (mean over classes)"


register(StageDef("gan", reads=lambda p: READS, inputs=lambda cfg, p: {"teacher": Node.of("teacher"), **y2h_inputs(cfg)},
                  build=build_gan, doc="the class-conditional GAN, its checkpoints probed and selected"))
