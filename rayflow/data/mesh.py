"""Chair meshes: a Wavefront OBJ parser and the reader of Sweet Home 3D furniture archives.

Debian's `sweethome3d-furniture` ships `.sh3f` files: zip archives holding one folder per model
(OBJ + MTL + textures + the author's licence file) and a `PluginFurnitureCatalog.properties`
catalogue (`name#i`, `model#i`, `creator#i`, optional `modelRotation#i`, and one archive-wide
`license=` line). Only geometry is read: renders are grey Lambert-shaded silhouettes.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rayflow.data.imageset import DataError

CHAIR_PATTERN = re.compile(r"chair|stool", re.IGNORECASE)  # chairs, armchairs, stools


@dataclass(frozen=True)
class MeshRef:
    """Where a model's OBJ lives: a plain file, or a member of a zip archive (`member` set).
    Small and picklable: render actors get these, never the meshes themselves."""

    name: str  # unique model name, e.g. 'blendswap-cc-0/oakChair' (splits hash it)
    path: str
    member: str | None = None
    rotation: tuple[float, ...] | None = None  # row-major 3x3 (Sweet Home 3D modelRotation)
    title: str = ""
    creator: str = ""
    licence: str = ""
    licence_file: str = ""

    def where(self) -> str:
        return f"{self.path}:{self.member}" if self.member else self.path

    def read(self) -> bytes:
        try:
            if self.member is None:
                return Path(self.path).read_bytes()
            with zipfile.ZipFile(self.path) as z:
                return z.read(self.member)
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot read mesh {self.where()}: {e}") from None

    def info(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("rotation",)}


def parse_obj(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """OBJ bytes -> (vertices float64 (V, 3), triangles int64 (T, 3)); polygons are fan-triangulated,
    negative (relative) indices resolved. Anything unparseable is one DataError naming file and line."""
    verts: list[list[float]] = []
    tris: list[list[int]] = []
    for no, raw in enumerate(data.decode("latin-1").splitlines(), 1):
        line = raw.strip()
        if line.startswith("v "):
            parts = line.split()[1:4]
            try:
                if len(parts) != 3:
                    raise ValueError("needs 3 coordinates")
                v = [float(t) for t in parts]
                if not all(np.isfinite(v)):
                    raise ValueError("not finite")
            except ValueError as e:
                raise DataError(f"{where} line {no}: cannot parse vertex {line[:80]!r} ({e})") from None
            verts.append(v)
        elif line.startswith("f "):
            try:
                idx = [int(t.split("/")[0]) for t in line.split()[1:]]
            except ValueError:
                raise DataError(f"{where} line {no}: cannot parse face {line[:80]!r}") from None
            if len(idx) < 3:
                raise DataError(f"{where} line {no}: a face needs at least 3 vertices, got {line[:80]!r}")
            n = len(verts)
            idx = [i - 1 if i > 0 else n + i for i in idx]
            if any(i < 0 or i >= n for i in idx):  # OBJ index 0 maps to n: caught too
                raise DataError(f"{where} line {no}: face {line[:80]!r} names a vertex that does not exist "
                                f"({n} vertices so far)")
            tris += [[idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1)]
    if not tris:
        raise DataError(f"{where}: no faces found (not a Wavefront OBJ mesh?)")
    return np.asarray(verts, np.float64), np.asarray(tris, np.int64)


def normalise(v: np.ndarray, rotation: tuple[float, ...] | None = None) -> np.ndarray:
    """Applies the model rotation, centres the bounding box at 0 and scales into the unit sphere,
    so the object fills the same frame at every yaw."""
    if rotation is not None:
        v = v @ np.asarray(rotation, np.float64).reshape(3, 3).T
    v = v - (v.max(0) + v.min(0)) / 2
    r = np.linalg.norm(v, axis=1).max()
    return v / r if r > 0 else v


def load_mesh(ref: MeshRef) -> tuple[np.ndarray, np.ndarray]:
    v, f = parse_obj(ref.read(), ref.where())
    return normalise(v, ref.rotation), f


def mesh_digest(ref: MeshRef) -> str:
    return hashlib.sha256(ref.read()).hexdigest()


# -- Sweet Home 3D archives ------------------------------------------------------------------


def _properties(text: str) -> tuple[dict[str, str], dict[int, dict[str, str]]]:
    """(archive-wide keys, per-model keys by index) of a Java .properties catalogue."""
    top: dict[str, str] = {}
    items: dict[int, dict[str, str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!" or "=" not in line:
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        value = value.replace("\\:", ":").replace("\\=", "=")
        m = re.fullmatch(r"(\w+)#(\d+)", key)
        if m:
            items.setdefault(int(m[2]), {})[m[1]] = value
        else:
            top[key] = value
    return top, items


def read_catalog(archive: str | Path, pattern: re.Pattern = CHAIR_PATTERN) -> list[MeshRef]:
    """The models of one .sh3f archive whose name or id matches `pattern`, with their licences."""
    archive = Path(archive)
    try:
        with zipfile.ZipFile(archive) as z:
            names = set(z.namelist())
            text = z.read("PluginFurnitureCatalog.properties").decode("latin-1")
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read furniture archive {archive}: {e}") from None
    top, items = _properties(text)
    licence = top.get("license", "unknown (no license= line in the catalogue)")
    out = []
    for i in sorted(items):
        it = items[i]
        model = it.get("model", "").lstrip("/")
        if not model.lower().endswith(".obj") or not pattern.search(f"{it.get('name', '')} {it.get('id', '')}"):
            continue
        if model not in names:
            raise DataError(f"furniture archive {archive}: catalogue entry {i} names {model}, which is not in it")
        folder = model.rsplit("/", 1)[0]
        lic_files = sorted(n for n in names if n.startswith(folder + "/") and "licen" in n.lower())
        rot = it.get("modelRotation")
        out.append(MeshRef(name=folder, path=str(archive), member=model,
                           rotation=tuple(float(t) for t in rot.split()) if rot else None,
                           title=it.get("name", ""), creator=it.get("creator", ""), licence=licence,
                           licence_file=f"{archive.name}:{lic_files[0]}" if lic_files else ""))
    return out


def folder_meshes(root: str | Path) -> list[MeshRef]:
    """Every *.obj directly in `root` (one model each, named by file stem): user meshes and tests."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"chairs: mesh folder not found: {root}")
    files = sorted(root.glob("*.obj"))
    if not files:
        raise DataError(f"chairs: mesh folder {root} holds no .obj files")
    return [MeshRef(name=f.stem, path=str(f), licence="user-supplied (see the file's source)") for f in files]
