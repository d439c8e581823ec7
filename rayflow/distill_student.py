"""`rayflow distill` and the end of `rayflow tune`: the one student a user asked for, beside the
teacher, NOKD and BLKD, written to `<output_dir>/student/` (rayflow/student/).

Everything comes from the stage graph (`Pipeline` / `Runner`), so every model is the cached artifact
`rayflow run` would use under the same key: a `distill` after a `run` (or the other way round) trains
nothing twice. Unlike `run`, no ablation rows and no KD-method table are trained.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from rayflow.ablation import CGAN_KD
from rayflow.config import ConfigError, PipelineConfig
from rayflow.pipeline import BASELINES, Pipeline
from rayflow.report import format_results, headroom, row
from rayflow.stages.graph import Node

log = logging.getLogger("rayflow")


@dataclass
class DistillResult:
    """What `rayflow.distill` returns: where the student is, its test metrics, the comparison rows."""

    student_dir: str
    metrics: dict
    rows: list[dict] = field(repr=False)
    metric: str = "test_acc"
    table: str = field(default="", repr=False)

    def __str__(self) -> str:
        return self.table


def distill(cfg: PipelineConfig, search: bool = False) -> DistillResult:
    """The cGAN-KD student with the config's settings (or, `search`, the setting `rayflow tune` picks
    on validation data), NOKD and BLKD for every seed; the first seed's student is exported."""
    t0 = time.perf_counter()
    cfg = cfg.model_copy(update={"ablation": False})
    chosen_by = "the config"
    if search:
        from rayflow.tuning.search import tune, with_params

        out = tune(cfg, final=False)
        if not out.get("chosen"):
            raise ConfigError("distill --search: no trial of the search finished with a score, so there is no "
                              "setting to choose (see the log above)")
        cfg = with_params(cfg, out["chosen"], validation=False)
        chosen_by = f"rayflow tune ({cfg.tune.searcher} searcher, on validation data): {knobs(out['chosen'])}"
    p = Pipeline(cfg)
    p.check_kd()
    rows = [row("teacher", p.teacher())]
    notes: list[str] = []
    variants, _ = p._fake_sets(notes)  # ablation off: cGAN-KD alone (without cDR-RS if the ratio net failed)
    v = variants[0]
    plan = [(s, label, Node.of(stage, seed=s)) for s in cfg.seeds for label, stage in BASELINES if stage != "oracle"]
    plan += [(s, v.label, v.student(s)) for s in cfg.seeds]
    arts = p.runner.artifacts([n for _, _, n in plan])
    rows = p.in_unit(rows + [row(label, a, seed) for (seed, label, _), a in zip(plan, arts)])
    i = next(k for k, (_, label, _) in enumerate(plan) if label == v.label)
    return finish(p, p.runner, plan[i][2], arts[i], rows, v.label, chosen_by, t0, notes)


def after_tune(cfg: PipelineConfig, out: dict) -> DistillResult:
    """`rayflow tune`'s ending: the chosen and hand-set settings' students (trained by its final test)
    in the run's table with the teacher and every baseline, and the chosen one exported."""
    from rayflow.tuning.search import with_params

    t0 = time.perf_counter()
    p = Pipeline(cfg)
    rows = [row("teacher", p.teacher())] + p.baselines()
    picked = None
    for label, params in ((f"cGAN-KD, chosen ({knobs(out['chosen'])})", out["chosen"]),
                          (f"cGAN-KD, hand-set ({knobs(out['final']['hand_set'])})", out["final"]["hand_set"])):
        runner = p.runner.with_config(with_params(cfg, params, validation=False))
        nodes = [CGAN_KD.student(s) for s in cfg.seeds]
        arts = runner.artifacts(nodes)
        rows += [row(label, a, s) for s, a in zip(cfg.seeds, arts)]
        picked = picked or (runner, nodes[0], arts[0], label)
    fm = out.get("fm", {}).get("chosen")
    if fm is not None:  # FM at its own search's choice (tuning/fm_search.py; trained by the final test)
        r = p.runner.with_config(with_params(cfg, fm, validation=False))
        arts = r.artifacts([Node.of("fm", seed=s) for s in cfg.seeds])
        rows += [row(f"FM, chosen ({knobs(fm)})", a, s) for s, a in zip(cfg.seeds, arts)]
    rows = p.in_unit(rows)
    runner, node, art, label = picked
    chosen_by = f"rayflow tune ({cfg.tune.searcher} searcher, on validation data): {knobs(out['chosen'])}"
    return finish(p, runner, node, art, rows, label, chosen_by, t0, [])


