"""The KD-method comparison table: every method of `kd_table`, alone and on real + cGAN samples.

Per method m and seed two students, each a cached artifact of the stage graph:

- "m": the student on the real images with the online teacher, loss task + weight_m * L_m (no
  Hinton term), on the baselines' schedule (`baseline_steps`): node blkd(seed, method=m);
- "cGAN-KD + m": the cGAN-KD student (full fake processing, the fake.kd_weight Hinton term on the
  soft labels) + weight_m * L_m: node cgankd(..., kd=True, method=m).

m = blkd is Hinton KD itself, so its rows are the BLKD student and the cGAN-KD student the run
trains anyway. `preflight` builds every criterion the run will need on freshly built models, so an
incompatible method fails in one line before any training.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from rayflow.config import ConfigError, ModelConfig, PipelineConfig
from rayflow.stages.graph import Node

BLKD_ROW = "BLKD student"


@dataclass(frozen=True)
class KDRow:
    """One method of the table: its two result-row labels and, per seed, the nodes behind them."""

    method: str
    alone: str  # label of "m"
    with_cgan: str  # label of "cGAN-KD + m"

    @property
    def reuses(self) -> bool:
        """blkd: the rows are the BLKD and cGAN-KD students (no new nodes)."""
        return self.method == "blkd"


def rows_of(cfg: PipelineConfig, cgan_label: str) -> list[KDRow]:
    out = []
    for m in cfg.kd_table:
        if m.method == "blkd":
            out.append(KDRow("blkd", BLKD_ROW, cgan_label))
        else:
            out.append(KDRow(m.method, m.method, f"cGAN-KD + {m.method}"))
    return out


def nodes(cfg: PipelineConfig, cgan_kd: Any) -> list[tuple[int, str, Node]]:
    """(seed, row label, node) of the students the table adds (blkd's rows exist already);
    `cgan_kd`: the run's effective cGAN-KD variant (ablation.Variant)."""
    out = []
    for seed in cfg.seeds:
        for r in rows_of(cfg, cgan_kd.label):
            if not r.reuses:
                out.append((seed, r.alone, Node.of("blkd", seed=seed, method=r.method)))
                out.append((seed, r.with_cgan, cgan_kd.student(seed, method=r.method)))
    return out


def preflight(cfg: PipelineConfig, shape: tuple[int, int, int], num_classes: int | None) -> None:
    """Builds each KD criterion the run needs (student.kd on the cGAN-KD student, every kd_table
    method) on fresh student and teacher networks and the data's image shape: a method the pair or
    the task cannot use (AT on an MLP, CRD's class negatives on regression, a missing layer) is one
    ConfigError naming the field, before anything trains."""
    checks = ([("student.kd", list(cfg.student.kd))] if cfg.student.kd else []) + \
        [(f"kd_table ({m.method})", [m]) for m in cfg.kd_table if m.method not in ("blkd", "takd")]
    assistants = [m for m in cfg.kd_table if m.method == "takd"]  # a chain of Hinton links: its model must build
    if not checks and not assistants:
        return
    import torch

    from rayflow.kd import KDConfig, KDConfigError, build_criterion
    from rayflow.models import build_model
    from rayflow.train.tasks import Task

    task = Task.of(num_classes)
    c, h, _ = shape

    def net(spec):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return build_model(spec.name, in_channels=c, image_size=h, num_outputs=task.num_outputs, **spec.kwargs)

    for m in assistants:
        try:
            net(ModelConfig(name=m.assistant, kwargs=dict(m.assistant_kwargs)))
        except (KeyError, ValueError, TypeError) as e:
            raise ConfigError(f"kd_table (takd): assistant model {m.assistant!r} cannot be built for images "
                              f"{c}x{h}x{h}: {e}") from None
    if not checks:
        return
    from rayflow.stages.teacher_import import teacher_net

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        teacher = teacher_net(cfg, shape, num_classes)
    external = cfg.teacher.checkpoint is not None
    t_name = "teacher.checkpoint" if external else cfg.teacher.model.name
    student = net(cfg.student.model)
    for where, methods in checks:
        try:
            build_criterion(KDConfig(alpha=0.0, temperature=cfg.fake.temperature, methods=methods), task,
                            student=student, teacher=teacher, input_shape=shape, num_samples=2,
                            student_name=cfg.student.model.name, teacher_name=t_name)
        except KDConfigError as e:
            if external:
                names = ", ".join(repr(m.method) for m in methods)
                raise ConfigError(f"{where}: KD method {names} cannot use the external teacher: it exposes only "
                                  "logits and penultimate features (name layers in teacher.checkpoint.feature_layers "
                                  f"for intermediate maps): {e}") from None
            kind = "regression" if num_classes is None else f"{num_classes}-class classification"
            raise ConfigError(f"{where}: {e} (student {cfg.student.model.name}, teacher {cfg.teacher.model.name}, "
                              f"{kind}, images {c}x{h}x{h})") from None


def _stats(rows: list[dict], label: str, metric: str) -> tuple[float | None, float | None, int]:
    vals = [r[metric] for r in rows if r["model"] == label and metric in r]
    if not vals:
        return None, None, 0
    return sum(vals) / len(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def table(cfg: PipelineConfig, rows: list[dict], metric: str, cgan_label: str) -> list[dict]:
    """One entry per kd_table method: "m" and "cGAN-KD + m" as mean and std over seeds, the
    difference (with - alone), the gain (the difference signed so that better is positive, for an
    error metric too), and whether the gain exceeds the two rows' seed spreads added up."""
    lower = "mae" in metric
    out = []
    for r in rows_of(cfg, cgan_label):
        a, a_sd, a_n = _stats(rows, r.alone, metric)
        w, w_sd, w_n = _stats(rows, r.with_cgan, metric)
        e: dict = {"method": r.method, "alone_row": r.alone, "with_cgan_row": r.with_cgan,
                   "alone": a, "alone_std": a_sd, "alone_n": a_n, "with_cgan": w, "with_cgan_std": w_sd,
                   "with_cgan_n": w_n}
        if a is not None and w is not None:
            e["delta"] = w - a
            e["gain"] = -(w - a) if lower else w - a
            e["beyond_spread"] = bool(e["gain"] > (a_sd or 0.0) + (w_sd or 0.0))
        out.append(e)
    return out


def format_table(entries: list[dict], metric: str) -> str:
    """The console lines of the table."""
    digits = 4 if metric == "test_mae" else 2

    def ms(m, sd):
        return "-" if m is None else f"{m:.{digits}f} ± {sd:.{digits}f}"

    lines = [f"KD methods ({metric}, mean ± std over seeds)",
             f"{'method':<10} {'alone':>18} {'with cGAN samples':>18} {'delta':>8}  beyond spread"]
    for e in entries:
        d = e.get("delta")
        alone, with_cgan = ms(e["alone"], e["alone_std"]), ms(e["with_cgan"], e["with_cgan_std"])
        lines.append(f"{e['method']:<10} {alone:>18} {with_cgan:>18} {'-' if d is None else f'{d:+.{digits}f}':>8}  "
                     f"{'-' if 'beyond_spread' not in e else ('yes' if e['beyond_spread'] else 'no')}")
    return "\n".join(lines)
