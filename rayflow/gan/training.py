"""cGAN training as one function of a TrainContext: the same body on Ray Train workers and in the
local executor. Checkpoints (full GAN state + a sample grid + label consistency) go out every
`gan.checkpoint_every` steps; a restarted run resumes from the newest committed one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from rayflow.checkpoint import load_state, save_state
from rayflow.config import GANConfig
from rayflow.data.imageset import ImageSet
from rayflow.data.mapped import rows
from rayflow.gan.grid import save_grid_png
from rayflow.gan.vicinal import VicinalSampler
from rayflow.gan.y2h import load_y2h
from rayflow.labels import space_of
from rayflow.progress import Progress
from rayflow.gan.loop import build_gan, generate, train_gan
from rayflow.gan.sampling import (
    consistency_probe,
    for_sampling,
    grid_labels,
    probe_reals,
)

if TYPE_CHECKING:
    from rayflow.executors.base import TrainContext


STATE = "state.pt"


def gan_body(cfg: GANConfig, train: ImageSet, *, rank: int, world: int, device: torch.device,
             prepare: Callable[[torch.nn.Module], torch.nn.Module],
             save_checkpoint: Callable[[dict, dict, Path | None], None], start_state: dict | None,
             teacher: torch.nn.Module | None, name: str, tracker=None, y2h: torch.nn.Module | None = None) -> dict:
    """Trains the GAN; `save_checkpoint(metrics, state, grid_png)` persists (rank 0 gives state);
    `tracker` (rank 0's, with `scalar(tag, value, step)`) gets the losses and every probe; `y2h`: the
    fitted label input (gan.label_input y2h), frozen in G and D."""
    c, h, _ = train.shape
    space = space_of(train.num_classes)  # probes and sample grids stratum by stratum
    state = build_gan(cfg, train.num_classes, c, h, device=device, y2h=y2h)
    if start_state is not None:
        state.load_state_dict(start_state)
        if rank == 0:
            print(f"[{name}] resuming at step {state.step} from the run's last checkpoint", flush=True)
    state.G, state.D = prepare(state.G), prepare(state.D)
    per_worker = max(1, cfg.batch_size // world)

    def sample_real(n: int):
        # the global torch RNG, which train_gan reseeds every step: a resumed run draws the same
        idx = torch.randint(0, len(train), (n,)).numpy()
        return torch.from_numpy(rows(train.images, idx)), torch.tensor(train.labels[idx])

    if space.continuous:  # CcGAN: reals drawn from the vicinity of each target label
        sample_real = VicinalSampler.from_config(train.images, train.labels, cfg)
        if rank == 0:
            v = sample_real.vicinity
            print(f"[{name}] continuous labels: {v.kind} vicinity, kappa {v.kappa:.4g}, sigma {v.sigma:.4g}",
                  flush=True)

    reals = probe_reals(train)
    t0 = time.perf_counter()
    window: dict = {}

    progress = Progress(name, cfg.steps, enabled=rank == 0, start=state.step)

    def track(m: dict) -> None:
        for k, v in m.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                tracker.scalar(k, float(v), int(m["step"]))

    def reporter(m: dict, _):
        window.update(m)
        progress.update(m["step"], d_loss=m["d_loss"], g_loss=m["g_loss"])
        if tracker is not None:
            track(m)

    curve: list[dict] = []

    def on_checkpoint(st) -> None:
        metrics = {"step": st.step, **{k: v for k, v in window.items() if k != "step"}}
        if rank != 0:
            save_checkpoint(metrics, None, None)
            return
        G = for_sampling(st.G_ema, cfg, space)
        q = consistency_probe(G, teacher, space, real_u8=reals)
        metrics.update({k: v for k, v in q.items() if not isinstance(v, list)})
        if tracker is not None:
            track({"step": st.step, **{k: v for k, v in q.items() if not isinstance(v, list)}})
        curve.append({"step": st.step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
        metrics["curve"] = json.dumps(curve)
        with tempfile.TemporaryDirectory() as d:
            grid = Path(d) / f"samples_step{st.step:06d}.png"
            save_grid_png(generate(G, grid_labels(space), seed=1), grid, nrow=10)
            save_checkpoint(metrics, st.state_dict(), grid)
        if "label_consistency" in metrics:
            print(f"[{name}] step {st.step}: label consistency {metrics['label_consistency']:.1f} %", flush=True)

    train_gan(state, sample_real, cfg, reporter=reporter, on_checkpoint=on_checkpoint,
              log_every=max(1, min(100, cfg.steps // 50)), batch_size=per_worker, rank=rank)
    return {"step": state.step, "train_s": time.perf_counter() - t0, "curve": curve}


def gan_worker(ctx: TrainContext, config: dict) -> dict:
    """Executor entry point: `config` holds `gan` (GANConfig), `train` (ImageSet), `teacher_dir`
    (for the probes, rank 0 only), `name` (progress prefix) and optionally `tracking` (a TrackingSpec)
    and `y2h` (the y2h stage's fitted label input, a NodePath)."""
    from rayflow.models.io import load_model

    start = ctx.load_checkpoint(lambda d: load_state(d / STATE))

    def save_checkpoint(metrics: dict, state: dict | None, grid: Path | None) -> None:
        if state is None:
            ctx.report({k: v for k, v in metrics.items() if k != "curve"})
            return
        with tempfile.TemporaryDirectory() as d:
            save_state(state, Path(d) / STATE)
            if grid is not None:
                os.replace(grid, Path(d) / grid.name)
            ctx.report(metrics, Path(d))

    teacher = load_model(config["teacher_dir"]) if ctx.rank == 0 and config.get("teacher_dir") else None
    y2h = load_y2h(config["y2h"], config["gan"].embed_dim) if config.get("y2h") else None  # every rank: in G and D
    spec = config.get("tracking")  # rayflow.tracking.TrackingSpec: rank 0 writes the curves
    tracker = spec.open(config["name"]) if spec is not None and ctx.rank == 0 else None
    try:
        out = gan_body(config["gan"], config["train"], rank=ctx.rank, world=ctx.world, device=ctx.device,
                       prepare=ctx.prepare, save_checkpoint=save_checkpoint, start_state=start, teacher=teacher,
                       name=config["name"], tracker=tracker, y2h=y2h)
    finally:
        if tracker is not None:
            tracker.close()
    return out if ctx.rank == 0 else {}
