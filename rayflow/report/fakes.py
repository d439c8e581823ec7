"""What the report shows of each fake set: teacher agreement with its labels, and sample grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fake_agreement(shards_dir: str | Path) -> dict:
    """% of fake labels the teacher agrees with: conditioning labels vs the labels actually used."""
    from rayflow.synth.io import read_fake_set

    fs = read_fake_set(shards_dir)
    arg = fs.teacher_logits.argmax(1)
    return {"orig": 100.0 * float((fs.orig_labels == arg).mean()),
            "final": 100.0 * float((fs.labels == arg).mean()), "m": int(len(fs.labels))}


def title(flags: dict) -> str:
    if flags.get("filter") or flags.get("relabel"):
        return "after subsampling + filtering (rows: conditioning class)" if flags.get("subsample") else \
            "after filtering (rows: conditioning class)"
    return "after cDR-RS subsampling" if flags.get("subsample") else "fakes before processing"


def grids(gan: Any, fake_sets: dict[str, tuple[dict, Path]], out_dir: Path) -> dict[str, str]:
    """Sample grids: the GAN's last checkpoint, and 10 per class of each fake set (after its
    processing), written to `out_dir` (a local directory)."""
    from rayflow.gan import save_grid_png
    from rayflow.synth.io import read_fake_set

    out = {f"GAN samples, {p.stem}": str(p) for p in sorted(Path(gan.path).glob("samples_*.png"))[-1:]}
    for name, (flags, shards) in fake_sets.items():
        fs = read_fake_set(shards, 10)
        order = fs.orig_labels.argsort(kind="stable")
        path = out_dir / f"grid_{name}.png"
        save_grid_png(fs.images[order], path, nrow=10)
        out[title(flags)] = str(path)
    return out
