"""Synthetic-data stage of cGAN-KD: generate -> cDR-RS subsampling -> teacher label/filter -> Parquet.

``run_synth(inputs, cfg, out_dir, executor="ray" | "local")`` writes one Parquet file per shard plus
``manifest.json`` (resumable); ``read_fake_set`` / ``fake_dataset`` read the class-balanced result
back (numpy without Ray, or a Ray Dataset). Ray is imported only by the ``ray`` executor and
``fake_dataset``.
"""

from rayflow.synth.io import FakeSet, fake_dataset, read_fake_set, read_shard
from rayflow.synth.manifest import Manifest, ShardSpec, SynthError
from rayflow.synth.stage import (BurninStats, SynthInputs, SynthOptions, compute_burnin, plan_round,
                                 run_synth)
from rayflow.synth.udfs import Generate, GeneratorSpec, Label, Score

__all__ = [
    "BurninStats", "FakeSet", "Generate", "GeneratorSpec", "Label", "Manifest", "Score", "ShardSpec",
    "SynthError", "SynthInputs", "SynthOptions", "compute_burnin", "fake_dataset", "plan_round",
    "read_fake_set", "read_shard", "run_synth",
]