def knobs(params: dict) -> str:
    from rayflow.search.space import knob_text

    return knob_text(params)


def settings_of(cfg: PipelineConfig, node: Node, chosen_by: str) -> dict:
    """The settings the student was trained with, as the card and student.json list them."""
    s = cfg.student
    p = node.p
    out = {"chosen by": chosen_by, "student.model": s.model.name, "student.train.steps": s.train.steps,
           "student.train.batch_size": s.train.batch_size, "seed": p.get("seed"),
           "cDR-RS subsampling": p.get("subsample"), "filtering": p.get("filter"), "relabelling": p.get("relabel"),
           "KD term": p.get("kd")}
    if p.get("filter"):
        out["filter.rho"] = cfg.filter.rho
    out.update({"synth.m_per_class": cfg.synth.m_per_class, "fake.real_fraction": cfg.fake.real_fraction,
                "fake.kd_weight": cfg.fake.kd_weight})
    if s.mix.on:
        out["student.mix"] = s.mix.model_dump()
    if s.select_fakes.on:
        out["student.select_fakes"] = s.select_fakes.model_dump()
    out.update({f"synth.{k}": v for k, v in cfg.synth.latent_kwargs().items()})  # the pool's draws, when not the default
    if s.model.kwargs:
        out["student.model.kwargs"] = dict(s.model.kwargs)
    return out


def finish(p: Pipeline, runner, node: Node, art, rows: list[dict], label: str, chosen_by: str, t0: float,
           notes: list[str]) -> DistillResult:
    """Exports the student and builds the console table (the same rounding as `rayflow run`)."""
    from rayflow.models.io import read_arch
    from rayflow.stages.graph import describe, node_key
    from rayflow.student import card
    from rayflow.student.export import contract_of, write_student

    cfg = runner.cfg
    keys = [(str(n), node_key(cfg, n)) for n, _ in describe(cfg, [node])]
    source = {"stage": node.stage, "node": str(node), "key": art.key, "artifact": str(art.uri), "config": cfg.name,
              "rayflow_version": _version()}
    settings = settings_of(cfg, node, chosen_by)
    contract = contract_of(read_arch(art.path), p.splits, p.space, source, settings, cfg.data.name)
    test = p.splits.test if p.splits.num_classes is not None else None

    def render(module, folder):
        return card.render(name=cfg.name, contract=contract, rows=rows, metric=p.metric, student_label=label,
                           module=module, folder=folder, test=test, keys=keys)

    where = write_student(runner.store, art.path, contract, render)
    results = {"rows": rows, "metric": p.metric, "output_dir": runner.store.location,
               "wall_s": time.perf_counter() - t0}
    d = headroom(rows, p.metric)
    if d.get("oracle") is not None:  # distill trains no perfect generator; a cached one is worth the line
        results["diagnostic"] = d
    table = "\n".join([format_results(results), *notes, f"student: {where}"])
    metrics = {k: v for k, v in art.metrics.items() if k.startswith("test_")}
    metrics.update({k: r[k] for r in rows if r.get("artifact") == str(art.uri) for k in r if k.startswith("test_mae_")})
    return DistillResult(where, metrics, rows, p.metric, table)


def _version() -> str:
    import rayflow

    return rayflow.__version__
