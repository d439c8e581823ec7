"""The search section (search.html, and report.html's details): for a recorded grid (grid.json) the
bound against measured validation error with its Spearman correlation and the searchers' replayed
best-so-far curves; for every `rayflow tune` (tune-<searcher>.json), from its own trials, the bound
against each trial's measured validation error, the best-so-far curve in trial order and the
trials' table with the chosen one marked. Errors are shown as error % (classes) or as the MAE in
the labels' unit (a continuous label): the saved `objective` says which."""

from __future__ import annotations

import html
import json
import math

import numpy as np

from rayflow.report.figures import best_so_far, bound_scatter, table
from rayflow.search.space import DIMS, KNOB_NAMES
from rayflow.tuning.objective import acc_error, error_display, mae_error



def _grid(grid: dict) -> list[str]:
    rec = grid["recorded"]
    k, label, _ = error_display(grid)
    what = "points" if label == "error %" else label
    curves = {}
    for name, runs in grid["curves"].items():
        n = max(len(c) for c in runs)
        padded = np.array([list(c) + [c[-1]] * (n - len(c)) for c in runs], dtype=float)
        curves[f"{name} (mean of replays)"] = list(k * padded.mean(0))
    return [f"<p>Recorded grid: {len(rec)} points; spread {k * grid['spread']:.2f} {what} "
            f"= {grid['spread'] / max(grid['seed_noise'], 1e-12):.1f}x the seed noise "
            f"({k * grid['seed_noise']:.2f}).</p>",
            bound_scatter([r["bound"] for r in rec], [k * float(np.mean(r["val_error"])) for r in rec],
                          [r["rho"] for r in rec], [r["m"] for r in rec], label,
                          f"recorded grid: Spearman {grid['spearman_bound_vs_measured']:.2f} (marker size: log M)"),
            best_so_far(curves, label, best=k * min(float(np.mean(r["val_error"])) for r in rec)),
            table(grid["replay"], [("searcher", "searcher"), ("mean_trials", "mean trials to best"),
                                   ("median_trials", "median"), ("fraction_of_grid", "share of grid"),
                                   ("reached", "reached")])]


def _dims(t: dict) -> list[str]:
    space = t.get("space") or {}
    return [d for d in DIMS if d in space] or [d for d in DIMS if any(d in r for r in t["trials"])]


def _bound_of(t: dict, dims: list[str]) -> list[float | None]:
    """Each trial's bound, from the search's {json key: bound} map (keys in `dims` order)."""
    saved = {tuple(json.loads(key)): float(v) for key, v in (t.get("bound") or {}).items()}
    out = []
    for r in t["trials"]:
        try:
            out.append(saved.get(tuple(int(r[d]) if d == "m" else float(r[d]) for d in dims)))
        except (KeyError, TypeError, ValueError):
            out.append(None)
    return out


def _errors(t: dict) -> list[float | None]:
    """Each trial's validation error in the searchers' units (None: no score, e.g. a failed trial)."""
    metric = ((t.get("objective") or {}).get("metric")) or "val_acc"
    to_error = mae_error if metric == "val_mae" else acc_error
    out = []
    for r in t["trials"]:
        v = r.get(metric)
        out.append(to_error(v) if isinstance(v, (int, float)) and math.isfinite(v) else None)
    return out


def _ses(t: dict) -> list[float]:
    """Each trial's standard error in the searchers' units (1 - accuracy, normalised MAE); NaN: unknown."""
    regression = ((t.get("objective") or {}).get("metric")) == "val_mae"
    out = []
    for r in t["trials"]:
        se = r.get("se")
        out.append(float(se) / (1.0 if regression else 100.0) if isinstance(se, (int, float)) else math.nan)
    return out


def _pm(value: float, se: float, fmt: str = ".4g") -> str:
    """'78.00 ± 2.9' (the interval of one standard error); the value alone when the SE is unknown."""
    return f"{value:{fmt}} ± {se:.2g}" if math.isfinite(se) else f"{value:{fmt}}"


def _chosen(t: dict, dims: list[str], errors: list[float | None]) -> int | None:
    """Index of the chosen trial: the best-scored trial with the chosen setting."""
    ch = t.get("chosen") or {}
    hits = [i for i, r in enumerate(t["trials"]) if ch and errors[i] is not None
            and all(r.get(d) == ch.get(d) for d in dims if d in ch)]
    return min(hits, key=lambda i: errors[i]) if hits else None


