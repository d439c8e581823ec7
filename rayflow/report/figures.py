"""What report.html and search.html share: matplotlib (Agg) figures inlined as base64 PNGs, HTML
tables, the page shell, and the two search plots (bound vs measured, best so far). One place, so
both pages look alike and neither copies the other's code; pages stay self-contained files that
can live in any store (no sidecar images)."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

STYLE = ("<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
         "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
         "img{max-width:100%;margin:4px}.card{border-left:4px solid #4a7;padding:0 1em;margin:1em 0}"
         ".card td,.card th{text-align:left}pre{background:#f4f4f4;padding:.5em}</style>")


def page(title: str, body: str) -> str:
    """A whole page: doctype, charset, the shared style, then `body` (already HTML)."""
    return f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>{STYLE}\n{body}"


def png(fig) -> str:
    """The figure as a base64 PNG (and closed: a report draws many and keeps none open)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def img_tag(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def file_img(path: str | Path, alt: str) -> str:
    """A PNG file on disk (sample grids) inlined; nothing when it is gone."""
    p = Path(path)
    return img_tag(base64.b64encode(p.read_bytes()).decode(), alt) if p.is_file() else ""


def cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.2f}"
    return html.escape("" if v is None else str(v))


def table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    """`cols`: (row key, header); floats at 2 decimals (format other precisions into strings first)."""
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(k, ''))}</td>" for k, _ in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def bound_scatter(bound: list[float], error: list[float], rho: list[float], m: list[int], ylabel: str,
                  title: str, chosen: list[bool] | None = None, err: list[float] | None = None) -> str:
    """Bound (x) against measured validation error (y), colour rho, marker size log M; `chosen`
    points ringed in red; `err`: each point's standard error, drawn as a bar (the measured axis is
    a noisy estimate)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if err is not None:
        ax.errorbar(bound, error, yerr=[e if math.isfinite(e) else 0.0 for e in err], fmt="none", ecolor="grey",
                    elinewidth=0.8, capsize=2, alpha=0.7, zorder=0)
    sc = ax.scatter(bound, error, c=rho, cmap="viridis", s=[8 * math.log2(max(int(v), 2)) for v in m])
    fig.colorbar(sc, label="rho")
    if chosen and any(chosen):
        pick = [i for i, c in enumerate(chosen) if c]
        ax.scatter([bound[i] for i in pick], [error[i] for i in pick], s=160, facecolors="none", edgecolors="red",
                   label="chosen")
        ax.legend(fontsize=7)
    ax.set_xlabel("bound (no fitted term)"), ax.set_ylabel(f"validation {ylabel}")
    ax.set_title(title, fontsize=9)
    return img_tag(png(fig), "bound vs measured")


def best_so_far(curves: dict[str, list[float]], ylabel: str, best: float | None = None,
                points: tuple[list[int], list[float]] | None = None) -> str:
    """Best-so-far validation error against trials, one line per name (NaN before a first score);
    `best`: a dotted reference line; `points`: (trial numbers, errors) of single trials."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, ys in curves.items():
        ax.step(range(1, len(ys) + 1), ys, where="post", label=name, marker="o" if len(ys) < 30 else None, ms=3)
    if points:
        ax.scatter(*points, s=14, color="grey", alpha=0.6, label="each trial")
    if best is not None:
        ax.axhline(best, color="k", lw=0.8, ls=":", label="grid best")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trials (in order)"), ax.set_ylabel(f"best-so-far validation {ylabel}")
    ax.legend(fontsize=7)
    return img_tag(png(fig), "best so far")
