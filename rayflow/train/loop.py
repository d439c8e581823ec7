"""The one supervised step loop (teacher, NOKD, BLKD and cGAN-KD students), plain torch.

It knows nothing of Ray: the caller hands it a prepared model (DDP or not), a batch source for its
shard, and a `reporter(metrics, state)` callable. Ray Train's driver passes a reporter that calls
`ray.train.report` with a checkpoint; the local executor passes one that prints.

The loss is a `rayflow.kd.Criterion` (task loss, Hinton term, KD methods); without one, the bare
task loss. Its parameters (method adapters) train with the model and its state is checkpointed
with it; how the teacher feeds it is `_step_loss`'s business (docs/kd_methods.md).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.nn as nn

from rayflow.config import TrainConfig
from rayflow.config_mix import MixConfig
from rayflow.data.imageset import ImageSet
from rayflow.data.mapped import rows
from rayflow.data.transforms import to_float
from rayflow.labels import as_space
from rayflow.progress import Progress
from rayflow.seeding import reseed_torch
from rayflow.train.diverged import check_loss
from rayflow.train.mix import mix_batch, mix_rng
from rayflow.train.sources import Batch, BatchSource
from rayflow.train.select import BestOnVal
from rayflow.train.tasks import Task

if TYPE_CHECKING:
    from rayflow.kd import Criterion

Reporter = Callable[[dict, dict | None], None]


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


def make_optimizer(model: nn.Module, cfg: TrainConfig, extra: nn.Module | None = None) -> torch.optim.Optimizer:
    """The model's optimizer; `extra`'s parameters (a Criterion's adapters), if any, as a second
    param group with the same settings (RepDistiller trains them with the student)."""
    o = cfg.optim
    if o.name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum,
                              nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay)
    params = [p for p in extra.parameters() if p.requires_grad] if extra is not None else []
    if params:
        opt.add_param_group({"params": params})
    return opt


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 500,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Raw outputs for uint8 images, in eval mode, on CPU."""
    m = unwrap(model)
    was = m.training
    m.eval()
    outs = [m(to_float(torch.from_numpy(rows(images, slice(i, i + batch_size)))).to(device)).float().cpu()
            for i in range(0, len(images), batch_size)]
    m.train(was)
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, data: ImageSet, task: Task, device="cpu", prefix: str = "",
             spread: bool = False) -> dict:
    """Loss and metric on `data`; `spread`: also `{prefix}se`, the metric's standard error over the
    images (std of the per-image scores / sqrt n: the binomial SE for 1/0 correctness, the SE of the
    mean absolute error for a continuous label), and `{prefix}n`. A search needs it to tell a real
    lead from validation noise (issue 29: a 2-image lead chose a setting that tested worse)."""
    out = predict(model, data.images, device=device)
    y = torch.tensor(data.labels).to(task.label_dtype)
    per = task.score(out, y)
    score = per.mean().item()
    scale = 100.0 if task.metric == "acc" else 1.0
    metrics = {f"{prefix}loss": task.loss(out, y).item()}
    metrics[f"{prefix}{task.metric}"] = scale * score
    if spread:
        n = len(per)
        metrics[f"{prefix}se"] = scale * per.std(unbiased=False).item() / max(n, 1) ** 0.5 if n else float("nan")
        metrics[f"{prefix}n"] = n
    return metrics


def _step_loss(model: nn.Module, b: Batch, task: Task, crit: Criterion | None,
               teacher: nn.Module | None) -> torch.Tensor:
    """The loss of one batch.

    Without feature methods (no criterion, the Hinton term alone, blkd): the student's output only;
    the teacher targets are the stored ones (`b["t"]`, NaN rows = none), and an online teacher, if
    given, fills the rows without one. That is the historical loop, op for op.
    With feature methods: the student's (out, feats) and the teacher run online on every row, for
    its features (fakes carry stored logits only); stored logits stay the teacher's output where
    present, the online output elsewhere.
    """
    if crit is None:
        return task.loss(model(b["x"]), b["y"])
    if not crit.needs_teacher_features:
        out = model(b["x"])
        t = None
        if crit.needs_teacher:
            t = b["t"].to(out.dtype) if "t" in b else torch.full_like(out, float("nan"))
            missing = torch.isnan(t).any(1)
            if teacher is not None and missing.any():
                with torch.no_grad():
                    t[missing] = teacher(b["x"][missing]).to(out.dtype)
        return crit(out, t, b["y"], index=b.get("i"))
    if teacher is None:
        raise ValueError(f"KD methods {list(crit.methods)} need the teacher online (its features), but the "
                         "job has no teacher")
    student = model(b["x"], return_features=True)
    t_out, t_feats = crit.run_teacher(teacher, b["x"])
    if "t" in b:
        stored = b["t"].to(t_out.dtype)
        t_out = torch.where(torch.isnan(stored).any(1, keepdim=True), t_out, stored)
    return crit(student, (t_out, t_feats), b["y"], index=b.get("i"))


