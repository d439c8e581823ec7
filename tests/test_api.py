"""The Python API and the small commands around it: `rayflow.__version__` / `rayflow --version`,
`rayflow config show`, config resolution with dotted overrides; `import rayflow` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml


def test_import_is_light_and_the_api_is_lazy():
    code = ("import sys, rayflow; v = rayflow.__version__; "
            "print(v, sorted(m for m in ('torch', 'ray', 'rayflow.api') if m in sys.modules)); "
            "rayflow.predict; print(sorted(m for m in ('torch', 'rayflow.api') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    first, second = p.stdout.strip().splitlines()
    from importlib.metadata import version

    assert first == f"{version('rayflow')} []"
    assert second == "['rayflow.api', 'torch']"
    import rayflow
    import rayflow.distill_student  # noqa: F401  (a submodule named like an API function would shadow it)

    assert callable(rayflow.distill) and callable(rayflow.predict) and callable(rayflow.load_student)


def test_version_flag(capsys):
    import rayflow
    from rayflow.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"rayflow {rayflow.__version__}"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rayflow.nope


def test_config_show_prints_the_resolved_config(capsys):
    from rayflow.cli import main
    from rayflow.config import load_config

    assert main(["config", "show", "--config", "tiny", "--set", "student.train.steps=7", "--executor", "local"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["student"]["train"]["steps"] == 7 and shown["runtime"]["executor"] == "local"
    assert shown["gan"]["steps"] == 60  # from tiny.yaml
    expect = load_config("rayflow/configs/tiny.yaml", ["student.train.steps=7", "runtime.executor=local"])
    assert shown == expect.model_dump(mode="json")  # every field, defaults included
    assert main(["config", "show", "--config", "tiny", "--set", "student.train.stepz=7"]) == 2
    assert "stepz" in capsys.readouterr().err


def test_resolve_takes_names_paths_and_configs_with_dotted_overrides(tmp_path):
    from rayflow.api import resolve
    from rayflow.config import ConfigError

    a = resolve("tiny", {"output_dir": "/x", "student.train.steps": 50, "tune.m_per_class": [10, 40], "name": "yes"})
    assert (a.output_dir, a.student.train.steps, list(a.tune.m_per_class), a.name) == ("/x", 50, [10, 40], "yes")
    b = resolve(a, {"gan.steps": 5})
    assert b.gan.steps == 5 and b.student.train.steps == 50
    assert resolve("rayflow/configs/tiny.yaml").name == "tiny"
    with pytest.raises(ConfigError, match="student.train.steps"):
        resolve("tiny", {"student.train.steps": "many"})
    with pytest.raises(ConfigError, match="neither a file nor a packaged config"):
        resolve("no_such_config")
