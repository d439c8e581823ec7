"""Stage orchestration for `rayflow run`: each stage is cached, so re-running resumes the run."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from rayflow.artifacts import Artifact
from rayflow.config import ConfigError, PipelineConfig, StageSpec, to_yaml
from rayflow.data import Splits, load_splits
from rayflow.stages.supervised import StageRequest, train_stage, train_stages

log = logging.getLogger("rayflow")


class Pipeline:
    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self._splits: Splits | None = None
        self._held_logits: dict[str, object] = {}

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self._splits = load_splits(self.cfg.data)
            log.info("data: %s (%s)", self.cfg.data.name, self._splits.summary())
        return self._splits

    def _seeded(self, spec: StageSpec, seed: int, steps: int | None = None) -> StageSpec:
        train = {"seed": seed} if steps is None else {"seed": seed, "steps": steps}
        return spec.model_copy(update={"train": spec.train.model_copy(update=train)}, deep=True)

    def teacher(self) -> Artifact:
        return train_stage(self.cfg, self.splits, "teacher", self.cfg.teacher)

    def nokd(self, seed: int) -> Artifact:
        return self._train([self._nokd(seed)])[0]

    def _train(self, requests: list[StageRequest]) -> list[Artifact]:
        return train_stages(self.cfg, self.splits, requests)

    def _nokd(self, seed: int) -> StageRequest:
        return StageRequest("nokd", self._seeded(self.cfg.student, seed, self.cfg.baseline_steps))

    def _teacher_fields(self, teacher: Artifact) -> dict:
        from rayflow.checkpoint import load_weights
        from rayflow.stages.models_io import WEIGHTS

        return {"teacher": self.cfg.teacher.model, "teacher_state": load_weights(teacher.file(WEIGHTS)),
                "kd_alpha": self.cfg.fake.kd_weight, "temperature": self.cfg.fake.temperature}

    def _blkd(self, seed: int, teacher: Artifact) -> StageRequest:
        """Plain KD (Hinton) with the same teacher and student (and NOKD's steps): the bar cGAN-KD must clear."""
        f = self.cfg.fake
        return StageRequest("blkd", self._seeded(self.cfg.student, seed, self.cfg.baseline_steps), [teacher],
                            key_extra={"kd_alpha": f.kd_weight, "T": f.temperature},
                            job_fields=lambda: self._teacher_fields(teacher))

    def _oracle(self, seed: int, teacher: Artifact) -> StageRequest:
        """'Perfect generator': held-out real images labelled by the teacher, mixed in like fakes."""
        from rayflow.stages.models_io import load_model
        from rayflow.train.job import FakeData
        from rayflow.train.loop import predict

        held = self.splits.heldout
        if held is None or not len(held):
            raise ConfigError("the headroom diagnostic needs held-out real images: set data.heldout_per_class "
                              "(e.g. 1000)")
        f = self.cfg.fake

        def fields() -> dict:
            if self._held_logits.get(teacher.key) is None:  # one teacher pass for all seeds
                self._held_logits[teacher.key] = predict(load_model(teacher.path), held.images).numpy()
            logits = self._held_logits[teacher.key]
            fake = FakeData(held.images, logits.argmax(1), logits, real_fraction=f.real_fraction)
            return {**self._teacher_fields(teacher), "fake": fake}

        return StageRequest("oracle", self._seeded(self.cfg.student, seed), [teacher],
                            key_extra={"fake": f.model_dump(mode="json"), "heldout": len(held)}, job_fields=fields)

    def baselines(self, teacher: Artifact) -> tuple[dict[int, Artifact], list[dict]]:
        """NOKD, BLKD and (with held-out images) the perfect generator for every seed, in one
        training run: {seed: NOKD artifact} and their result rows."""
        plan = [(seed, name, req) for seed in self.cfg.seeds for name, req in
                [("NOKD student", self._nokd(seed)), ("BLKD student", self._blkd(seed, teacher))]
                + ([("perfect generator (oracle)", self._oracle(seed, teacher))]
                   if self.splits.heldout is not None else [])]
        arts = self._train([req for _, _, req in plan])
        nokd = {seed: a for (seed, _, req), a in zip(plan, arts) if req.stage == "nokd"}
        return nokd, [_row(name, a, seed) for (seed, name, _), a in zip(plan, arts)]

    def diagnose(self) -> dict:
        """Before any GAN compute: how much can fakes possibly add for this data and student?"""
        t0 = time.perf_counter()
        teacher = self.teacher()
        if self.splits.heldout is None or not len(self.splits.heldout):
            self._oracle(self.cfg.seeds[0], teacher)  # the clear error about data.heldout_per_class
        rows = [_row("teacher", teacher)] + self.baselines(teacher)[1]
        results = {"rows": rows, "wall_s": time.perf_counter() - t0, "diagnostic": headroom(rows, self.metric)}
        self._write_results(results, name="diagnose.json")
        return results

    @property
    def metric(self) -> str:
        return "test_acc" if self.splits.num_classes is not None else "test_mae"

    def gan(self, teacher: Artifact) -> Artifact:
        from rayflow.stages.gan import gan_stage

        return gan_stage(self.cfg, self.splits, teacher)

    def dre(self, teacher: Artifact, gan: Artifact) -> Artifact:
        from rayflow.stages.dre import dre_stage

        def feature_stage(cfg, splits, stage, spec):
            return train_stage(cfg, splits, stage, spec)

        return dre_stage(self.cfg, self.splits, teacher, gan, feature_stage=feature_stage)

    def synth(self, teacher: Artifact, gan: Artifact, dre: Artifact | None, **variant) -> Artifact:
        from rayflow.stages.synth import synth_stage

        return synth_stage(self.cfg, teacher, gan, dre, **variant)

    def _cgankd(self, seed: int, teacher: Artifact, fake: Artifact, *, orig_labels: bool, kd: bool,
                nokd: Artifact | None = None) -> StageRequest:
        """Student on real + fake (fixed real share per batch), hard labels, optionally + KD."""
        from rayflow.executors import FakeSpec
        from rayflow.stages.synth import SHARDS

        f = self.cfg.fake
        init_from = nokd if f.init == "nokd" and nokd is not None else None

        def fields() -> dict:  # only when the stage runs, not on a cache hit
            out: dict = {}
            if kd:  # fakes and reals carry stored teacher logits: no online teacher needed
                out = {"kd_alpha": f.kd_weight, "temperature": f.temperature,
                       "real_logits": self._real_logits(teacher)}
            if init_from is not None:
                from rayflow.checkpoint import load_weights
                from rayflow.stages.models_io import WEIGHTS

                out["init_state"] = load_weights(init_from.file(WEIGHTS))
            return out

        inputs = [teacher, fake] + ([init_from] if init_from is not None else [])
        spec = FakeSpec(str(fake.file(SHARDS)), self.cfg.synth.m_per_class, f.real_fraction,
                        orig_labels=orig_labels, use_logits=kd)
        return StageRequest("cgankd", self._seeded(self.cfg.student, seed), inputs,
                            key_extra={"fake": f.model_dump(mode="json"), "orig_labels": orig_labels, "kd": kd},
                            job_fields=fields, fake=spec)

    def _real_logits(self, teacher: Artifact):
        from rayflow.stages.models_io import load_model
        from rayflow.train.loop import predict

        if getattr(self, "_rl", None) is None:
            self._rl = predict(load_model(teacher.path), self.splits.train.images).numpy()
        return self._rl

    def run(self) -> dict:
        """teacher -> NOKD/BLKD/oracle -> cGAN -> DRE -> synth variants -> cGAN-KD students -> report."""
        t0 = time.perf_counter()
        cfg, metric = self.cfg, self.metric
        teacher = self.teacher()
        nokd, baseline_rows = self.baselines(teacher)
        rows = [_row("teacher", teacher)] + baseline_rows
        gan = self.gan(teacher)
        dre = self.dre(teacher, gan) if cfg.dre.enabled else None
        notes: list[str] = []
        fakes = {"raw": self.synth(teacher, gan, None, subsample=False, filter=False, relabel=False)}
        if dre is not None:
            from rayflow.synth.manifest import SynthError

            try:
                fakes["dre"] = self.synth(teacher, gan, dre, subsample=True, filter=False, relabel=False)
            except SynthError as e:  # e.g. the ratio net separates real from fake completely
                notes.append(f"cDR-RS skipped: {e}. The remaining variants run without subsampling.")
                log.warning(notes[-1])
                dre = None
        fakes["full"] = self.synth(teacher, gan, dre, subsample=dre is not None, filter=cfg.filter.enabled,
                                   relabel=cfg.filter.relabel)
        variants = [("fake, no processing (conditioning labels)", "raw", True, False),
                    ("+ cDR-RS subsampling", "dre", True, False),
                    ("+ filtering (rho-quantile)", "full", True, False),
                    ("+ relabelling by the teacher", "full", False, False),
                    ("cGAN-KD: + KD term on soft labels", "full", False, True)]
        plan = [(seed, name, self._cgankd(seed, teacher, fakes[which], orig_labels=orig, kd=kd, nokd=nokd[seed]))
                for seed in cfg.seeds for name, which, orig, kd in variants
                if which in fakes and not (which == "full" and orig and not cfg.filter.enabled)]
        rows += [_row(name, a, seed) for (seed, name, _), a in zip(plan, self._train([r for _, _, r in plan]))]
        results = {"name": cfg.name, "metric": metric, "rows": rows, "notes": notes,
                   "config": cfg.model_dump(mode="json"),
                   "gan": gan.metrics, "synth": {k: v.metrics for k, v in fakes.items()}}
        results.update(summarize(rows, metric))
        agree = {k: self._fake_agreement(a) for k, a in fakes.items()}
        for row in results["ablation"]:
            for name, which, orig, _ in variants:
                if row["variant"] == name and which in agree:
                    row["fake_label_consistency"] = agree[which]["orig" if orig else "final"]
                    row["m"] = agree[which]["m"]
        results["diagnostic"] = headroom(rows, metric)
        results["grids"] = self._grids(gan, fakes)
        results["wall_s"] = time.perf_counter() - t0
        self._write_results(results)
        from rayflow.report import write_report

        write_report(results, self.out / "report.html")
        return results

    def _fake_agreement(self, art: Artifact) -> dict:
        """% of fake labels the teacher agrees with: conditioning labels vs the labels actually used."""
        from rayflow.stages.synth import SHARDS
        from rayflow.synth.io import read_fake_set

        fs = read_fake_set(art.file(SHARDS))
        arg = fs.teacher_logits.argmax(1)
        return {"orig": 100.0 * float((fs.orig_labels == arg).mean()),
                "final": 100.0 * float((fs.labels == arg).mean()), "m": int(len(fs.labels))}

    def _grids(self, gan: Artifact, fakes: dict[str, Artifact]) -> dict[str, str]:
        """Sample grids: GAN checkpoints, and 10 per class of each fake set (after its processing)."""
        from rayflow.gan import save_grid_png
        from rayflow.stages.synth import SHARDS
        from rayflow.synth.io import read_fake_set

        grids = {f"GAN samples, {p.stem}": str(p) for p in sorted(gan.path.glob("samples_*.png"))[-1:]}
        titles = {"raw": "fakes before processing", "dre": "after cDR-RS subsampling",
                  "full": "after subsampling + filtering (rows: conditioning class)"}
        for k, art in fakes.items():
            fs = read_fake_set(art.file(SHARDS), 10)
            order = fs.orig_labels.argsort(kind="stable")
            path = self.out / f"grid_{k}.png"
            save_grid_png(fs.images[order], path, nrow=10)
            grids[titles[k]] = str(path)
        return grids

    def _write_results(self, results: dict, name: str = "results.json") -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / name).write_text(json.dumps(results, indent=2, default=float))
        (self.out / "config.yaml").write_text(to_yaml(self.cfg))

    def format_results(self, results: dict) -> str:
        metric = self.metric
        lines = [f"{'model':<40} {'seed':>4} {metric:>9} {'wall s':>7} cached"]
        for r in results["rows"]:
            lines.append(f"{r['model']:<40} {r.get('seed', ''):>4} {r.get(metric, float('nan')):>9.2f} "
                         f"{r.get('wall_s', 0):>7.1f} {'yes' if r.get('reused') else 'no'}")
        d = results.get("diagnostic")
        if d:
            lines.append(d["verdict"])
        lines.append(f"total wall time {results.get('wall_s', 0):.1f} s; results in {self.out}")
        return "\n".join(lines)


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
    kd_rows = [n for n in names if n.startswith(("cGAN-KD", "+ relabelling"))]
    if kd_rows and "perfect generator (oracle)" in base and "NOKD student" in base:
        best = max(base[n] for n in kd_rows)
        span = base["perfect generator (oracle)"] - base["NOKD student"]
        out["headroom_recovered"] = (best - base["NOKD student"]) / span if span > 0 else None
    out["ablation"] = [{"variant": s["model"], metric: s[metric], "delta_nokd": s.get("delta_nokd")}
                       for s in summary if s["model"].startswith(("fake", "+", "cGAN-KD"))]
    return out


