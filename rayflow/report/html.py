"""results.json -> a self-contained report.html (PNGs inlined), written atomically.

The order is what a reader needs first: the headline chart (the student the run produced beside
teacher, NOKD, BLKD and the perfect generator; `headline.py`), then the exported student's model
card when the output has one, then the details (every run, ablation, KD table, the cGAN and its
curves, fake sets, sample grids, the search)."""

from __future__ import annotations

import html
from pathlib import Path

from rayflow.atomic import atomic_write_text
from rayflow.report import headline
from rayflow.report.figures import file_img, img_tag, page, plt, png, table
from rayflow.report.markdown import to_html
from rayflow.report.summary import digits

MIN_CURVE_POINTS = 3  # fewer logged GAN points draw a flat segment, not a curve: a table says more


MANIFOLD = ("precision", "recall", "density", "coverage")
MANIFOLD_NOTE = ("<p>Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020, "
                 "k = 5), class by class in teacher-feature space, the same fresh samples against as many held-out "
                 "reals: <i>precision</i> = share of fakes inside some real's 5-NN ball (fidelity), <i>density</i> "
                 "the same counted per ball (≈ 1 when fakes are distributed like the reals), <i>recall</i> = share "
                 "of reals inside some fake's ball, <i>coverage</i> = share of reals whose ball holds a fake "
                 "(diversity). A collapsed class keeps precision and loses recall and coverage.</p>")


def _curve_plot(curve: list[dict]) -> str:
    """The GAN's hinge losses and label consistency per logged step (a table when too few to plot)."""
    if not curve:
        return ""
    keys = [k for k in ("d_loss", "g_loss", "label_consistency") if k in curve[0]]
    if len(curve) < MIN_CURVE_POINTS:
        rows = [{"step": c["step"], **{k: f"{c[k]:.4g}" for k in keys if c.get(k) is not None}} for c in curve]
        return "<h4>Training log</h4>" + table(rows, [("step", "GAN step")] + [(k, k) for k in keys])
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    steps = [c["step"] for c in curve]
    for k in ("d_loss", "g_loss"):
        if k in keys:
            ax[0].plot(steps, [c.get(k) for c in curve], label=k)
    ax[0].set_xlabel("GAN step"), ax[0].legend(), ax[0].set_title("hinge losses")
    if "label_consistency" in keys:
        ax[1].plot(steps, [c.get("label_consistency") for c in curve], marker="o")
        ax[1].set_ylabel("%"), ax[1].set_title("label consistency per checkpoint (probe, as in the log)")
    ax[1].set_xlabel("GAN step")
    return "<h4>Training curves</h4>" + img_tag(png(fig), "GAN training curves")


def _class_name(results: dict, c: int) -> str:
    """`c` with its name when the data has names ('3 (Dress)'), so a table row says which class it is."""
    names = results.get("class_names") or []
    return f"{c} ({names[c]})" if c < len(names) and names[c] != str(c) else str(c)


def _acceptance_plot(synth: dict, class_names: list[str] | None = None) -> str:
    series = {name: m.get("filter_keep_per_class") or m.get("subsample_accept_per_class")
              for name, m in synth.items()}
    series = {k: v for k, v in series.items() if v}
    acc = {name: m.get("subsample_accept_per_class") for name, m in synth.items() if m.get("subsample_accept_per_class")}
    if not acc and not series:
        return ""
    fig, ax = plt.subplots(figsize=(7, 3))
    for name, v in (acc or series).items():
        ax.plot(range(len(v)), [100 * float(x) for x in v], marker="o", label=name)
    n = max(len(v) for v in (acc or series).values())
    if class_names and len(class_names) == n <= 20:
        ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("class"), ax.set_ylabel("% accepted"), ax.legend(fontsize=7)
    ax.set_title("cDR-RS acceptance rate per class")
    return img_tag(png(fig), "acceptance per class")


def _card(card: str | None) -> str:
    if not card:
        return ("<p>No exported student in this output yet: <code>rayflow distill</code> (or <code>rayflow "
                "tune</code>) writes <code>student/</code> with its model card.</p>")
    return f'<section id="model-card"><h2>Model card</h2><div class="card">{to_html(card)}</div></section>'


def _kd_table(results: dict, metric: str) -> str:
    n = digits(metric)
    entries = results["kd_table"]
    several = any((e.get("alone_n") or 0) > 1 or (e.get("with_cgan_n") or 0) > 1 for e in entries)

    def ms(m, sd, k):
        return "" if m is None else f"{m:.{n}f}" + (f" ± {sd:.{n}f}" if k and k > 1 else "")

    rows = [{"method": e["method"], "alone": ms(e["alone"], e["alone_std"], e.get("alone_n")),
             "with": ms(e["with_cgan"], e["with_cgan_std"], e.get("with_cgan_n")), "seeds": e["alone_n"],
             "delta": "" if e.get("delta") is None else f"{e['delta']:+.{n}f}",
             "beyond": "" if "beyond_spread" not in e else ("yes" if e["beyond_spread"] else "no")} for e in entries]
    spread = ("Mean ± std over seeds; every cell a real run. <i>Beyond spread</i>: the gain exceeds the two rows' "
              "standard deviations added up." if several else "One seed per cell (no spread measured); every "
              "cell a real run.")
    cols = [("method", "method"), ("alone", f"alone ({metric})"), ("with", "with cGAN samples"), ("delta", "delta"),
            ("seeds", "seeds")] + ([("beyond", "beyond spread")] if several else [])
    return ("<h3>KD methods: alone vs with cGAN samples</h3><p>Each method m twice: the student on the real images "
            "with the online teacher (task loss + β·L<sub>m</sub>; blkd: the BLKD student), and the cGAN-KD student "
            "(processed fakes, Hinton term on soft labels) + β·L<sub>m</sub> (blkd: the cGAN-KD student). "
            f"{spread}</p>" + table(rows, cols))


