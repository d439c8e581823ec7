"""docs/config.md is generated from the config models: it must match what the code accepts today."""

from pathlib import Path

from rayflow.config_docs import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_config_reference_is_current():
    assert DOC.read_text() == render(), (
        "docs/config.md is stale: regenerate it with `python -m rayflow.config_docs > docs/config.md`")


def test_reference_names_every_leaf_field_by_its_dotted_path():
    text = render()
    for path in ("data.image_size", "teacher.train.steps", "filter.rho", "synth.m_per_class", "tune.searcher",
                 "runtime.executor", "gan.kappa", "dre.feature_net.name", "fake.real_fraction"):
        assert f"| `{path}` |" in text, path
