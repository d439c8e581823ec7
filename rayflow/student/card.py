"""MODEL_CARD.md: how good the student is beside the models it is compared with, how big and how
fast it is (measured on this machine's CPU when it is exported), and what made it."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rayflow.report.summary import digits, measure_name, summarize
from rayflow.student.module import PROGRAM

LATENCY_BATCHES = (1, 256)


def per_class_accuracy(module: torch.nn.Module, images: np.ndarray, labels: np.ndarray, k: int,
                       chunk: int = 500) -> list[tuple[float, int]]:
    """(accuracy in %, images) per class of a labelled split."""
    with torch.no_grad():
        pred = torch.cat([module(torch.from_numpy(images[i:i + chunk])).argmax(1)
                          for i in range(0, len(images), chunk)]).numpy()
    out = []
    for c in range(k):
        m = labels == c
        out.append((100.0 * float((pred[m] == c).mean()) if m.any() else float("nan"), int(m.sum())))
    return out


def latency_ms(module: torch.nn.Module, c: int, size: int, reps: int = 3) -> dict[int, float]:
    """Median CPU milliseconds per image over `reps` timed calls (after one warm-up), per batch size."""
    out = {}
    with torch.no_grad():
        for bs in LATENCY_BATCHES:
            x = torch.randint(0, 256, (bs, c, size, size), dtype=torch.uint8)
            module(x)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                module(x)
                times.append(time.perf_counter() - t0)
            out[bs] = 1000.0 * statistics.median(times) / bs
    return out


def _fmt(v: float | None, metric: str) -> str:
    return "-" if v is None else f"{v:.{digits(metric)}f}"


def _header(name: str, contract: dict) -> list[str]:
    inp, out = contract["input"], contract["output"]
    c, size = inp["channels"], inp["height"]
    if contract["task"] == "classification":
        what = "logits over " + ", ".join(contract["class_names"])
    else:
        lo, hi = out["range"]
        what = f"the value in the label's unit ({out.get('unit') or 'label'} range {lo:g}..{hi:g})"
    return [f"# Student model card: {name}", "",
            f"{contract['task'].capitalize()} student. Input: uint8 {inp['layout']} images of {c}x{size}x{size} "
            f"({inp['mode']}); {inp['preprocessing']}.", f"Output: {what}."]


def _comparison(rows: list[dict], metric: str, student_label: str) -> list[str]:
    lines = ["", f"## {measure_name(metric)} on the test split (mean over seeds)", "", f"| model | {metric} | seeds |",
             "|---|---|---|"]
    for s in summarize(rows, metric)["summary"]:
        mark = " **(this student)**" if s["model"] == student_label else ""
        lines.append(f"| {s['model']}{mark} | {_fmt(s[metric], metric)} | {s['n']} |")
    return lines


def _per_class(module: torch.nn.Module, names: list[str], test) -> list[str]:
    lines = ["", "## Per-class test accuracy (this student)", "", "| class | accuracy % | images |", "|---|---|---|"]
    for cname, (acc, n) in zip(names, per_class_accuracy(module, test.images, test.labels, len(names))):
        lines.append(f"| {cname} | {acc:.2f} | {n} |")
    return lines


def _size_and_speed(module: torch.nn.Module, folder: Path, c: int, size: int, reps: int) -> list[str]:
    params = sum(p.numel() for p in module.parameters())
    files = sorted(f for f in folder.iterdir() if f.suffix in (".safetensors", ".pt2"))
    lines = ["", "## Size and speed", "", f"- parameters: {params:,}"]
    lines += [f"- {f.name}: {f.stat().st_size / 1024:.1f} KiB on disk" for f in files]
    lines += [f"- CPU latency per image at batch {bs}: {ms:.4g} ms (median of {reps}, {torch.get_num_threads()} "
              f"torch threads, measured at export)" for bs, ms in latency_ms(module, c, size, reps).items()]
    return lines


def render(*, name: str, contract: dict, rows: list[dict], metric: str, student_label: str, module: torch.nn.Module,
           folder: Path, test=None, keys: list[tuple[str, str]] = (), reps: int = 3) -> str:
    """The card's markdown. `test`: the labelled test split (per-class accuracy); `keys`: (node, key)
    of every artifact the student came from."""
    c, size = contract["input"]["channels"], contract["input"]["height"]
    lines = _header(name, contract) + _comparison(rows, metric, student_label)
    if test is not None and contract["task"] == "classification":
        lines += _per_class(module, contract["class_names"], test)
    lines += _size_and_speed(module, folder, c, size, reps)
    lines += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in contract.get("settings", {}).items()]
    if keys:
        lines += ["", "## Artifacts it came from (stage node, cache key)", "", "| node | key |", "|---|---|"]
        lines += [f"| {n} | {k} |" for n, k in keys]
    lines += ["", "## Load it with plain torch", "", "```python", "import torch",
              f'model = torch.export.load("student/{PROGRAM}").module()',
              f"out = model(images)  # uint8 tensor (N, {c}, {size}, {size})", "```", ""]
    return "\n".join(lines)


def card_of_run(store, rows: list[dict]) -> str | None:
    """The exported student's MODEL_CARD.md for a run's report, only when that student is one of the
    run's own models (its student.json names the artifact): a `distill` or `tune` of another config
    into the same output dir left a card that is not this report's."""
    import json

    doc = store.read_text("student/student.json")
    try:
        source = (json.loads(doc) if doc else {}).get("source", {}).get("artifact")
    except ValueError:
        return None
    if source is None or source not in {r.get("artifact") for r in rows}:
        return None
    return store.read_text("student/MODEL_CARD.md")
