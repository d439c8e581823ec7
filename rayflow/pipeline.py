"""Stage orchestration for `rayflow run`: each stage is cached, so re-running resumes the run."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from rayflow.artifacts import Artifact
from rayflow.config import PipelineConfig, StageSpec, to_yaml
from rayflow.data import Splits, load_splits
from rayflow.stages.supervised import train_stage

log = logging.getLogger("rayflow")


class Pipeline:
    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self._splits: Splits | None = None

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self._splits = load_splits(self.cfg.data)
            log.info("data: %s (%s)", self.cfg.data.name, self._splits.summary())
        return self._splits

    def _seeded(self, spec: StageSpec, seed: int) -> StageSpec:
        return spec.model_copy(update={"train": spec.train.model_copy(update={"seed": seed})}, deep=True)

    def teacher(self) -> Artifact:
        return train_stage(self.cfg, self.splits, "teacher", self.cfg.teacher)

    def nokd(self, seed: int) -> Artifact:
        return train_stage(self.cfg, self.splits, "nokd", self._seeded(self.cfg.student, seed))

    def run(self) -> dict:
        t0 = time.perf_counter()
        results: dict = {"config": self.cfg.model_dump(mode="json"), "rows": []}
        teacher = self.teacher()
        results["rows"].append(_row("teacher", teacher))
        for seed in self.cfg.seeds:
            results["rows"].append(_row("NOKD student", self.nokd(seed), seed))
        results["wall_s"] = time.perf_counter() - t0
        self._write_results(results)
        return results

    def _write_results(self, results: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
        (self.out / "config.yaml").write_text(to_yaml(self.cfg))

    def format_results(self, results: dict) -> str:
        metric = "test_acc" if self.splits.num_classes is not None else "test_mae"
        lines = [f"{'model':<28} {'seed':>4} {metric:>9} {'wall s':>7} cached"]
        for r in results["rows"]:
            lines.append(f"{r['model']:<28} {r.get('seed', ''):>4} {r.get(metric, float('nan')):>9.2f} "
                         f"{r.get('wall_s', 0):>7.1f} {'yes' if r.get('reused') else 'no'}")
        lines.append(f"total wall time {results.get('wall_s', 0):.1f} s; results in {self.out / 'results.json'}")
        return "\n".join(lines)


def _row(name: str, art: Artifact, seed: int | None = None) -> dict:
    row = {"model": name, "artifact": str(art.path), "reused": art.reused}
    if seed is not None:
        row["seed"] = seed
    row.update({k: v for k, v in art.metrics.items() if isinstance(v, (int, float))})
    return row
