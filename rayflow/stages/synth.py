"""The synthetic-data stage as a cached artifact, and the cGAN-KD student trained on it.

run_synth resumes from its own manifest, so it works in a stable `.work-<key>` directory (which
survives a kill) and is moved into the artifact only when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from rayflow.artifacts import Artifact, run_stage, stage_key
from rayflow.config import PipelineConfig
from rayflow.stages.dre import RATIO, load_ratio_net
from rayflow.stages.gan import load_generator
from rayflow.synth.stage import SynthInputs, SynthOptions, run_synth

log = logging.getLogger("rayflow")

SHARDS = "shards"


def synth_stage(pcfg: PipelineConfig, teacher: Artifact, gan: Artifact, dre: Artifact | None, *,
                subsample: bool, filter: bool, relabel: bool) -> Artifact:
    """Fake set for one ablation variant (`subsample` needs the DRE artifact)."""
    import functools

    cfg = pcfg.synth
    variant = {"subsample": subsample, "filter": filter, "relabel": relabel, "rho": pcfg.filter.rho,
               "filter_burnin": pcfg.filter.burnin, "dre_burnin": pcfg.dre.burnin}
    inputs = [teacher, gan] + ([dre] if subsample else [])
    # actor counts and pool layout change how fast, not what: shards are identical either way
    key_cfg = {"synth": cfg.model_dump(mode="json", exclude={"gen_actors", "fused"}), "variant": variant}
    key = stage_key("synth", key_cfg, inputs)
    root = Path(pcfg.output_dir) / "artifacts"
    work = root / "synth" / f".work-{key}"

    def build(out: Path) -> dict:
        feature_dir = ratio_state = None
        hidden = tuple(pcfg.dre.hidden)
        if subsample:
            _, meta = load_ratio_net(pcfg.dre, dre.path)
            feature_dir, ratio_state = meta["feature_dir"], str(dre.file(RATIO))
        # paths, not tensors: the actors load the nets themselves (small constructor arguments)
        si = SynthInputs(num_classes=_num_classes(gan), generator=functools.partial(load_generator, str(gan.path)),
                         teacher_dir=str(teacher.path),
                         feature_dir=feature_dir, ratio_state=ratio_state, ratio_hidden=hidden,
                         subsample=subsample, filter=filter, rho=pcfg.filter.rho, relabel=relabel,
                         dre_burnin=pcfg.dre.burnin, filter_burnin=pcfg.filter.burnin)
        log.info("[synth] %d per class, subsample=%s filter=%s relabel=%s (%s executor)", cfg.m_per_class,
                 subsample, filter, relabel, pcfg.runtime.executor)
        opts = SynthOptions(runtime=pcfg.runtime,
                            local_threads=int(pcfg.scaling.cpus_per_worker * pcfg.scaling.num_workers))
        metrics = run_synth(si, cfg, work, pcfg.runtime.executor, options=opts)
        os.replace(work, out / SHARDS)
        return metrics

    art = run_stage(root, "synth", key_cfg, inputs, build)
    shutil.rmtree(work, ignore_errors=True)
    return art


def _num_classes(gan: Artifact) -> int:
    import json

    return json.loads(gan.file("gan.json").read_text())["num_classes"]
