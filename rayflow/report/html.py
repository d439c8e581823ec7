"""results.json -> a self-contained report.html (tables + PNGs inlined), written atomically."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

from rayflow.atomic import atomic_write_text

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img_tag(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _file_img(path: str | Path, alt: str) -> str:
    p = Path(path)
    return _img_tag(base64.b64encode(p.read_bytes()).decode(), alt) if p.is_file() else ""


def _table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in cols)
    body = []
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r.get(k, "")
            cells.append(f"<td>{v:.2f}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


MANIFOLD = ("precision", "recall", "density", "coverage")
MANIFOLD_NOTE = ("<p>Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020, "
                 "k = 5), class by class in teacher-feature space, the same fresh samples against as many held-out "
                 "reals: <i>precision</i> = share of fakes inside some real's 5-NN ball (fidelity), <i>density</i> "
                 "the same counted per ball (≈ 1 when fakes are distributed like the reals), <i>recall</i> = share "
                 "of reals inside some fake's ball, <i>coverage</i> = share of reals whose ball holds a fake "
                 "(diversity). A collapsed class keeps precision and loses recall and coverage.</p>")


def _curve_plot(curve: list[dict]) -> str:
    if not curve:
        return ""
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    steps = [c["step"] for c in curve]
    for k in ("d_loss", "g_loss"):
        if k in curve[0]:
            ax[0].plot(steps, [c.get(k) for c in curve], label=k)
    ax[0].set_xlabel("GAN step"), ax[0].legend(), ax[0].set_title("hinge losses")
    if "label_consistency" in curve[0]:
        ax[1].plot(steps, [c.get("label_consistency") for c in curve], marker="o")
        ax[1].set_ylabel("%"), ax[1].set_title("label consistency per checkpoint (probe, as in the log)")
    ax[1].set_xlabel("GAN step")
    return _img_tag(_png(fig), "GAN training curves")


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
    return _img_tag(_png(fig), "acceptance per class")


def render_report(results: dict) -> str:
    """report.html as one self-contained page (images inlined), so it can live in any store."""
    metric = results.get("metric", "test_acc")
    parts = ["<!doctype html><meta charset='utf-8'><title>rayflow report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
             "img{max-width:100%;margin:4px}</style>",
             f"<h1>rayflow: {html.escape(results.get('name', 'run'))}</h1>"]
    summary = results.get("summary")
    if summary:
        parts.append("<h2>Summary (means over seeds)</h2>" + _table(summary, [("model", "model"), (metric, metric),
                     ("std", "std over seeds"), ("n", "seeds"), ("delta_nokd", "vs NOKD"), ("delta_blkd", "vs BLKD")]))
    for note in results.get("notes") or []:
        parts.append(f"<p><b>Note:</b> {html.escape(note)}</p>")
    d = results.get("diagnostic") or {}
    if d.get("verdict"):
        parts.append(f"<h2>Headroom diagnostic</h2><p>{html.escape(d['verdict'])}</p>")
    if results.get("headroom_recovered") is not None:
        parts.append(f"<p><b>Headroom recovered by cGAN-KD</b>: {100 * results['headroom_recovered']:.0f} % "
                     f"= (cGAN-KD − NOKD) / (perfect generator − NOKD)</p>")
    chosen = [("selected_step", "step chosen on validation")] \
        if any("selected_step" in r for r in results.get("rows", [])) else []
    parts.append("<h2>All runs</h2>" + _table(results.get("rows", []), [("model", "model"), ("seed", "seed"),
                 (metric, metric), *chosen, ("wall_s", "wall s"), ("artifact", "artifact")]))
    if results.get("ablation"):
        parts.append("<h2>Ablation (each row a real pipeline run)</h2>" + _table(
            results["ablation"], [("variant", "fake data"), (metric, metric), ("delta_nokd", "vs NOKD"),
                                  ("fake_label_consistency", "fake labels agree with teacher %"), ("m", "M")]))
    if results.get("kd_table"):
        rows = []
        for e in results["kd_table"]:
            def ms(m, sd):
                return "" if m is None else f"{m:.2f} ± {sd:.2f}"
            rows.append({"method": e["method"], "alone": ms(e["alone"], e["alone_std"]),
                         "with": ms(e["with_cgan"], e["with_cgan_std"]), "seeds": e["alone_n"],
                         "delta": e.get("delta", ""),
                         "beyond": "" if "beyond_spread" not in e else ("yes" if e["beyond_spread"] else "no")})
        parts.append("<h2>KD methods: alone vs with cGAN samples</h2><p>Each method m twice: the student on "
                     "the real images with the online teacher (task loss + β·L<sub>m</sub>; blkd: the BLKD "
                     "student), and the cGAN-KD student (processed fakes, Hinton term on soft labels) + "
                     "β·L<sub>m</sub> (blkd: the cGAN-KD student). Mean ± std over seeds; every cell a real "
                     "run. <i>Beyond spread</i>: the gain exceeds the two rows' standard deviations added up.</p>"
                     + _table(rows, [("method", "method"), ("alone", f"alone ({metric})"),
                                     ("with", "with cGAN samples"), ("delta", "delta"), ("seeds", "seeds"),
                                     ("beyond", "beyond spread")]))
    gan = results.get("gan") or {}
    if gan:
        parts.append("<h2>cGAN</h2>" + _table([gan], [("steps", "steps"), ("selected_step", "checkpoint used"),
                     ("label_consistency", "label consistency % (the artifact's generator)"),
                     ("fid_teacher_features", "FID (teacher features, vs held-out)"),
                     *[(k, f"{k} (mean over classes)") for k in MANIFOLD if gan.get(k) is not None],
                     ("wall_s", "wall s")]))
        parts.append("<p>Label consistency: how often the teacher's class is the generator's condition. This table "
                     "measures the artifact's own generator (with <code>gan.select: per_class</code>, each class "
                     "from its own checkpoint) on fresh samples; the training log's <i>step N: label consistency</i> "
                     "lines and the curve below probe each checkpoint on other samples, so they differ by sampling "
                     "noise (and by the routing). The log's <i>the artifact's generator</i> line gives both.</p>")
        if gan.get("precision") is not None:
            parts.append(MANIFOLD_NOTE)
        per_class = gan.get("label_consistency_per_class") or []
        routes = gan.get("route_steps") or []
        if per_class:
            manifold = [k for k in MANIFOLD if len(gan.get(f"{k}_per_class") or []) == len(per_class)]
            rows = [{"class": _class_name(results, c), "label consistency %": v,
                     **{k: gan[f"{k}_per_class"][c] for k in manifold if gan[f"{k}_per_class"][c] is not None},
                     **({"checkpoint": routes[c]} if c < len(routes) else {})} for c, v in enumerate(per_class)]
            cols = [("class", "class"), ("label consistency %", "label consistency %"), *[(k, k) for k in manifold]]
            if routes:
                cols.append(("checkpoint", "checkpoint (gan.select: per_class)"))
            parts.append("<h3>Per class</h3>" + _table(rows, cols))
        parts.append(_curve_plot(gan.get("curve", [])))
    if results.get("synth"):
        parts.append("<h2>Synthetic data</h2>" + _acceptance_plot(results["synth"], results.get("class_names")))
    for title, p in (results.get("grids") or {}).items():
        parts.append(f"<h3>{html.escape(title)}</h3>{_file_img(p, title)}")
    search = results.get("search") or {}
    if search.get("grid") or search.get("tunes"):
        from rayflow.report.search_html import render_search

        parts.append(render_search(search.get("grid"), search.get("tunes") or []))  # its own <h2>
    parts.append(f"<p>total wall time {results.get('wall_s', 0):.0f} s</p>")
    return "\n".join(parts)


def write_report(results: dict, path: str | Path) -> Path:
    return atomic_write_text(path, render_report(results))
