"""What the report shows of each fake set: teacher agreement with its labels, and sample grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def title(flags: dict) -> str:
    if flags.get("filter") or flags.get("relabel"):
        return "after subsampling + filtering (rows: conditioning class)" if flags.get("subsample") else \
            "after filtering (rows: conditioning class)"
    return "after cDR-RS subsampling" if flags.get("subsample") else "fakes before processing"


def grids(gan: Any, fake_sets: dict[str, tuple[dict, dict]], out_dir: Path, space: Any) -> dict[str, str]:
    """Sample grids: the GAN's last checkpoint, its samples over their nearest real training images,
    and the first 10 per stratum (class, or slice of a
    continuous label's range: one row per angle band) of each fake set (after its processing;
    `fake_sets`: name -> (flags, the view's rows with their files); `space`: the run's label space),
    written to `out_dir`."""
    import numpy as np

    from rayflow.gan import save_grid_png
    from rayflow.synth.view import read_view

    out = {f"GAN samples, {p.stem}": str(p) for p in sorted(Path(gan.path).glob("samples_*.png"))[-1:]}
    near = Path(gan.path) / "nearest_real.png"  # gan stage's NEAREST_GRID; absent in artifacts built before it
    if near.is_file():
        n = (gan.metrics or {}).get("nearest_real_searched")
        out[f"the cGAN's samples (odd rows, one pair of rows per class) over each one's nearest real training "
            f"image in teacher-feature space (even rows{f'; among {n} training images' if n else ''}): a copy "
            f"means memorisation, the same neighbour again and again collapse"] = str(near)
    for name, (flags, rows) in fake_sets.items():
        strata = space.strata_of(rows["orig_label"])
        first = np.concatenate([np.flatnonzero(strata == c)[:10] for c in np.unique(strata)])
        fs = read_view(rows["file"][first], rows["sample_id"][first], rows["label"][first])
        order = np.lexsort((fs.orig_labels, space.strata_of(fs.orig_labels)))  # rows by stratum, then label
        path = out_dir / f"grid_{name}.png"
        save_grid_png(fs.images[order], path, nrow=10)
        out[title(flags)] = str(path)
    return out
