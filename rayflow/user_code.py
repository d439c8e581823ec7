"""A user's own network code, named by an import path `package.module:factory` in the config.

Resolved in the driver (its `modules` dirs put on sys.path), and shipped to every Ray worker as
`py_modules` of the runtime environment `rayflow.runtime.init_ray` builds: a network that exists
only in the driver's process would not exist where the stages run. No torch here: the config
imports this module.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import sysconfig
from pathlib import Path
from typing import Any, Callable

_SHIPPED: list[str] = []  # paths (package dirs, .py files) the Ray workers must be able to import


def is_import_path(name: str) -> bool:
    return ":" in name


def _add_to_sys_path(paths: list[Path]) -> None:
    """Each module path's parent goes on sys.path (`modules: [/src/mynet]` makes `import mynet` work)."""
    for p in paths:
        parent = str(p.parent)
        if p.exists() and parent not in sys.path:
            sys.path.insert(0, parent)
    importlib.invalidate_caches()


def _installed(origin: Path) -> bool:
    """A module from site-packages or the standard library is there on every worker already."""
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    return any(origin.is_relative_to(r) for r in roots) or "site-packages" in origin.parts


def _top_level_path(module: str) -> Path | None:
    """The package dir (or single .py file) of `module`'s top-level package; None when installed."""
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    origin = Path(spec.origin).resolve()
    path = origin.parent if spec.submodule_search_locations else origin
    return None if _installed(origin) or module.split(".")[0] == "rayflow" else path


def ship(path: str | Path) -> None:
    p = str(Path(path).resolve())
    if p not in _SHIPPED:
        _SHIPPED.append(p)


def shipped() -> list[str]:
    """Every user code path resolved in this process so far (for the runtime_env's py_modules)."""
    return list(_SHIPPED)


def _forget_if_elsewhere(top: str, paths: list[Path]) -> None:
    """A package of the same name imported earlier in this process from another place (a notebook
    that distils with one config, then another) would be reused silently: drop it, so `modules` wins."""
    origin = getattr(sys.modules.get(top), "__file__", None)
    if not origin or not paths:
        return
    here = Path(origin).resolve()
    if any(here == p or here.is_relative_to(p) for p in paths):
        return
    for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
        del sys.modules[name]
    for p in paths:  # and the new place first on the path
        parent = str(p.parent)
        if parent in sys.path:
            sys.path.remove(parent)
    _add_to_sys_path(paths)


def resolve(spec: str, modules: list[str] | tuple[str, ...] = ()) -> Callable[..., Any]:
    """The callable `spec` names, importing its module; registers what the workers need shipped.
    Any failure is one ValueError naming the path (the config's validators prefix the field)."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"{spec!r}: an import path is 'package.module:factory'")
    paths = [Path(m).expanduser().resolve() for m in modules]
    for p in paths:  # a path missing here (a worker on another node) came as shipped code
        if p.exists():
            ship(p)
    _forget_if_elsewhere(mod_name.split(".")[0], [p for p in paths if p.exists()])
    try:
        try:  # first as this process finds it (a Ray worker: its py_modules), then from `modules`
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError:
            if not any(p.exists() for p in paths):
                raise
            _add_to_sys_path(paths)
            module = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - the user's module may raise anything on import
        raise ValueError(f"{spec!r}: cannot import module {mod_name} ({type(e).__name__}: {e})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{spec!r}: module {mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{spec!r}: {attr} is not callable")
    top = _top_level_path(mod_name)
    if top is not None:
        ship(top)
    return obj