def _values(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return ", ".join(_values(x) for x in v) or "-"
    return f"{v:.4g}" if isinstance(v, (int, float)) else html.escape(str(v))


def _knobs(params) -> str:
    """{'rho': 0.8, 'm': 20} -> 'rho 0.8, M 20'."""
    if not isinstance(params, dict) or not params:
        return html.escape(str(params or "none"))
    return html.escape(", ".join(f"{KNOB_NAMES.get(k, k)} {_values(v)}" for k, v in params.items()))


def _tune(t: dict, h: int) -> list[str]:
    k, label, shown = error_display(t)
    f, trials = t.get("final") or {}, t["trials"]
    dims, errors = _dims(t), _errors(t)
    bounds, pick, ses = _bound_of(t, dims), _chosen(t, dims, errors), _ses(t)
    finished = [e is not None and ("artifact" in r or "samples_seen" not in r) for r, e in zip(trials, errors)]
    parts = [f"<h{h}>rayflow tune, {html.escape(t['searcher'])} searcher: {len(trials)} trials</h{h}>",
             f"<p>chosen on validation data: {_knobs(t.get('chosen'))}; test {html.escape(shown)} "
             f"(retrained on all labelled images): chosen {_values(f.get('chosen'))}, hand-set "
             f"({_knobs(f.get('hand_set'))}) {_values(f.get('hand-set'))}, NOKD "
             f"{_values(f.get('NOKD student'))}, BLKD {_values(f.get('BLKD student'))}</p>"]
    if t.get("choice_why"):
        n = len(t.get("finalists") or [])
        more = f"; {n} finalists re-scored on more student seeds" if n else ""
        parts.append(f"<p>choice ({html.escape(str(t.get('choice_rule')))} rule): "
                     f"{html.escape(t['choice_why'])}{more}</p>")
    pts = [i for i in range(len(trials)) if bounds[i] is not None and finished[i]]
    if pts:
        parts.append(bound_scatter([bounds[i] for i in pts], [k * errors[i] for i in pts],
                                   [trials[i]["rho"] for i in pts], [trials[i]["m"] for i in pts], label,
                                   f"{t['searcher']} search: {len(pts)} finished trials (marker size: log M)",
                                   chosen=[i == pick for i in pts], err=[k * ses[i] for i in pts]))
    elif any(finished):
        why = t.get("bound_note") or "this search saved no bound for its trials"
        parts.append(f"<p>Bound vs measured: not drawn ({html.escape(why)}).</p>")
    if any(finished):
        best, curve = math.inf, []
        for e, done in zip(errors, finished):
            best = min(best, e) if done else best
            curve.append(k * best if math.isfinite(best) else math.nan)
        xs = [i + 1 for i in range(len(trials)) if finished[i]]
        parts.append(best_so_far({f"{t['searcher']} search": curve}, label,
                                 points=(xs, [k * errors[i - 1] for i in xs])))
    parts.append(_trials_table(t, dims, errors, bounds, finished, pick, ses))
    return parts + _fm(t)


def _fm(t: dict) -> list[str]:
    """The function-matching baseline's own search (tuning/fm_search.py): its trials, its choice, and
    its choice's test beside cGAN-KD's."""
    fm = t.get("fm") or {}
    if not fm.get("trials"):
        return []
    _, _, shown = error_display(t)
    sub = {"trials": fm["trials"], "objective": t.get("objective"), "chosen": fm.get("chosen")}
    dims, errors = fm.get("dims") or ["fm_alpha"], _errors(sub)
    f, n = t.get("final") or {}, len(fm["trials"])
    head = (f"<p>Function matching's own search ({n} trials on the same validation split): chosen "
            f"{_knobs(fm.get('chosen'))}; test {html.escape(shown)} (retrained on all labelled images) "
            f"{_values(f.get('FM, chosen'))}, cGAN-KD chosen {_values(f.get('chosen'))}. "
            f"{html.escape(fm.get('choice_why', ''))}</p>")
    # no bound and no ASHA for these trials: a trial without a score did not finish
    return [head, _trials_table(sub, dims, errors, [None] * n, [e is not None for e in errors],
                                _chosen(sub, dims, errors), _ses(sub))]


def _trials_table(t: dict, dims: list[str], errors: list, bounds: list, finished: list, pick: int | None,
                  ses: list[float]) -> str:
    """One row per trial: its knobs, bound, validation score ± its SE, the finalists' re-scored
    mean ± SE, and whether it finished / was chosen."""
    k, label, _ = error_display(t)
    regression = ((t.get("objective") or {}).get("metric")) == "val_mae"
    score = (f"val {label}" if regression else "val accuracy %") + (" ± SE" if any(map(math.isfinite, ses)) else "")
    unit = k if regression else 1.0  # finalists' mean and SE are in the metric's units (accuracy in %)
    finals = t.get("finalists") or []
    rows = []
    for i, r in enumerate(t["trials"]):
        e = errors[i]
        fin = next((f for f in finals if all(f.get(d) == r.get(d) for d in dims)), None)
        fmt = ".4g" if regression else ".2f"
        row = {"trial": i + 1, **{d: _values(r.get(d, "")) for d in dims},
               "bound": "" if bounds[i] is None else f"{bounds[i]:.3f}",
               "score": "" if e is None else _pm(k * e, k * ses[i]) if regression else
               _pm(r["val_acc"], 100.0 * ses[i], fmt),
               "rescored": "" if fin is None else
               f"{_pm(unit * fin['mean'], unit * fin['se'], fmt)} ({len(fin['scores'])} runs)",
               "status": "chosen" if i == pick else "finished" if finished[i] else
               "no score" if e is None else "stopped early (ASHA)"}
        rows.append(row)
    cols = [("trial", "trial"), *[(d, KNOB_NAMES[d]) for d in dims]]
    cols += [("bound", "bound")] if any(b is not None for b in bounds) else []
    cols += [("score", score)] + ([("rescored", "finalist: mean ± SE over seeds")] if finals else [])
    return table(rows, cols + [("status", "status")])


def render_search(grid: dict | None, tunes: list[dict], level: int = 2) -> str:
    """The section; `level`: its heading level (2 in search.html, 3 inside report.html's details)."""
    parts = [f"<h{level}>Choosing rho and M</h{level}>"]
    if grid:
        parts += _grid(grid)
    for t in tunes:
        parts += _tune(t, level + 1)
    return "\n".join(parts)
