"""`rayflow bound`: the error bound's terms over a (rho, M) grid of one run's pool, without training
any student (seconds once the pool exists): a table, a plot, and bound.json in the output.
Classes: a bound on the 0-1 risk; a continuous label: a bound on the MAE in normalised label units,
also shown in the labels' unit (docs/bound.md, "Regression")."""

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
    share = cfg.fake.real_fraction  # the trainer's reals per batch: the fakes' weight is 1 - share
    rows = bound_grid(b.fake, b.real, b.burnin, rhos, ms, b.n_real, b.space, real_fraction=share)
    hand = bootstrap(b.fake, b.real, b.burnin, cfg.filter.rho, cfg.synth.m_per_class, b.n_real, b.space,
                     n_boot=100, real_fraction=share)
    out = {"rows": rows, "hand_set": {"rho": cfg.filter.rho, "m_per_class": cfg.synth.m_per_class,
                                      "total": hand["point"]["total"], "total_ci": hand["total"], "tv_ci": hand["tv"]},
           "n_real": b.n_real, "num_classes": b.num_classes, "pool_draws": len(b.fake.labels)}
    if b.space.continuous:
        from rayflow.labels import space_of_data

        unit = space_of_data(cfg.data, None)  # the data's own unit (degrees), if it has one
        r = unit.range
        out.update(label_space=b.space.to_dict(), loss="MAE (normalised labels)",
                   unit=(r.unit or "") if r is not None else "", unit_scale=float(unit.display_error(1.0)),
                   strata=b.space.num_strata)
    runner.store.write_text("bound.json", json.dumps(out, indent=2, default=float))
    runner.store.write_text("bound.svg", _plot(rows, ms, out.get("loss", "0-1 loss")))
    return out


def format_table(out: dict[str, Any]) -> str:
    """The table; for a continuous label the teacher error and the bound are MAEs (normalised labels),
    the last column the bound in the labels' unit, and M counts per stratum."""
    cont = "loss" in out
    unit, k = out.get("unit") or "", float(out.get("unit_scale", 1.0))
    cols = [(key, "M/stratum" if cont and key == "m_per_class" else
             ("teacher MAE" if cont and key == "teacher_err" else h), f) for key, h, f in COLUMNS]
    extra = f"bound {unit}".rstrip() if cont and unit else None
    lines = ["  ".join(f"{h:>11}" for _, h, _ in cols) + (f"  {extra:>11}" if extra else "") + "  in pool"]
    for r in out["rows"]:
        lines.append("  ".join(f"{f.format(r[key]):>11}" for key, _, f in cols)
                     + (f"  {k * r['total']:>11.3f}" if extra else "") + f"  {'yes' if r['feasible'] else 'extend'}")
    h = out["hand_set"]
    per = "stratum" if cont else "class"
    loss = (f"MAE in normalised labels{f' (x {k:g} = {unit})' if unit else ''}" if cont else "0-1 loss")
    shown = f" = {k * h['total']:.3g} {unit}" if cont and unit else ""
    lines.append(f"hand-set rho {h['rho']}, M {h['m_per_class']}/{per}: bound {h['total']:.3f}{shown} "
                 f"(95 % bootstrap {h['total_ci'][0]:.3f} .. {h['total_ci'][1]:.3f}); no fitted term, {loss}"
                 + (" (vacuous: >= 1)" if h["total"] >= 1 else ""))
    return "\n".join(lines)


def _plot(rows: list[dict], ms: list[int], loss: str = "0-1 loss") -> str:
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
    axes[0].set_xlabel("rho"), axes[0].set_ylabel(f"bound ({loss})"), axes[0].legend(fontsize=7)
    axes[1].set_xlabel("rho"), axes[1].set_title(f"terms at M={ms[len(ms) // 2]}/class"), axes[1].legend(fontsize=7)
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    return buf.getvalue()
