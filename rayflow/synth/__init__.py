"""Synthetic-data stage of cGAN-KD: generate -> cDR-RS subsampling -> teacher label/filter -> Parquet.

``run_synth(inputs, cfg, out_dir, executor)`` writes one Parquet file per shard plus
``manifest.json`` (resumable); ``read_fake_set`` reads the class-balanced result back (numpy;
the executor package streams views as Ray Datasets). No Ray import here. Names are imported
lazily, so a reader (or a Ray worker running the Parquet UDF) that needs only ``rayflow.synth.io`` does not pay for importing torch.
"""

from importlib import import_module

_WHERE = {
    "FakeSet": "io", "read_fake_set": "io", "read_shard": "io",
    "Manifest": "manifest", "ShardSpec": "manifest", "SynthError": "manifest",
    "BurninStats": "inputs", "SynthInputs": "inputs", "SynthOptions": "driver", "compute_burnin": "burnin",
    "plan_round": "burnin", "run_synth": "driver",
    "Generate": "udfs", "GeneratorSpec": "udfs", "Label": "udfs", "Score": "udfs",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'rayflow.synth' has no attribute {name!r}")
    return getattr(import_module(f"rayflow.synth.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return __all__
