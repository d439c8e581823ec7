"""The search section of the report: the bound against measured validation error (with the Spearman
correlation), best-so-far curves of each searcher, the tune runs and their chosen settings. Errors
are shown as error % (classes) or as the MAE in the labels' unit (a continuous label): the saved
`objective` says which."""

from __future__ import annotations

import html

import numpy as np

from rayflow.report.html import _img_tag, _png, _table, plt
from rayflow.tuning.objective import error_display


def _scatter(grid: dict) -> str:
    rec = grid["recorded"]
    k, label, _ = error_display(grid)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    x = [r["bound"] for r in rec]
    y = [k * float(np.mean(r["val_error"])) for r in rec]
    sc = ax.scatter(x, y, c=[r["rho"] for r in rec], cmap="viridis", s=[8 * np.log2(r["m"]) for r in rec])
    fig.colorbar(sc, label="rho")
    ax.set_xlabel("bound (no fitted term)"), ax.set_ylabel(f"validation {label}")
    ax.set_title(f"Spearman {grid['spearman_bound_vs_measured']:.2f} (marker size: log M)")
    return _img_tag(_png(fig), "bound vs measured")


def _curves(grid: dict) -> str:
    k, label, _ = error_display(grid)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, curves in grid["curves"].items():
        n = max(len(c) for c in curves)
        padded = np.array([list(c) + [c[-1]] * (n - len(c)) for c in curves], dtype=float)
        ax.plot(range(1, n + 1), k * padded.mean(0), label=name)
    best = k * min(float(np.mean(r["val_error"])) for r in grid["recorded"])
    ax.axhline(best, color="k", lw=0.8, ls=":", label="grid best")
    ax.set_xlabel("trials"), ax.set_ylabel(f"best-so-far validation {label} (mean of replays)")
    ax.legend(fontsize=7)
    return _img_tag(_png(fig), "best so far per searcher")


def render_search(grid: dict | None, tunes: list[dict]) -> str:
    parts = ["<h2>Choosing rho and M</h2>"]
    if grid:
        k, label, _ = error_display(grid)
        what = "points" if label == "error %" else label
        parts.append(f"<p>Recorded grid: {len(grid['recorded'])} points; spread {k * grid['spread']:.2f} {what} "
                     f"= {grid['spread'] / max(grid['seed_noise'], 1e-12):.1f}x the seed noise "
                     f"({k * grid['seed_noise']:.2f}).</p>")
        parts += [_scatter(grid), _curves(grid),
                  _table(grid["replay"], [("searcher", "searcher"), ("mean_trials", "mean trials to best"),
                                          ("median_trials", "median"), ("fraction_of_grid", "share of grid"),
                                          ("reached", "reached")])]
    for t in tunes:
        f = t.get("final") or {}
        shown = html.escape(error_display(t)[2])
        parts.append(f"<h3>rayflow tune, {html.escape(t['searcher'])} searcher: {len(t['trials'])} trials</h3>"
                     f"<p>chosen on validation data: {html.escape(str(t.get('chosen')))}; test {shown} "
                     f"(retrained on all labelled images): chosen {f.get('chosen')}, hand-set {f.get('hand-set')} "
                     f"{html.escape(str(f.get('hand_set')))}, NOKD {f.get('NOKD student')}, "
                     f"BLKD {f.get('BLKD student')}</p>")
    return "\n".join(parts)
