"""`rayflow bound`: the error bound's terms over a (rho, M) grid of one run's pool, without training
any student (seconds once the pool exists): a table, a plot, and bound.json in the output."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from rayflow.config import PipelineConfig

log = logging.getLogger("rayflow")

COLUMNS = (("rho", "rho", "{:.2f}"), ("m_per_class", "M/class", "{:d}"), ("tv", "TV", "{:.3f}"),
           ("real_dropped", "real drop", "{:.3f}"), ("teacher_err", "teacher err", "{:.3f}"),
           ("beta", "beta", "{:.2f}"), ("sample", "sample", "{:.4f}"), ("total", "bound", "{:.3f}"))


def bound_table(cfg: PipelineConfig) -> dict[str, Any]:
    from rayflow.bound import bootstrap, bound_grid
    from rayflow.stages.runner import Runner
    from rayflow.tuning.scores import bound_inputs
    from rayflow.tuning.search import space_of

    runner = Runner(cfg)
    b = bound_inputs(runner)
    space = space_of(cfg)
    rhos, ms = space.values("rho", cfg.tune.grid[0]), space.values("m", cfg.tune.grid[1])
    rows = bound_grid(b.fake, b.real, b.burnin, rhos, ms, b.n_real, b.num_classes)
    hand = bootstrap(b.fake, b.real, b.burnin, cfg.filter.rho, cfg.synth.m_per_class, b.n_real, b.num_classes,
                     n_boot=100)
    out = {"rows": rows, "hand_set": {"rho": cfg.filter.rho, "m_per_class": cfg.synth.m_per_class,
                                      "total": hand["point"]["total"], "total_ci": hand["total"], "tv_ci": hand["tv"]},
           "n_real": b.n_real, "num_classes": b.num_classes, "pool_draws": len(b.fake.labels)}
    runner.store.write_text("bound.json", json.dumps(out, indent=2, default=float))
    runner.store.write_text("bound.svg", _plot(rows, ms))
    return out


def format_table(out: dict[str, Any]) -> str:
    lines = ["  ".join(f"{h:>11}" for _, h, _ in COLUMNS) + "  in pool"]
    for r in out["rows"]:
        lines.append("  ".join(f"{f.format(r[k]):>11}" for k, _, f in COLUMNS) + f"  {'yes' if r['feasible'] else 'extend'}")
    h = out["hand_set"]
    lines.append(f"hand-set rho {h['rho']}, M {h['m_per_class']}/class: bound {h['total']:.3f} "
                 f"(95 % bootstrap {h['total_ci'][0]:.3f} .. {h['total_ci'][1]:.3f}); no fitted term, 0-1 loss"
                 + (" (vacuous: >= 1)" if h["total"] >= 1 else ""))
    return "\n".join(lines)


def _plot(rows: list[dict], ms: list[int]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for m in ms:
        sel = [r for r in rows if r["m_per_class"] == m]
        axes[0].plot([r["rho"] for r in sel], [r["total"] for r in sel], marker="o", label=f"M={m}/class")
    sel = [r for r in rows if r["m_per_class"] == ms[len(ms) // 2]]
    for k in ("tv", "real_dropped", "teacher_err"):
        axes[1].plot([r["rho"] for r in sel], [r[k] for r in sel], marker="o", label=k)
    axes[0].set_xlabel("rho"), axes[0].set_ylabel("bound (0-1 loss)"), axes[0].legend(fontsize=7)
    axes[1].set_xlabel("rho"), axes[1].set_title(f"terms at M={ms[len(ms) // 2]}/class"), axes[1].legend(fontsize=7)
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    return buf.getvalue()
