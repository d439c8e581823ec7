"""report.html and search.html as a reader meets them, rendered from hand-built results.json /
tune-*.json / grid.json (no Ray, no training): the headline chart first, then the model card, then
the details; every figure an embedded, non-empty, valid PNG; a spread only where seeds measured one;
one bound-vs-measured scatter, one best-so-far curve and one trials table per `rayflow tune`."""

import base64
import io
import json
from html.parser import HTMLParser

import pytest
from PIL import Image

from rayflow.report import summarize, write_report
from rayflow.store import open_store
from rayflow.tuning.objective import CLASSIFICATION, Objective
from rayflow.tuning.record import write_search_report

PNG = b"\x89PNG\r\n\x1a\n"
CGAN = "cGAN-KD: + KD term on soft labels"
CARD = """# Student model card: demo <script>alert(1)</script>

Classification student. Input: uint8 NCHW images of 1x28x28 (L).
Output: logits over T-shirt, Trouser.

## Accuracy (%) on the test split (mean over seeds)

| model | test_acc | seeds |
|---|---|---|
| cGAN-KD: + KD term on soft labels **(this student)** | 84.00 | 1 |

## Size and speed

- parameters: 66,561

```python
model = torch.export.load("student/model.pt2").module()
```
"""


class _Page(HTMLParser):
    """Every <img> (alt, src) and where in the page each section starts."""

    def __init__(self, text: str):
        super().__init__()
        self.imgs: list[tuple[int, str, str]] = []
        self.sections: dict[str, int] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        pos = self.getpos()
        if tag == "img":
            self.imgs.append((pos, a.get("alt", ""), a.get("src", "")))
        if tag == "section" and a.get("id"):
            self.sections[a["id"]] = pos


def _check_png(src: str) -> None:
    head, _, payload = src.partition(",")
    assert head == "data:image/png;base64" and payload, src[:60]
    raw = base64.b64decode(payload, validate=True)
    assert raw.startswith(PNG)
    with Image.open(io.BytesIO(raw)) as im:
        im.load()
        assert im.size[0] > 0 and im.size[1] > 0


def _results(seeds: int, regression: bool, curve_points: int = 2) -> dict:
    """A run's results.json: teacher (no seed), the baselines, the cGAN-KD student and an ablation row."""
    metric = "test_mae_deg" if regression else "test_acc"
    base = {"NOKD student": 80.0, "BLKD student": 82.0, "perfect generator (oracle)": 86.0, CGAN: 84.0,
            "fake, no processing (conditioning labels)": 81.0}
    if regression:  # degrees of error: lower is better
        base = {k: 100.0 - v for k, v in base.items()}
    rows = [{"model": "teacher", metric: 9.0 if regression else 90.0, "artifact": "file:///t", "wall_s": 1.0}]
    for s in range(seeds):
        rows += [{"model": m, "seed": s, metric: v + 0.5 * s, "artifact": f"file:///{i}/{s}", "wall_s": 1.0}
                 for i, (m, v) in enumerate(base.items())]
    if regression:
        for r in rows:
            r["test_mae"] = r[metric] / 90.0
    curve = [{"step": 100 * (i + 1), "d_loss": 1.0 - 0.1 * i, "g_loss": 0.5 + 0.1 * i, "label_consistency": 40.0 + i}
             for i in range(curve_points)]
    return {"name": "demo", "metric": metric, "rows": rows, **summarize(rows, metric),
            "gan": {"steps": 100 * curve_points, "label_consistency": 50.0, "curve": curve}}


def _render(tmp_path, results: dict, card: str | None = CARD) -> tuple[str, _Page]:
    out = write_report(results, tmp_path / "report.html", card)
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # atomic: no temp file left behind
    text = out.read_text()
    return text, _Page(text)


