"""docs/config.md, generated from the pydantic models' field descriptions.

The reference is derived, never hand-written, so it cannot drift from what the loader accepts:
`python -m rayflow.config_docs > docs/config.md` rewrites it and tests/test_config_docs.py fails
when the committed file is stale.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

HEADER = """# Configuration reference

Generated from `rayflow/config.py` by `python -m rayflow.config_docs > docs/config.md` (a test fails
when this file is stale). Every field can be set in a YAML file (`--config FILE`, or a packaged name:
`tiny`, `demo`, `quality`, ...) or on the command line (`--set section.field=value`, parsed as YAML).
`rayflow config show --config X [--set ...]` prints the resolved configuration.
"""


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's type names (through Optional, list, Annotated, ...)."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models(a)]


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:  # a factory that takes the validated data
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(section)"
    else:
        value = field.default
    if value is PydanticUndefined:
        return "(required)"
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(root: type[BaseModel] | None = None) -> str:
    """Markdown: one table per section, in the order a config file lists them."""
    if root is None:
        from rayflow.config import PipelineConfig

        root = PipelineConfig
    out, seen = [HEADER], set()
    queue: list[tuple[str, type[BaseModel]]] = [("", root)]
    while queue:
        path, model = queue.pop(0)
        if (path, model) in seen:
            continue
        seen.add((path, model))
        title = path or "top level"
        doc = inspect.cleandoc(model.__doc__ or "") if model.__doc__ and model.__doc__ != BaseModel.__doc__ else ""
        out.append(f"\n## `{title}`\n" + (f"\n{_cell(doc)}\n" if doc else ""))
        out.append("\n| field | type | default | description |\n|---|---|---|---|")
        for name, field in model.model_fields.items():
            sub = _models(field.annotation)
            full = f"{path}.{name}" if path else name
            desc = field.description or ("see the section below" if sub else "")
            out.append(f"| `{full}` | {_cell(_type_name(field.annotation))} | {_cell(_default(field))} | {_cell(desc)} |")
            queue.extend((full, m) for m in sub)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
