import pytest

from rayflow.config import ConfigError, FilterConfig, PipelineConfig, load_config


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, "teacher:\n  model: {name: resnet8}\n"),
                      ["teacher.train.steps=7", "filter.rho=0.5", "seeds=[1,2]"])
    assert cfg.teacher.model.name == "resnet8"
    assert cfg.teacher.train.steps == 7 and cfg.filter.rho == 0.5 and cfg.seeds == [1, 2]


def test_unknown_field_named(tmp_path):
    with pytest.raises(ConfigError, match=r"teacher\.train\.stepz: unknown field"):
        load_config(write(tmp_path, "teacher:\n  model: {name: resnet8}\n  train: {stepz: 3}\n"))


@pytest.mark.parametrize("rho", [0, -0.1, 1.5])
def test_rho_out_of_range(rho):
    with pytest.raises(ConfigError, match=r"filter\.rho: must be in \(0, 1\]"):
        load_config(None, [f"filter.rho={rho}"])


def test_rho_one_is_allowed():
    assert FilterConfig(rho=1.0).rho == 1.0


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "teacher: [unclosed\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_bad_values_named():
    with pytest.raises(ConfigError, match=r"synth\.m_per_class"):
        load_config(None, ["synth.m_per_class=0"])
    with pytest.raises(ConfigError, match=r"data\.name"):
        load_config(None, ["data.name=cifar"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["teacher.train.steps"])


def test_packaged_configs_parse():
    from rayflow.cli import PACKAGED

    names = sorted(p.stem for p in PACKAGED.glob("*.yaml"))
    assert {"tiny", "demo"} <= set(names)
    for n in names:
        assert isinstance(load_config(PACKAGED / f"{n}.yaml"), PipelineConfig)


def test_unknown_model_named_before_any_compute():
    with pytest.raises(ConfigError, match=r"student\.model\.name: unknown model 'resnet9000'; known: .*resnet8"):
        load_config(None, ["student.model.name=resnet9000"])


def test_baseline_steps_apply_to_nokd_and_blkd_only():
    """The baselines stop at their own step count; students that see extra images keep the shared one."""
    from rayflow.ablation import CGAN_KD
    from rayflow.stages.graph import Node, node_key, view
    from rayflow.stages.supervised import spec_of

    def spec(cfg, node):
        return spec_of(node, view(cfg, node)).train

    cfg = load_config("rayflow/configs/tiny.yaml", ["baseline_steps=7", "student.train.steps=50"])
    nokd, blkd = Node.of("nokd", seed=1), Node.of("blkd", seed=0)
    assert spec(cfg, nokd).steps == 7 and spec(cfg, nokd).seed == 1
    assert spec(cfg, blkd).steps == 7
    assert spec(cfg, CGAN_KD.student(0)).steps == 50
    default = load_config("rayflow/configs/tiny.yaml", ["student.train.steps=50"])
    assert spec(default, nokd).steps == 50  # None: the students' steps
    # a baseline-steps change is a different NOKD artifact, not a stale cache hit
    assert node_key(cfg, nokd) != node_key(default, nokd)
    with pytest.raises(ConfigError, match="baseline_steps"):
        load_config("rayflow/configs/tiny.yaml", ["baseline_steps=0"])