def autocast(cfg: TrainConfig, device: torch.device):
    """bf16 autocast with `train.amp`, on CUDA only: `amp` defaults on, and bf16 on the CPU would
    change the numbers of every CPU run (the reference results, the bit-exact resume tests)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")


def _all_reduce_grads(module: nn.Module, world: int) -> None:
    """DDP averages the model's gradients; the criterion's adapters are not in the DDP module, so
    average theirs here (a rank whose batch skipped a method contributes zeros)."""
    import torch.distributed as dist

    if world <= 1 or not dist.is_available() or not dist.is_initialized():
        return
    for p in module.parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world


def train_steps(model: nn.Module, source: BatchSource, cfg: TrainConfig, task: Task, *,
                criterion: Criterion | None = None, teacher: nn.Module | None = None,
                device: torch.device | str = "cpu",
                evaluate_fn: Callable[[nn.Module], dict] | None = None,
                validate_fn: Callable[[nn.Module], dict] | None = None,
                reporter: Reporter | None = None, start_state: dict | None = None,
                log_every: int = 100, is_main: bool = True, rank: int = 0, checkpoint_every: int = 0,
                progress: Progress | None = None, name: str = "", mix: MixConfig | None = None) -> dict:
    """Runs cfg.steps optimizer steps; returns the final metrics (train loss, speed, eval metrics).
    A NaN/inf loss raises LossNotFinite naming `name` (the stage) and the step, at once.

    `reporter(metrics, state)` gets metrics every `log_every` steps and a resumable state at every
    evaluation, every `checkpoint_every` steps and at the end. `start_state` (a state written by
    this loop) resumes at its step, bit for bit like the uninterrupted run: the random draws of
    step k are seeded by (seed, rank, k) and the source skips the batches already drawn.
    `criterion`: the loss (None: the task loss); its parameters train in the same optimizer and its
    state rides in every state ("criterion"). `teacher`: the frozen online teacher, if any. With
    KD methods the metrics carry each unweighted term's mean as `loss_<term>`.
    With `cfg.select == "best_val"` every evaluation scores `validate_fn` (validation only), the run
    ends with the best-scoring weights (rayflow/train/select.py) and `evaluate_fn` runs once, on them.
    `mix` (on): every batch is mixed and labelled by `teacher` on the mixed view (train/mix.py).
    """
    device = torch.device(device)
    world = int(torch.distributed.get_world_size()) if torch.distributed.is_available() and \
        torch.distributed.is_initialized() else 1
    opt = make_optimizer(model, cfg, criterion)
    step = 0
    best = BestOnVal(task) if cfg.select == "best_val" else None
    if start_state is not None:
        unwrap(model).load_state_dict(start_state["model"])
        opt.load_state_dict(start_state["optimizer"])
        if criterion is not None and "criterion" in start_state:
            criterion.load_state_dict(start_state["criterion"])
        step = int(start_state["step"])
        if best is not None:
            best.load(start_state.get("best"))
        if hasattr(source, "skip"):
            source.skip(step)
    if teacher is not None:
        teacher.to(device).eval()
    mixing = mix is not None and mix.on
    if mixing and teacher is None:
        raise ValueError(f"{name or 'training'}: mixing ({mix.kind}) labels each mixed view by the teacher online, "
                         "but the job has no teacher")
    space = as_space(task.num_classes)
    has_state = criterion is not None and bool(criterion.state_dict())
    log_terms = criterion is not None and len(criterion.methods) > 0
    terms: dict[str, float] = {}
    model.train()
    if criterion is not None:
        criterion.train()
    t0, seen, running, n_run = time.perf_counter(), 0, 0.0, 0
    metrics: dict = {}
    while step < cfg.steps:
        lr = lr_at(step, cfg.steps, cfg.optim.lr, cfg.schedule)
        for g in opt.param_groups:
            g["lr"] = lr
        reseed_torch(cfg.seed, rank, step)
        b = source.next_batch()
        b = Batch({k: v.to(device, non_blocking=True) for k, v in b.items()})
        with autocast(cfg, device):
            if mixing:
                b = mix_batch(b, teacher, space, mix, mix_rng(cfg.seed, rank, step))
            loss = _step_loss(model, b, task, criterion, teacher)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if has_state:
            _all_reduce_grads(criterion, world)
        opt.step()
        if log_terms:
            for k, v in criterion.last_terms.items():
                terms[k] = terms.get(k, 0.0) + float(v)
        step += 1
        seen += len(b["y"])
        value = loss.item()  # the host copy the running mean needs anyway: the check costs no sync
        check_loss(value, name, step)
        running += value
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
            metrics.update({f"loss_{k}": v / max(n_run, 1) for k, v in terms.items()})
            running, n_run, terms = 0.0, 0, {}
            if want_eval and is_main:
                metrics.update(_evaluate(model, step, last, best, evaluate_fn, validate_fn))
            state = None
            if want_state:
                state = {"model": unwrap(model).state_dict(), "optimizer": opt.state_dict(), "step": step}
                if has_state:
                    state["criterion"] = criterion.state_dict()
                if best is not None:
                    state["best"] = best.state()
            if reporter is not None:
                reporter(metrics, state)
    if not metrics:  # resumed from a checkpoint of a finished run: nothing left but the evaluation
        metrics = {"step": step, "resumed": True}
        if evaluate_fn is not None and is_main:
            metrics.update(evaluate_fn(model))
        if best is not None and is_main:
            metrics.update(best.summary())
    return metrics


def _evaluate(model: nn.Module, step: int, last: bool, best: BestOnVal | None,
              evaluate_fn: Callable[[nn.Module], dict] | None,
              validate_fn: Callable[[nn.Module], dict] | None) -> dict:
    """An evaluation's metrics; with step selection the validation score (and at the end, the
    selected weights loaded into `model` and their full metrics)."""
    out: dict = {}
    if best is None:
        if evaluate_fn is not None:
            out = evaluate_fn(model)
    else:
        out = validate_fn(model) if validate_fn is not None else {}  # offer() names a missing split
        best.offer(step, out, unwrap(model))
        if last:
            best.restore_into(unwrap(model))
            out = dict(evaluate_fn(model) if evaluate_fn is not None else validate_fn(model), **best.summary())
    model.train()
    return out