def headroom(rows: list[dict], metric: str) -> dict:
    """Gain of the perfect generator over NOKD and BLKD, and the teacher-student gap (means over seeds)."""
    t, n, b, o = (_mean(rows, m, metric) for m in ("teacher", "NOKD student", "BLKD student",
                                                     "perfect generator (oracle)"))
    out = {"teacher": t, "nokd": n, "blkd": b, "oracle": o}
    if None in (t, n, b, o):
        return out
    out.update(teacher_minus_nokd=t - n, oracle_minus_nokd=o - n, oracle_minus_blkd=o - b)
    worth = o - n >= 1.0 and o - b > 0.3
    out["verdict"] = (
        f"headroom: perfect generator {o - n:+.2f} over NOKD, {o - b:+.2f} over BLKD; teacher {t - n:+.2f} over "
        f"NOKD -> " + ("cGAN-KD can pay off here (if the GAN follows its condition)." if worth else
                       "little room: expect cGAN-KD to match BLKD at best."))
    return out


def _row(name: str, art: Artifact, seed: int | None = None) -> dict:
    row = {"model": name, "artifact": str(art.path), "reused": art.reused}
    if seed is not None:
        row["seed"] = seed
    row.update({k: v for k, v in art.metrics.items() if isinstance(v, (int, float))})
    return row