@pytest.mark.parametrize("regression", [False, True])
@pytest.mark.parametrize("seeds", [1, 3])
def test_report_opens_with_the_chart_then_the_card_then_the_details(tmp_path, seeds, regression):
    text, page = _render(tmp_path, _results(seeds, regression))
    assert page.imgs, "no figure at all"
    for _, _, src in page.imgs:
        _check_png(src)
    first_pos, first_alt, _ = page.imgs[0]
    assert first_pos < page.sections["model-card"] < page.sections["details"]
    assert first_pos > page.sections["headline"]
    measure, better = ("MAE (deg)", "lower is better") if regression else ("Accuracy (%)", "higher is better")
    assert first_alt == f"test {measure} per model ({better})"
    # the card, escaped, with its table, list and code
    card = text[text.index('id="model-card"'):text.index('id="details"')]
    assert "&lt;script&gt;" in card and "<script>" not in text
    assert "<b>(this student)</b>" in card and "<li>parameters: 66,561</li>" in card and "<pre><code>" in card
    # the headline's chart: the produced student and the four comparison models
    headline = text[:text.index('id="model-card"')]
    for model in (CGAN, "teacher", "NOKD student", "BLKD student", "perfect generator (oracle)"):
        assert f"<td>{model}</td>" in headline
    assert "fake, no processing" not in headline  # the ablation is a detail
    if seeds == 1:
        assert "std" not in text and "±" not in text and "seeds</th>" not in headline
    else:
        assert "<th>std over seeds</th>" in headline and "<td>0.50</td>" in headline


def test_report_draws_the_gan_curve_only_in_the_details_and_only_when_it_is_a_curve(tmp_path):
    text, page = _render(tmp_path, _results(1, False, curve_points=2), card=None)
    assert not [a for _, a, _ in page.imgs if a == "GAN training curves"]  # two points: a table, no flat line
    assert "<h4>Training log</h4>" in text and "model-card" not in page.sections
    (tmp_path / "report.html").unlink()
    _, page = _render(tmp_path, _results(1, False, curve_points=5), card=None)
    curves = [pos for pos, a, src in page.imgs if a == "GAN training curves"]
    assert len(curves) == 1 and curves[0] > page.sections["details"]
    assert page.imgs[0][1].startswith("test Accuracy (%) per model")


def _tune(searcher: str, objective: dict | None, bounds: bool) -> dict:
    """A tune-<searcher>.json: four trials (the third stopped early by ASHA), the second chosen."""
    regression = objective is not None and objective["metric"] == "val_mae"
    metric = "val_mae" if regression else "val_acc"
    scores = [0.08, 0.05, 0.07, 0.06] if regression else [80.0, 85.0, 70.0, 83.0]
    trials = []
    for i, (rho, m, v) in enumerate(zip((1.0, 0.8, 0.5, 0.7), (10, 20, 40, 10), scores)):
        t = {"rho": rho, "m": m, metric: v, "samples_seen": 9600 if i != 2 else 2400, "reused": False, "wall_s": 1.0}
        if i != 2:
            t["artifact"] = f"file:///out/artifacts/cgankd/cgankd-{i}"
        trials.append(t)
    out = {"searcher": searcher, "trials": trials, "space": {"rho": [0.5, 1.0], "m": [10, 40], "grids": {}},
           "bound": {json.dumps([t["rho"], t["m"]]): 0.2 + 0.1 * i for i, t in enumerate(trials)} if bounds else {},
           "chosen": {"rho": 0.8, "m": 20},
           "final": {"hand_set": {"rho": 0.9, "m": 10}, "chosen": [84.2], "hand-set": [83.0], "NOKD student": [80.1],
                     "BLKD student": [81.0]}}
    if objective is not None:
        out["objective"] = objective
    if not bounds:
        out["bound_note"] = "no bound: the headroom diagnostic needs held-out real images"
    return out


def _grid() -> dict:
    rec = [{"rho": r, "m": m, "val_error": [e, e + 0.01], "bound": b}
           for r, m, e, b in ((1.0, 10, 0.2, 0.3), (0.8, 20, 0.15, 0.25), (0.5, 40, 0.18, 0.35))]
    return {"recorded": rec, "seed_noise": 0.005, "spread": 0.05, "spearman_bound_vs_measured": 0.5,
            "nokd_val_error": [0.22], "replay": [{"searcher": "random", "mean_trials": 2.0, "median_trials": 2.0,
                                                  "fraction_of_grid": 0.67, "reached": 1.0}],
            "curves": {"random": [[0.2, 0.15, 0.15], [0.18, 0.15]]}, "objective": dict(CLASSIFICATION)}


def _sections(text: str) -> list[str]:
    return text.split("<h3>rayflow tune, ")[1:]