def _gan(results: dict, gan: dict) -> str:
    manifold = [k for k in MANIFOLD if gan.get(k) is not None]
    parts = ["<h3>cGAN</h3>" + table([gan], [("steps", "steps"), ("selected_step", "checkpoint used"),
             ("label_consistency", "label consistency % (the artifact's generator)"),
             ("fid_teacher_features", "FID (teacher features, vs held-out)"),
             *[(k, f"{k} (mean over classes)") for k in manifold], ("wall_s", "wall s")]),
             "<p>Label consistency: how often the teacher's class is the generator's condition. This table "
             "measures the artifact's own generator (with <code>gan.select: per_class</code>, each class "
             "from its own checkpoint) on fresh samples; the training log's <i>step N: label consistency</i> "
             "lines and the curve below probe each checkpoint on other samples, so they differ by sampling "
             "noise (and by the routing). The log's <i>the artifact's generator</i> line gives both.</p>"]
    if manifold:
        parts.append(MANIFOLD_NOTE)
    per_class, routes = gan.get("label_consistency_per_class") or [], gan.get("route_steps") or []
    if per_class:
        manifold = [k for k in MANIFOLD if len(gan.get(f"{k}_per_class") or []) == len(per_class)]
        rows = [{"class": _class_name(results, c), "label consistency %": v,
                 **{k: gan[f"{k}_per_class"][c] for k in manifold if gan[f"{k}_per_class"][c] is not None},
                 **({"checkpoint": routes[c]} if c < len(routes) else {})} for c, v in enumerate(per_class)]
        cols = [("class", "class"), ("label consistency %", "label consistency %"), *[(k, k) for k in manifold]]
        if routes:
            cols.append(("checkpoint", "checkpoint (gan.select: per_class)"))
        parts.append("<h4>Per class</h4>" + table(rows, cols))
    parts.append(_curve_plot(gan.get("curve", [])))
    return "\n".join(parts)


def _ablation(rows: list[dict], metric: str) -> str:
    """The ablation table; with held-out reals, each row's fake set's precision / recall / density /
    coverage (its training labels' classes, teacher features, k = 5; rayflow/synth/quality.py)."""
    from rayflow.synth.quality import CAP, NAMES

    cols = [("variant", "fake data"), (metric, metric), ("delta_nokd", "vs NOKD"),
            ("fake_label_consistency", "fake labels agree with teacher %"), ("m", "M")]
    keys = [k for k in NAMES if any(f"fake_{k}" in r for r in rows)]
    note = "<p>Fakes' precision / recall / density / coverage: mean over classes (by the label the student " \
        f"trains on) of at most {CAP} fakes per class against the held-out reals, in the teacher's features.</p>"
    return table(rows, cols + [(f"fake_{k}", f"fakes' {k}") for k in keys]) + (note if keys else "")


def _details(results: dict) -> str:
    metric = results.get("metric", "test_acc")
    parts = []
    d = results.get("diagnostic") or {}
    if d.get("verdict"):
        parts.append(f"<h3>Headroom diagnostic</h3><p>{html.escape(d['verdict'])}</p>")
    every = headline.stats(results.get("rows") or [], metric, headline=False)
    if len(every) > len(headline.stats(results.get("rows") or [], metric)):  # the ablation's rows too
        parts.append("<h3>Every model (mean over seeds)</h3>" + headline.summary_table(every, metric))
    chosen = [("selected_step", "step chosen on validation")] \
        if any("selected_step" in r for r in results.get("rows", [])) else []
    rows = [{**r, metric: f"{r[metric]:.{digits(metric)}f}"} if isinstance(r.get(metric), float) else r
            for r in results.get("rows", [])]
    parts.append("<h3>All runs</h3>" + table(rows, [("model", "model"), ("seed", "seed"), (metric, metric), *chosen,
                                                    ("wall_s", "wall s"), ("artifact", "artifact")]))
    if results.get("ablation"):
        parts.append("<h3>Ablation (each row a real pipeline run)</h3>" + _ablation(results["ablation"], metric))
    if results.get("kd_table"):
        parts.append(_kd_table(results, metric))
    if results.get("gan"):
        parts.append(_gan(results, results["gan"]))
    if results.get("synth"):
        parts.append("<h3>Synthetic data</h3>" + _acceptance_plot(results["synth"], results.get("class_names")))
    for title, p in (results.get("grids") or {}).items():
        parts.append(f"<h4>{html.escape(title)}</h4>{file_img(p, title)}")
    search = results.get("search") or {}
    if search.get("grid") or search.get("tunes"):
        from rayflow.report.search_html import render_search

        parts.append(render_search(search.get("grid"), search.get("tunes") or [], level=3))
    parts.append(f"<p>total wall time {results.get('wall_s', 0):.0f} s</p>")
    return "\n".join(parts)


def render_report(results: dict, card: str | None = None) -> str:
    """report.html as one self-contained page; `card`: the exported student's MODEL_CARD.md, if any."""
    return page("rayflow report", "\n".join([
        f"<h1>rayflow: {html.escape(results.get('name', 'run'))}</h1>",
        f'<section id="headline">{headline.section(results)}</section>', _card(card),
        f'<section id="details"><h2>Details</h2>\n{_details(results)}</section>']))


def write_report(results: dict, path: str | Path, card: str | None = None) -> Path:
    return atomic_write_text(path, render_report(results, card))
