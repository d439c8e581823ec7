"""Loading a config: YAML file + `--set key=value` overrides -> a validated model, or one
ConfigError naming the offending field (and the --set that wrote it)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rayflow.config import PipelineConfig
from rayflow.config_base import ConfigError


def _override_for(loc: tuple, overrides: list[str]) -> str | None:
    """The --set item that wrote the field at `loc` (the last one wins, as when applied), or None."""
    hit = None
    for item in overrides:
        path = parse_override(item)[0]
        if loc and [str(p) for p in loc[:len(path)]] == path[:len(loc)]:
            hit = item
    return hit


def _format_validation_error(err: ValidationError, source: str, overrides: list[str] | None = None) -> str:
    """Each error blames where its value came from: the config file, or the --set item."""
    from_file, from_set = [], []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if not loc:  # a check across fields names its field first ("student.kd: ...")
            m = re.match(r"([A-Za-z_][\w.]*): (.*)", msg, re.S)
            loc, msg = (m.group(1), m.group(2)) if m else ("<root>", msg)
            e = {**e, "loc": tuple(loc.split("."))}
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        item = _override_for(e["loc"], overrides or [])
        (from_set if item else from_file).append(f"--set {item}: {loc}: {msg}" if item else f"{loc}: {msg}")
    parts = [f"invalid config {source}: " + "; ".join(from_file)] if from_file else []
    return "; ".join(parts + (["invalid override " + "; ".join(from_set)] if from_set else []))


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=3` -> (["a", "b"], 3); the value is parsed as YAML so numbers, bools and lists work."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. teacher.train.steps=200)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    out = copy.deepcopy(raw)
    for item in overrides or []:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level, got {type(raw).__name__}")
    return raw


def build_config(model_cls: type[BaseModel], raw: dict, source: str = "",
                 overrides: list[str] | None = None) -> Any:
    try:
        return model_cls.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source, overrides)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                model_cls: type[BaseModel] = PipelineConfig) -> Any:
    """YAML file (optional) + overrides -> validated config, or ConfigError naming the bad field."""
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides)
    return build_config(model_cls, raw, source=str(path) if path else "(defaults)", overrides=overrides)


def to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