def test_search_page_has_every_tunes_figures_and_trials(tmp_path):
    """A `rayflow tune` alone (no grid.json) gets its own figures; with a grid.json too, each part its own."""
    from rayflow.data.labels import LabelRange
    from rayflow.labels import Continuous

    store = open_store(str(tmp_path))
    store.write_text("tune-random.json", json.dumps(_tune("random", None, bounds=True)))
    write_search_report(store)
    text = (tmp_path / "search.html").read_text()
    page = _Page(text)
    assert sorted(a for _, a, _ in page.imgs) == ["best so far", "bound vs measured"]
    for _, _, src in page.imgs:
        _check_png(src)
    (one,) = _sections(text)
    assert "<th>rho</th><th>M</th><th>bound</th><th>val accuracy %</th><th>status</th>" in one
    assert one.count("<tr>") == 5 and "<td>chosen</td>" in one and "<td>stopped early (ASHA)</td>" in one
    assert "<tr><td>2</td><td>0.8</td><td>20</td><td>0.300</td><td>85.00</td><td>chosen</td></tr>" in one
    assert "own search" not in one  # a search recorded before the FM baseline had one
    # with the FM baseline's own search: its trials, its choice and its test beside cGAN-KD's
    t = _tune("random", None, bounds=True)
    t["fm"] = {"dims": ["fm_alpha"], "chosen": {"fm_alpha": 0.5}, "choice_why": "the best on validation",
               "trials": [{"fm_alpha": 1.0, "val_acc": 81.0, "se": 2.5}, {"fm_alpha": 0.5, "val_acc": 84.0, "se": 2.0}]}
    t["final"]["FM, chosen"] = [82.5]
    store.write_text("tune-random.json", json.dumps(t))
    write_search_report(store)
    (one,) = _sections((tmp_path / "search.html").read_text())
    assert "Function matching's own search (2 trials on the same validation split): chosen FM alpha 0.5; " \
           "test accuracy (retrained on all labelled images) 82.5, cGAN-KD chosen 84.2" in one
    assert "<th>trial</th><th>FM alpha</th><th>val accuracy % ± SE</th><th>status</th>" in one
    assert "<tr><td>2</td><td>0.5</td><td>84.00 ± 2</td><td>chosen</td></tr>" in one
    store.write_text("tune-random.json", json.dumps(_tune("random", None, bounds=True)))
    # and beside a recorded grid and a regression tune whose data had no held-out images (no bound)
    mae = Objective(Continuous(LabelRange(0.0, 90.0, "deg"))).to_dict()
    store.write_text("grid.json", json.dumps(_grid()))
    store.write_text("tune-tpe.json", json.dumps(_tune("tpe", mae, bounds=False)))
    write_search_report(store)
    text = (tmp_path / "search.html").read_text()
    page = _Page(text)
    alts = [a for _, a, _ in page.imgs]
    assert alts.count("bound vs measured") == 2 and alts.count("best so far") == 3  # grid, random, tpe
    for _, _, src in page.imgs:
        _check_png(src)
    random, tpe = _sections(text)
    assert random.count("<img") == 2 and "val accuracy %" in random
    assert tpe.count("<img") == 1 and "Bound vs measured: not drawn (no bound: the headroom" in tpe
    assert "<th>val MAE (deg)</th>" in tpe and "<td>4.5</td><td>chosen</td>" in tpe  # 0.05 of 90 degrees
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.json", "search.html", "tune-random.json",
                                                          "tune-tpe.json"]


def test_report_shows_the_exported_students_card_only_when_it_is_one_of_the_runs_models(tmp_path):
    """`rayflow run` into an output dir where `distill` exported a student: the card is this report's
    only when student.json names an artifact among the run's rows (another config's export is not)."""
    import json

    from rayflow.store import ArtifactStore
    from rayflow.student.card import card_of_run

    store = ArtifactStore(str(tmp_path))
    rows = [{"model": "cGAN-KD: + KD term on soft labels", "artifact": str(tmp_path / "artifacts/cgankd/cgankd-1")},
            {"model": "NOKD student", "artifact": str(tmp_path / "artifacts/nokd/nokd-1")}]
    assert card_of_run(store, rows) is None  # nothing exported
    store.write_text("student/MODEL_CARD.md", "# the card\n")
    store.write_text("student/student.json", json.dumps({"source": {"artifact": rows[0]["artifact"]}}))
    assert card_of_run(store, rows) == "# the card\n"
    store.write_text("student/student.json", json.dumps({"source": {"artifact": str(tmp_path / "elsewhere")}}))
    assert card_of_run(store, rows) is None
    store.write_text("student/student.json", "not json")
    assert card_of_run(store, rows) is None
