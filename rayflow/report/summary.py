"""Result statistics over a run's rows: means and spreads over seeds, deltas vs NOKD and BLKD, the
share of the perfect generator's headroom that cGAN-KD recovers, and the console table."""

from __future__ import annotations


KD_TABLE_PREFIX = "cGAN-KD + "
LEVER_PREFIX = "cGAN-KD with "  # a lever's ablation row (rayflow/levers.py): measured, not the run's choice


def lower_is_better(metric: str) -> bool:
    """An error (MAE) rather than an accuracy: every gain below is then `-delta`."""
    return "mae" in metric


def digits(metric: str) -> int:
    """Decimals a metric is shown with: normalised [0, 1] errors need more than % or degrees."""
    return 4 if metric == "test_mae" else 2


def measure_name(metric: str) -> str:
    """'Accuracy (%)', 'MAE (deg)', or the MAE of labels normalised to [0, 1] (no unit)."""
    if metric == "test_acc":
        return "Accuracy (%)"
    unit = metric.removeprefix("test_mae").lstrip("_")
    return f"MAE ({unit})" if unit else "MAE (labels normalised to [0, 1])"


def _mean(rows: list[dict], model: str, metric: str) -> float | None:
    vals = [r[metric] for r in rows if r["model"] == model and metric in r]
    return sum(vals) / len(vals) if vals else None


def summarize(rows: list[dict], metric: str) -> dict:
    """Mean and spread over seeds per model, deltas vs NOKD and BLKD, and the headroom recovered."""
    import statistics

    names = list(dict.fromkeys(r["model"] for r in rows))
    summary = []
    for n in names:
        vals = [r[metric] for r in rows if r["model"] == n and metric in r]
        if vals:
            summary.append({"model": n, metric: sum(vals) / len(vals), "n": len(vals),
                            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0})
    base = {s["model"]: s[metric] for s in summary}
    for s in summary:
        if "NOKD student" in base:
            s["delta_nokd"] = s[metric] - base["NOKD student"]
        if "BLKD student" in base:
            s["delta_blkd"] = s[metric] - base["BLKD student"]
    out: dict = {"summary": summary}
    # the ablation's rows, the levers' among them; "cGAN-KD + m" rows belong to the KD-method table
    # (rayflow/kd_table.py); the headroom is the ablation's best, a lever's row being no choice made
    # on validation
    ablation = [n for n in names if n.startswith(("fake", "+", "cGAN-KD")) and not n.startswith(KD_TABLE_PREFIX)]
    kd_rows = [n for n in ablation if n.startswith(("cGAN-KD", "+ relabelling")) and not n.startswith(LEVER_PREFIX)]
    if kd_rows and "perfect generator (oracle)" in base and "NOKD student" in base:
        sign = -1.0 if lower_is_better(metric) else 1.0
        best = max(sign * base[n] for n in kd_rows)
        span = sign * base["perfect generator (oracle)"] - sign * base["NOKD student"]
        out["headroom_recovered"] = (best - sign * base["NOKD student"]) / span if span > 0 else None
    out["ablation"] = [{"variant": s["model"], metric: s[metric], "delta_nokd": s.get("delta_nokd")}
                       for s in summary if s["model"] in ablation]
    return out


def headroom(rows: list[dict], metric: str) -> dict:
    """Gain of the perfect generator over NOKD and BLKD, and the teacher-student gap (means over seeds)."""
    t, n, b, o = (_mean(rows, m, metric) for m in ("teacher", "NOKD student", "BLKD student",
                                                     "perfect generator (oracle)"))
    out = {"teacher": t, "nokd": n, "blkd": b, "oracle": o}
    if None in (t, n, b, o):  # e.g. no held-out images (no perfect generator), or a model without the metric
        missing = [k for k, v in out.items() if v is None]
        out["verdict"] = f"headroom ({metric}): not measured ({', '.join(missing)}: no {metric})"
        return out
    out.update(teacher_minus_nokd=t - n, oracle_minus_nokd=o - n, oracle_minus_blkd=o - b)
    if lower_is_better(metric):  # an error: the headroom is the share of NOKD's error a perfect generator removes
        out["oracle_gain_pct"] = 100.0 * (n - o) / n if n > 0 else 0.0
        worth = out["oracle_gain_pct"] >= 15.0 and o < b
        gains = (f"perfect generator {o - n:+.3g} vs NOKD ({-out['oracle_gain_pct']:+.0f} %), {o - b:+.3g} vs plain "
                 f"KD; teacher {t - n:+.3g} vs NOKD")
    else:
        worth = o - n >= 1.0 and o - b > 0.3
        gains = f"perfect generator {o - n:+.2f} over NOKD, {o - b:+.2f} over BLKD; teacher {t - n:+.2f} over NOKD"
    out["verdict"] = f"headroom ({metric}): {gains} -> " + (
        "cGAN-KD can pay off here (if the GAN follows its condition)." if worth else
        "little room: expect cGAN-KD to match BLKD at best.")
    return out


def row(name: str, art, seed: int | None = None) -> dict:
    """One result row: a model artifact's numeric metrics, named for the table."""
    out = {"model": name, "artifact": str(art.uri), "reused": art.reused}
    if seed is not None:
        out["seed"] = seed
    out.update({k: v for k, v in art.metrics.items() if isinstance(v, (int, float))})
    return out


def fake_prc(ablation: list[dict]) -> dict[str, str]:
    """Per ablation row with them, its fake set's precision / recall / coverage (rayflow/synth/quality.py)
    as `0.81/0.42/0.63`: a column of the console table, not lines (`rayflow run` stays short)."""
    keys = ("fake_precision", "fake_recall", "fake_coverage")
    return {a["variant"]: "/".join(f"{a[k]:.2f}" for k in keys) for a in ablation if all(k in a for k in keys)}


def format_results(results: dict) -> str:
    """The console table of a run's rows."""
    metric = results.get("metric", "test_acc")
    n = digits(metric)
    chosen = any("selected_step" in r for r in results["rows"])  # train.select=best_val: the step kept
    prc = fake_prc(results.get("ablation") or [])
    lines = [f"{'model':<40} {'seed':>4} {metric:>9} " + ("step(val) " if chosen else "") + f"{'wall s':>7} cached"
             + (f" {'fakes P/R/C':>14}" if prc else "")]
    for r in results["rows"]:
        step = f"{r.get('selected_step', r.get('step', '')):>9} " if chosen else ""
        cached = "yes" if r.get("reused") else "no"
        lines.append(f"{r['model']:<40} {r.get('seed', ''):>4} {r.get(metric, float('nan')):>9.{n}f} {step}"
                     f"{r.get('wall_s', 0):>7.1f} " + (f"{cached:<6} {prc.get(r['model'], ''):>14}".rstrip()
                                                       if prc else cached))
    if results.get("kd_table"):
        from rayflow.kd_table import format_table

        lines.append(format_table(results["kd_table"], metric))
    d = results.get("diagnostic")
    if d and d.get("verdict"):
        lines.append(d["verdict"])
    lines.append(f"total wall time {results.get('wall_s', 0):.1f} s; results in {results.get('output_dir', '')}")
    return "\n".join(lines)
