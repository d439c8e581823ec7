"""The declared stage graph: every cached stage, what it reads, what it consumes, how it is keyed.

A stage is registered with the config paths it *reads* (the only config its build function gets)
and a function naming its *input* nodes; its key hashes exactly those values, its parameters and
its inputs' keys. So a stage rebuilds when, and only when, something it uses changes (rho is not
in the key of a fake set that is not filtered; M is not in a GAN's key), and a caller that builds
one node with its own overrides (a Tune trial) gets the very artifact the pipeline would.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rayflow.config import LATENT_DEFAULTS, PipelineConfig

log = logging.getLogger("rayflow")


@dataclass(frozen=True)
class Node:
    """One artifact of the graph: a registered stage and its parameters (seed, variant flags)."""

    stage: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, stage: str, **params: Any) -> Node:
        return cls(stage, tuple(sorted(params.items())))

    @property
    def p(self) -> dict[str, Any]:
        return dict(self.params)

    def __str__(self) -> str:
        return self.stage + ("(" + ", ".join(f"{k}={v}" for k, v in self.params) + ")" if self.params else "")


@dataclass(frozen=True)
class StageDef:
    """`reads(params)` -> dotted config paths; `inputs(cfg, params)` -> {role: Node}; `kind`:
    "train" stages of one pipeline step are trained together in one executor run, "task" stages
    are built one by one by `build(runner, node, view, inputs, out_dir, key) -> metrics`."""

    name: str
    reads: Callable[[dict], tuple[str, ...]]
    inputs: Callable[[PipelineConfig, dict], dict[str, Node]] = lambda cfg, p: {}
    kind: str = "task"
    build: Callable[..., dict] | None = None
    doc: str = ""
    # what the key covers beyond config values (file bytes: an imported teacher's weights); {} for most
    content: Callable[[PipelineConfig, dict], dict] = lambda cfg, p: {}


REGISTRY: dict[str, StageDef] = {}


def register(stage: StageDef) -> StageDef:
    REGISTRY[stage.name] = stage
    return stage


def lookup_path(cfg: Any, path: str) -> Any:
    """`a.b.c` under `cfg`; in a list of KD method configs (`kd_table`), a part names the entry by
    its `method` (`kd_table.crd`), so a row's key hashes its own method's settings only."""
    node = cfg
    for part in path.split("."):
        if isinstance(node, list):
            hits = [m for m in node if getattr(m, "method", None) == part]
            if not hits:
                raise KeyError(f"{path}: no entry with method {part!r}")
            node = hits[0]
        else:
            node = getattr(node, part)
    return node


def _json(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


@dataclass
class View:
    """The part of the config a stage reads: `view["gan"]`, `view["filter.rho"]`; nothing else."""

    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, path: str) -> Any:
        if path not in self.values:
            raise KeyError(f"stage reads no config field {path!r} (declare it in the stage's reads)")
        return self.values[path]

    def get(self, path: str, default: Any = None) -> Any:
        return self.values.get(path, default)


def view(cfg: PipelineConfig, node: Node) -> View:
    return View({p: lookup_path(cfg, p) for p in REGISTRY[node.stage].reads(node.p)})


# the student's optional parts: hashed (inside `student`) only when set / on
_STUDENT_OPTIONAL = {"kd": bool, "mix": lambda v: v.get("kind", "none") != "none",
                     "select_fakes": lambda v: v.get("by", "none") != "none"}
# reads added after keys were first pinned, hashed only away from their default value
_DEFAULT_READS = {f"synth.{k}": v for k, v in LATENT_DEFAULTS.items()}


def _student_reads(reads: dict[str, Any]) -> dict[str, Any]:
    """Key compatibility: before `student.kd` existed the students read `student` whole, so their
    `student.model` + `student.train` hash as that one value again (and `student.kd`, `student.mix`
    and `student.select_fakes` inside it, only when set / on), and a read of `_DEFAULT_READS` at its
    default is left out: every node built before keeps its key and its cached artifact."""
    reads = {p: v for p, v in reads.items() if p not in _DEFAULT_READS or v != _DEFAULT_READS[p]}
    if "student.model" not in reads or "student.train" not in reads:
        return reads
    optional = {f"student.{f}" for f in _STUDENT_OPTIONAL}
    out = {p: v for p, v in reads.items() if p not in ("student.model", "student.train", *optional)}
    out["student"] = {"model": reads["student.model"], "train": reads["student.train"]}
    for f, on in _STUDENT_OPTIONAL.items():
        if on(reads.get(f"student.{f}") or {}):
            out["student"][f] = reads[f"student.{f}"]
    return out


def key_doc(cfg: PipelineConfig, node: Node, input_keys: dict[str, str]) -> dict:
    """What a node's key hashes: its stage, the values it reads, its parameters, its inputs' keys."""
    reads = _student_reads({p: _json(v) for p, v in view(cfg, node).values.items()})
    doc = {"stage": node.stage, "reads": reads,
           "params": {k: _json(v) for k, v in node.params}, "inputs": dict(sorted(input_keys.items()))}
    extra = REGISTRY[node.stage].content(cfg, node.p)
    if extra:  # only when there is any: every other key stays what it was
        doc["content"] = extra
    return doc


def digest(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]


def node_inputs(cfg: PipelineConfig, node: Node) -> dict[str, Node]:
    if node.stage not in REGISTRY:
        raise KeyError(f"unknown stage {node.stage!r}; registered: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[node.stage].inputs(cfg, node.p)


def node_key(cfg: PipelineConfig, node: Node) -> str:
    """The content key of `node` under `cfg` (recursively over its inputs); no compute, no I/O."""
    ins = {role: node_key(cfg, n) for role, n in node_inputs(cfg, node).items()}
    return digest(key_doc(cfg, node, ins))


def describe(cfg: PipelineConfig, roots: list[Node]) -> list[tuple[Node, dict[str, Node]]]:
    """Every node `roots` depend on, inputs first (for `docs/design.md`'s drawing and tests)."""
    seen: dict[Node, dict[str, Node]] = {}

    def visit(n: Node) -> None:
        if n in seen:
            return
        ins = node_inputs(cfg, n)
        for m in ins.values():
            visit(m)
        seen[n] = ins

    for r in roots:
        visit(r)
    return list(seen.items())
