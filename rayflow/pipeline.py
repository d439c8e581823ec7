"""`rayflow run` / `diagnose`: walk the stage graph for a config, then summarise and report.

Every artifact comes from the runner (`stages/runner.py`), cached by key, so a re-run resumes the
run and a single stage built elsewhere (a Tune trial) is shared. The ablation is data
(`ablation.py`); statistics and rendering live in the report layer.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from rayflow import ablation, kd_table, levers
from rayflow.config import PipelineConfig, to_yaml
from rayflow.labels import space_of
from rayflow.report import format_results, headroom, render_report, row, summarize
from rayflow.stages.graph import Node, node_key
from rayflow.student.card import card_of_run
from rayflow.synth import quality as fake_quality

log = logging.getLogger("rayflow")

FM_ROW = "function matching (FM) student"
BASELINES = (("NOKD student", "nokd"), ("BLKD student", "blkd"), (FM_ROW, "fm"),
             ("perfect generator (oracle)", "oracle"))


class Pipeline:
    def __init__(self, cfg: PipelineConfig):
        from rayflow.stages.runner import Runner

        self.cfg = cfg
        self.runner = Runner(cfg)

    @property
    def splits(self):
        return self.runner.splits

    @property
    def space(self):
        from rayflow.labels import space_of_data

        return space_of_data(self.cfg.data, self.splits.num_classes)

    @property
    def metric(self) -> str:
        """The table's metric: accuracy in %, or the MAE in the labels' own unit (degrees) when the
        data set has one (the networks see labels normalised to [0, 1])."""
        if self.splits.num_classes is not None:
            return "test_acc"
        r = self.space.range
        return "test_mae" if r is None or not r.unit else f"test_mae_{r.unit}"

    def labels(self) -> dict:
        """What the labels mean, for results.json: class names, or the regression labels' range and unit."""
        s = self.splits
        if s.num_classes is not None:
            return {"class_names": s.class_names}
        r = s.label_range
        return {} if r is None else {"label_range": [r.lo, r.hi], "label_unit": r.unit}

    def in_unit(self, rows: list[dict]) -> list[dict]:
        """Rows with the metric in the labels' unit added (`test_mae` stays, normalised)."""
        m = self.metric
        if m.startswith("test_mae_"):
            for r in rows:
                if "test_mae" in r:
                    r[m] = float(self.space.display_error(r["test_mae"]))
        return rows

    def teacher(self):
        return self.runner.artifact(Node.of("teacher"))

    def check_kd(self) -> None:
        """Every KD method the run asks for (student.kd, kd_table) fits the models and the task:
        one ConfigError before any training otherwise."""
        if self.cfg.student.kd or any(m.method != "blkd" for m in self.cfg.kd_table):
            level = log.level
            log.setLevel(max(level, logging.WARNING))  # a refusal is the run's only line: the data line after it
            try:
                splits = self.splits
            finally:
                log.setLevel(level)
            kd_table.preflight(self.cfg, splits.shape, splits.num_classes)
            log.info("data: %s (%s)", self.cfg.data.name, splits.summary())

    def check_gan_fits(self) -> None:
        """The cGAN's generator doubles a base side of >= 4 px at least once: images it cannot make
        (2x2, 7x7, non-square) are one DataError before the teacher trains, not a crash at the GAN."""
        from rayflow.data import DataError
        from rayflow.gan.generator import spatial_plan

        c, h, w = self.splits.shape
        try:
            if h != w:
                raise ValueError("the images are not square")
            spatial_plan(h)
        except ValueError as e:
            raise DataError(f"data ({self.cfg.data.path or self.cfg.data.name}): images of {c}x{h}x{w} do not fit "
                            f"the cGAN ({e}); set data.image_size, e.g. data.image_size=32") from None

    def nokd(self, seed: int):
        return self.runner.artifact(Node.of("nokd", seed=seed))

    def baseline_plan(self) -> list[tuple[int, str, object, Node]]:
        """(seed, row label, runner, node) of NOKD, BLKD, function matching and (with held-out images)
        the perfect generator, for every seed."""
        held = self.splits.heldout is not None
        return [(seed, label, self.runner, Node.of(stage, seed=seed)) for seed in self.cfg.seeds
                for label, stage in BASELINES if stage != "oracle" or held]

    def baselines(self) -> list[dict]:
        """The baselines' result rows, trained in one executor run."""
        plan = self.baseline_plan()
        arts = self.runner.artifacts([n for _, _, _, n in plan])
        return [row(label, a, seed) for (seed, label, _, _), a in zip(plan, arts)]

    def diagnose(self) -> dict:
        """Before any GAN compute: how much can fakes possibly add for this data and student?"""
        from rayflow.stages.supervised import check_heldout

        t0 = time.perf_counter()
        teacher = self.teacher()
        check_heldout(self.runner)
        rows = self.in_unit([row("teacher", teacher)] + self.baselines())
        results = {"rows": rows, "metric": self.metric, "wall_s": time.perf_counter() - t0, **self.labels(),
                   "diagnostic": headroom(rows, self.metric)}
        self._write(results, name="diagnose.json")
        return results

    def _fake_sets(self, notes: list[str]) -> tuple[list[ablation.Variant], dict[str, tuple[ablation.Variant, object]]]:
        """The variants this run trains and their fake sets (built here, in the order of the plan)."""
        from rayflow.synth.manifest import SynthError

        dre_ok = True
        while True:
            variants = ablation.plan(self.cfg, dre_ok)
            sets: dict[str, tuple[ablation.Variant, object]] = {}
            try:
                for v in variants:
                    name = ablation.fake_set_name(v)
                    if name not in sets:
                        sets[name] = (v, self.runner.artifact(v.fake_set()))
                return variants, sets
            except SynthError as e:  # e.g. the ratio net separates real from fake completely
                if not dre_ok or not any(v.subsample for v in variants):
                    raise
                dre_ok = False
                notes.append(f"cDR-RS skipped: {e}. The remaining variants run without subsampling.")
                log.warning(notes[-1])

    def students(self, variants: list[ablation.Variant]) -> list[tuple[int, str, object, Node]]:
        """(seed, row label, runner, node) of every student `run` trains after the baselines, in one
        batch: the ablation's `variants`, the KD-method table's rows, and the levers' rows (the
        effective cGAN-KD student under each lever's own config, rayflow/levers.py)."""
        cfg, runner = self.cfg, self.runner
        plan = [(seed, v.label, runner, v.student(seed)) for seed in cfg.seeds for v in variants]
        cgan_kd = next(v for v in variants if v.kd)
        plan += [(seed, label, runner, n) for seed, label, n in kd_table.nodes(cfg, cgan_kd)]
        for lr in levers.rows(cfg):
            # one runner per row (its seeds share the lever's fake set); the run's own when the row's
            # student is the run's cGAN-KD student (the lever alone on is what the config has)
            same = node_key(lr.cfg, cgan_kd.student(cfg.seeds[0])) == runner.key_of(cgan_kd.student(cfg.seeds[0]))
            r = runner if same else runner.with_config(lr.cfg)
            plan += [(seed, lr.label, r, cgan_kd.student(seed)) for seed in cfg.seeds]
        return plan

    def _buildable(self, plan: list, cgan_kd: ablation.Variant, notes: list[str]) -> list:
        """`plan` less the lever rows whose own fake set cannot be built (e.g. a latent scale whose
        pool the ratio net rejects almost entirely): a note each, and the run goes on without them."""
        from rayflow.synth.manifest import SynthError

        dropped: dict[str, str] = {}
        for _, label, r, _ in plan:
            if r is self.runner or label in dropped:
                continue
            try:
                r.artifact(cgan_kd.fake_set())
            except SynthError as e:
                dropped[label] = f"{label}: left out, its fake set could not be built ({e})"
                notes.append(dropped[label])
                log.warning(notes[-1])
        return [p for p in plan if p[1] not in dropped]

    def run(self) -> dict:
        """teacher -> cGAN -> DRE -> fake sets -> NOKD/BLKD/FM/oracle and the cGAN-KD students -> report."""
        from rayflow.report.fakes import grids
        from rayflow.stages.synth import view_files

        t0 = time.perf_counter()
        self.check_kd()
        self.check_gan_fits()
        cfg, metric, runner = self.cfg, self.metric, self.runner
        teacher = self.teacher()
        gan = runner.artifact(Node.of("gan"))
        if cfg.dre.enabled:
            runner.artifact(Node.of("dre"))
        notes: list[str] = []
        variants, sets = self._fake_sets(notes)
        cgan_kd = next(v for v in variants if v.kd)
        # the baselines train in the students' executor run: a Ray Train run (≈ 10 s of fixed cost on 2
        # cores) less per pipeline
        plan = self.baseline_plan() + self._buildable(self.students(variants), cgan_kd, notes)
        arts = runner.batch([(r, n) for _, _, r, n in plan])
        rows = self.in_unit([row("teacher", teacher)] + [row(label, a, seed)
                                                         for (seed, label, _, _), a in zip(plan, arts)])
        results = {"name": cfg.name, "metric": metric, "rows": rows, "notes": notes, **self.labels(),
                   "config": cfg.model_dump(mode="json"), "output_dir": runner.store.location,
                   "gan": gan.metrics, "synth": {k: a.metrics for k, (_, a) in sets.items()}}
        results.update(summarize(rows, metric))
        if cfg.kd_table:
            results["kd_table"] = kd_table.table(cfg, rows, metric, cgan_kd.label)
        # each ablation row's fake set (variant, view, the runner that built it): its variant's, or a lever
        # row's own view (its latent scale's pool)
        fakes = {v.label: (v, sets[ablation.fake_set_name(v)][1], runner) for v in variants}
        rows_of_levers = {lr.label for lr in levers.rows(cfg)}
        fakes.update({label: (cgan_kd, r.artifact(cgan_kd.fake_set()), r) for _, label, r, _ in plan
                      if label in rows_of_levers})
        for r in results["ablation"]:
            if r["variant"] in fakes:
                v, m = fakes[r["variant"]][0], fakes[r["variant"]][1].metrics
                r["fake_label_consistency"] = m["label_consistency_orig" if v.orig_labels else "label_consistency_final"]
                r["m"] = m["samples"]
        fake_quality.annotate(results["ablation"], fakes, teacher.path, self.splits.heldout,
                              space_of(self.splits.num_classes))  # the GAN stage's strata
        if cfg.lever_rows:
            planned = {label for _, label, _, _ in plan}
            results["levers"] = [{"row": lr.label, "lever": lr.lever, "setting": lr.setting(),
                                  "left_out": lr.label not in planned} for lr in levers.rows(cfg)]
        results["diagnostic"] = headroom(rows, metric)
        scratch = Path(runner.store.location) if runner.store.is_local else Path(tempfile.mkdtemp(prefix="rayflow-"))
        scratch.mkdir(parents=True, exist_ok=True)
        results["grids"] = grids(gan, {k: (v.__dict__, view_files(runner, a)) for k, (v, a) in sets.items()}, scratch,
                                 self.space)
        results["wall_s"] = time.perf_counter() - t0
        self._write(results)
        from rayflow.tuning.record import search_results

        grid, tunes = search_results(self.runner.store)  # `rayflow grid` / `rayflow tune` on this output
        card = card_of_run(self.runner.store, results["rows"])
        self.runner.store.write_text("report.html", render_report({**results, "search": {"grid": grid, "tunes": tunes}},
                                                                  card))
        return results

    def _write(self, results: dict, name: str = "results.json") -> None:
        self.runner.store.write_text(name, json.dumps(results, indent=2, default=float))
        self.runner.store.write_text("config.yaml", to_yaml(self.cfg))

    def graph_text(self) -> str:
        """Every node `rayflow run` needs, inputs first: its key, whether the store has it, its inputs."""
        from rayflow.stages.graph import describe

        groups: dict[int, tuple] = {}  # per config (the run's, each lever row's): its roots
        for _, _, r, n in [(0, "", self.runner, Node.of(stage, seed=s)) for s in self.cfg.seeds
                           for _, stage in BASELINES] + self.students(ablation.plan(self.cfg)):
            groups.setdefault(id(r), (r.cfg, []))[1].append(n)
        lines, seen = [], set()
        for cfg, roots in groups.values():
            for node, ins in describe(cfg, roots):
                key = node_key(cfg, node)
                if (node, key) in seen:  # a lever row's config shares most of the run's nodes
                    continue
                seen.add((node, key))
                have = "cached" if self.runner.store.lookup(node.stage, key) is not None else "to build"
                lines.append(f"{str(node):<78} {key}  {have:<8} <- {', '.join(str(n) for n in ins.values()) or '-'}")
        return "\n".join(lines)

    def format_results(self, results: dict) -> str:
        return format_results({"output_dir": self.runner.store.location, **results})
