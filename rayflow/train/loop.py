"""The one supervised step loop (teacher, NOKD, BLKD and cGAN-KD students), plain torch.

It knows nothing of Ray: the caller hands it a prepared model (DDP or not), a batch source for its
shard, and a `reporter(metrics, state)` callable. Ray Train's driver passes a reporter that calls
`ray.train.report` with a checkpoint; the local executor passes one that prints.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from rayflow.config import TrainConfig
from rayflow.data.imageset import ImageSet
from rayflow.data.transforms import to_float
from rayflow.progress import Progress
from rayflow.seeding import reseed_torch
from rayflow.train.sources import Batch, BatchSource
from rayflow.train.tasks import Task

Reporter = Callable[[dict, dict | None], None]


@dataclass
class KDSpec:
    """Optional distillation term: alpha * KD + (1 - alpha) * task loss.

    `teacher` (online, frozen) supplies targets for samples without precomputed logits; fakes carry
    their teacher logits from the synth stage, so the teacher never re-runs on them.
    """

    alpha: float = 0.0
    temperature: float = 4.0
    teacher: nn.Module | None = None


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def lr_at(step: int, total: int, base: float, schedule: str) -> float:
    p = min(step / max(total, 1), 1.0)
    if schedule == "constant":
        return base
    if schedule == "step":
        return base * (0.1 ** sum(p >= m for m in (0.5, 0.75)))
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * p))
    warm = 0.3  # onecycle: cosine warm-up from base/25, cosine anneal to base/1e4
    if p < warm:
        return base / 25 + (base - base / 25) * 0.5 * (1 - math.cos(math.pi * p / warm))
    q = (p - warm) / (1 - warm)
    return base / 1e4 + (base - base / 1e4) * 0.5 * (1 + math.cos(math.pi * q))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                           weight_decay=o.weight_decay)


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 500,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Raw outputs for uint8 images, in eval mode, on CPU."""
    m = unwrap(model)
    was = m.training
    m.eval()
    outs = [m(to_float(torch.tensor(images[i:i + batch_size])).to(device)).float().cpu()
            for i in range(0, len(images), batch_size)]
    m.train(was)
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, data: ImageSet, task: Task, device="cpu", prefix: str = "") -> dict:
    out = predict(model, data.images, device=device)
    y = torch.tensor(data.labels).to(task.label_dtype)
    score = task.score(out, y).mean().item()
    metrics = {f"{prefix}loss": task.loss(out, y).item()}
    metrics[f"{prefix}{task.metric}"] = 100.0 * score if task.metric == "acc" else score
    return metrics


def _loss(model: nn.Module, b: Batch, task: Task, kd: KDSpec | None) -> torch.Tensor:
    out = model(b["x"])
    loss = task.loss(out, b["y"])
    if kd is None or kd.alpha <= 0:
        return loss
    t = b["t"].to(out.dtype) if "t" in b else torch.full_like(out, float("nan"))
    missing = torch.isnan(t).any(1)
    if kd.teacher is not None and missing.any():
        with torch.no_grad():
            t[missing] = kd.teacher(b["x"][missing]).to(out.dtype)
        missing[:] = False
    have = ~missing
    if not have.any():
        return loss
    return (1 - kd.alpha) * loss + kd.alpha * task.distill(out[have], t[have], kd.temperature)


def train_steps(model: nn.Module, source: BatchSource, cfg: TrainConfig, task: Task, *,
                kd: KDSpec | None = None, device: torch.device | str = "cpu",
                evaluate_fn: Callable[[nn.Module], dict] | None = None,
                reporter: Reporter | None = None, start_state: dict | None = None,
                log_every: int = 100, is_main: bool = True, rank: int = 0, checkpoint_every: int = 0,
                progress: Progress | None = None) -> dict:
    """Runs cfg.steps optimizer steps; returns the final metrics (train loss, speed, eval metrics).

    `reporter(metrics, state)` gets metrics every `log_every` steps and a resumable state at every
    evaluation, every `checkpoint_every` steps and at the end. `start_state` (a state written by
    this loop) resumes at its step, bit for bit like the uninterrupted run: the random draws of
    step k are seeded by (seed, rank, k) and the source skips the batches already drawn.
    """
    device = torch.device(device)
    opt = make_optimizer(model, cfg)
    step = 0
    if start_state is not None:
        unwrap(model).load_state_dict(start_state["model"])
        opt.load_state_dict(start_state["optimizer"])
        step = int(start_state["step"])
        if hasattr(source, "skip"):
            source.skip(step)
    if kd is not None and kd.teacher is not None:
        kd.teacher.to(device).eval()
    use_amp = cfg.amp and device.type == "cuda"
    model.train()
    t0, seen, running, n_run = time.perf_counter(), 0, 0.0, 0
    metrics: dict = {}
    while step < cfg.steps:
        lr = lr_at(step, cfg.steps, cfg.optim.lr, cfg.schedule)
        for g in opt.param_groups:
            g["lr"] = lr
        reseed_torch(cfg.seed, rank, step)
        b = source.next_batch()
        b = Batch({k: v.to(device, non_blocking=True) for k, v in b.items()})
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = _loss(model, b, task, kd)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += len(b["y"])
        running += loss.item()
        n_run += 1
        last = step == cfg.steps
        want_eval = last or bool(cfg.eval_every and step % cfg.eval_every == 0)
        want_state = want_eval or bool(checkpoint_every and step % checkpoint_every == 0)
        if progress is not None and is_main:
            progress.update(step, loss=running / max(n_run, 1))
        if step % log_every == 0 or want_state:
            dt = time.perf_counter() - t0
            metrics = {"step": step, "samples_seen": step * cfg.batch_size, "train_loss": running / max(n_run, 1),
                       "lr": lr,
                       "images_per_s": seen / max(dt, 1e-9), "elapsed_s": dt}
            running, n_run = 0.0, 0
            if want_eval and evaluate_fn is not None and is_main:
                metrics.update(evaluate_fn(model))
                model.train()
            state = None
            if want_state:
                state = {"model": unwrap(model).state_dict(), "optimizer": opt.state_dict(), "step": step}
            if reporter is not None:
                reporter(metrics, state)
    if not metrics:  # resumed from a checkpoint of a finished run: nothing left but the evaluation
        metrics = {"step": step, "resumed": True}
        if evaluate_fn is not None and is_main:
            metrics.update(evaluate_fn(model))
    return metrics
