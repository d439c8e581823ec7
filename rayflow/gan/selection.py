"""Which GAN checkpoint(s) the pipeline samples from: a pure policy over probe metrics.

GAN quality is not monotone in steps (quality run A: 98.9 % label consistency at 4k steps, 81.4 %
at 5k), so `last` can be a bad moment; the most label-consistent checkpoint can be the most
collapsed one, which is why `best_fid` trades consistency (above a floor) for diversity; and on
limited data every checkpoint has a class that left its condition, which `per_class` routes around.
Candidates are `(metrics, handle)` pairs; the handle is opaque here (a checkpoint of any executor).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("rayflow")

Candidate = tuple[dict, Any]


def _consistency(m: dict, cls: int | None = None) -> float:
    if cls is None:
        return m.get("label_consistency", -1.0)
    per = m.get("label_consistency_per_class") or []
    return per[cls] if cls < len(per) and per[cls] is not None else -1.0


def _lowest_fid_above(candidates: list[Candidate], floor: float, cls: int | None = None) -> Candidate | None:
    ok = [c for c in candidates if "fid_teacher_features" in c[0] and _consistency(c[0], cls) >= floor]
    return min(ok, key=lambda c: (c[0]["fid_teacher_features"], -c[0]["step"])) if ok else None


def _most_consistent(candidates: list[Candidate], cls: int | None = None) -> Candidate:
    return max(candidates, key=lambda c: (_consistency(c[0], cls), c[0]["step"]))


def select_checkpoint(candidates: list[Candidate], select: str, min_consistency: float = 85.0) -> Candidate:
    """The chosen checkpoint (ties -> later step). `per_class` gets best_fid's choice here (the
    training state kept with the artifact)."""
    if not candidates:
        raise RuntimeError("the GAN run left no checkpoint")
    if select == "last" or not any("label_consistency" in m for m, _ in candidates):
        return max(candidates, key=lambda c: c[0]["step"])
    if select in ("best_fid", "per_class"):
        best = _lowest_fid_above(candidates, min_consistency)
        if best is not None:
            return best
        # per_class samples class by class (select_per_class says which classes miss the floor);
        # this choice is only the training state kept with the artifact
        log.log(logging.DEBUG if select == "per_class" else logging.WARNING,
                "[gan] no checkpoint reaches %.1f %% label consistency: using the most consistent one",
                min_consistency)
    return _most_consistent(candidates)


def select_per_class(candidates: list[Candidate], min_consistency: float, num_classes: int) -> list[Candidate]:
    """best_fid class by class: for class c, the lowest-FID checkpoint whose samples of c clear the
    consistency floor, else the one most consistent on c. One candidate per class."""
    if not candidates:
        raise RuntimeError("the GAN run left no checkpoint")
    picks, short = [], []
    for c in range(num_classes):
        best = _lowest_fid_above(candidates, min_consistency, c)
        if best is None:
            best = _most_consistent(candidates, c)
            short.append(f"{c} ({_consistency(best[0], c):.0f} %)")
        picks.append(best)
    # one line for all classes: on limited data most of them can miss the floor
    by_step: dict[int, list[int]] = {}
    for c, (m, _) in enumerate(picks):
        by_step.setdefault(int(m["step"]), []).append(c)
    text = "[gan] per-class checkpoints: " + "; ".join(
        f"step {st} for class{'es' if len(cs) > 1 else ''} {_ranges(cs)}" for st, cs in sorted(by_step.items()))
    if short:
        log.warning("%s; %d of %d classes reach %.1f %% label consistency at no checkpoint and use their most "
                    "consistent one: %s", text, len(short), num_classes, min_consistency, ", ".join(short))
    else:
        log.info("%s", text)
    return picks


def _ranges(xs: list[int]) -> str:
    """`0-2, 4, 6-9` from sorted ints."""
    runs: list[list[int]] = []
    for x in xs:
        if runs and x == runs[-1][-1] + 1:
            runs[-1].append(x)
        else:
            runs.append([x])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def route_plan(route_steps: list[int]) -> tuple[list[int], list[int]]:
    """(distinct checkpoint steps, ascending; per class the index of its step among them): the
    layout of a ClassRoutedGenerator's ``generators``, shared by building and loading one."""
    steps = sorted(set(route_steps))
    return steps, [steps.index(s) for s in route_steps]
