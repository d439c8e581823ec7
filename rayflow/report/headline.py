"""The top of report.html: the student the run produced beside the teacher, NOKD, BLKD and the
perfect generator, as one chart a reader takes in at a glance, then the same numbers as a short
table. A spread is shown only where it was measured (a model with several seeds): one seed gives
no error bar and no spread column, never a "std 0.00" that reads like a certainty."""

from __future__ import annotations

import html

from rayflow.report.figures import img_tag, plt, png, table
from rayflow.report.summary import KD_TABLE_PREFIX, LEVER_PREFIX, digits, lower_is_better, measure_name, summarize

BASELINES = ("teacher", "NOKD student", "BLKD student", "perfect generator (oracle)")


def produced(model: str) -> bool:
    """A cGAN-KD student the run made (rayflow run's, tune's chosen / hand-set), not a KD-table or
    a lever's ablation row."""
    return model.startswith("cGAN-KD") and not model.startswith((KD_TABLE_PREFIX, LEVER_PREFIX))


def stats(rows: list[dict], metric: str, headline: bool = True) -> list[dict]:
    """Mean, n and std (None for one seed) per model; `headline`: the produced students, then the
    baselines in their usual order."""
    out = [{**s, "std": s["std"] if s["n"] > 1 else None} for s in summarize(rows, metric)["summary"]]
    if not headline:
        return out
    return [s for s in out if produced(s["model"])] + [s for b in BASELINES for s in out if s["model"] == b]


def spread(st: list[dict]) -> bool:
    return any(s["std"] is not None for s in st)


def chart(st: list[dict], metric: str) -> str:
    """One point per model (produced students in green), error bars = std over seeds where measured."""
    if not st:
        return ""
    n, lower = digits(metric), lower_is_better(metric)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(st) + 1.3))
    for i, s in enumerate(st):
        y, v, sd = len(st) - 1 - i, s[metric], s["std"]
        color = "#1a8f4c" if produced(s["model"]) else "#55657a"
        ax.errorbar([v], [y], xerr=None if sd is None else [sd], fmt="o", ms=8, color=color, capsize=5)
        ax.annotate(f"{v:.{n}f}" + ("" if sd is None else f" ± {sd:.{n}f} ({s['n']} seeds)"), (v, y),
                    xytext=(8, 6), textcoords="offset points", fontsize=8, color=color)
    ax.set_yticks(range(len(st)), [s["model"] for s in reversed(st)], fontsize=8)
    ax.set_ylim(-0.7, len(st) - 0.3)
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi + 0.25 * (hi - lo))  # room for the labels right of the points
    ax.grid(axis="x", alpha=0.3)
    better = "lower is better" if lower else "higher is better"
    bars = "; error bars: std over seeds" if spread(st) else ""
    ax.set_xlabel(f"test {measure_name(metric)} ({better}{bars})")
    return img_tag(png(fig), f"test {measure_name(metric)} per model ({better})")


def summary_table(st: list[dict], metric: str) -> str:
    """The chart's numbers (or every model's): spread and seeds columns only with several seeds."""
    n = digits(metric)
    show = spread(st)
    rows = []
    for s in st:
        r = {"model": s["model"], "v": f"{s[metric]:.{n}f}", "n": s["n"],
             "sd": "" if s["std"] is None else f"{s['std']:.{n}f}"}
        for k in ("delta_nokd", "delta_blkd"):
            r[k] = "" if s.get(k) is None else f"{s[k]:+.{n}f}"
        rows.append(r)
    cols = [("model", "model"), ("v", metric + (" (mean over seeds)" if show else ""))]
    cols += [("sd", "std over seeds"), ("n", "seeds")] if show else []
    return table(rows, cols + [("delta_nokd", "vs NOKD"), ("delta_blkd", "vs BLKD")])


def section(results: dict) -> str:
    """The headline: chart, its table, the headroom recovered, the run's notes."""
    metric = results.get("metric", "test_acc")
    st = stats(results.get("rows") or [], metric)
    if not st:
        return ""
    one = all(s["n"] == 1 for s in st if s["model"] != "teacher")
    parts = [f"<h2>Result: test {html.escape(measure_name(metric))}</h2>", chart(st, metric),
             summary_table(st, metric)]
    if one:
        parts.append("<p>One seed per model: no spread is measured (set <code>seeds: [0, 1, 2]</code> for "
                     "error bars).</p>")
    if results.get("headroom_recovered") is not None:
        parts.append(f"<p><b>Headroom recovered by cGAN-KD</b>: {100 * results['headroom_recovered']:.0f} % "
                     f"= (cGAN-KD − NOKD) / (perfect generator − NOKD)</p>")
    parts += [f"<p><b>Note:</b> {html.escape(note)}</p>" for note in results.get("notes") or []]
    return "\n".join(parts)
