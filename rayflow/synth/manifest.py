"""The shard manifest of a synthetic-data run: which shards were planned, which are finished.

One JSON file, ``<out_dir>/manifest.json``, rewritten atomically (temp file + rename) after every
finished shard, so a killed run leaves either the old or the new manifest, never half of one. It
holds

* ``fingerprint``: hash of everything that decides the content (weights, flags, seed, sizes); a
  directory written under another fingerprint is refused instead of silently mixed;
* ``header``: image shape, number of classes, ``m_per_class``, the flags;
* ``burnin``: the burn-in statistics (max ratio and teacher-CE cutoff per class), computed once;
* ``rounds``: the shard specs of every planned round, in order (``shard_id``, ``label``,
  ``n_draws``, ``seed``);
* ``shards``: one record per *finished* shard: its file and counts (draws, accepted by the
  rejection sampler, kept by the filter, per final label).

A shard's Parquet file is renamed into place *before* its record is written, so a record always
names a complete file; a file without a record (killed between the two) is simply regenerated,
with identical content. Records whose file went missing are dropped on load (regenerated too).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rayflow.atomic import atomic_write_text

__all__ = ["MANIFEST", "SHARD_DIR", "SynthError", "ShardSpec", "Manifest", "shard_file"]

MANIFEST = "manifest.json"
SHARD_DIR = "shards"
VERSION = 1


class SynthError(RuntimeError):
    """A synthetic-data run cannot go on (bad inputs, a foreign output directory, no acceptance)."""


def shard_file(shard_id: int) -> str:
    """Path of a shard's Parquet file relative to the output directory."""
    return f"{SHARD_DIR}/shard-{int(shard_id):06d}.parquet"


@dataclass(frozen=True)
class ShardSpec:
    """One work item: ``n_draws`` generator draws of stratum ``label`` (the class, for class ids)
    from the shard's ``seed``."""

    shard_id: int
    label: int
    n_draws: int
    seed: int

    def item(self) -> dict[str, int]:
        return asdict(self)


class Manifest:
    """In-memory view of ``manifest.json``; :meth:`save` persists it atomically."""

    def __init__(self, out_dir: str | Path, data: dict[str, Any]):
        self.out_dir = Path(out_dir)
        self.data = data

    # ------------------------------------------------------------------ open / save

    @classmethod
    def open(cls, out_dir: str | Path, fingerprint: str, header: dict[str, Any]) -> Manifest:
        """Load the manifest of ``out_dir`` (checking its fingerprint) or start an empty one."""
        out_dir = Path(out_dir)
        path = out_dir / MANIFEST
        if not path.is_file():
            if out_dir.is_dir() and any((out_dir / SHARD_DIR).glob("*.parquet")):
                raise SynthError(f"{out_dir} holds shard files but no {MANIFEST}; use an empty directory")
            return cls(out_dir, {"version": VERSION, "fingerprint": fingerprint, "header": header,
                                 "burnin": None, "rounds": [], "shards": {}})
        m = cls.load(out_dir)
        if m.data.get("fingerprint") != fingerprint:
            raise SynthError(
                f"{out_dir} holds shards of a different synthetic-data run (other weights, flags, seed or "
                "sizes); pass a new output directory or delete this one")
        missing = [sid for sid, rec in m.data["shards"].items() if not (out_dir / rec["file"]).is_file()]
        for sid in missing:  # the file was removed: regenerate the shard
            del m.data["shards"][sid]
        return m

    @classmethod
    def load(cls, out_dir: str | Path) -> Manifest:
        path = Path(out_dir) / MANIFEST
        if not path.is_file():
            raise SynthError(f"{out_dir} is not a synthetic-data directory (no {MANIFEST})")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SynthError(f"{path} is corrupt: {e}") from None
        if data.get("version") != VERSION:
            raise SynthError(f"{path}: unsupported manifest version {data.get('version')!r}")
        return cls(out_dir, data)

    def save(self) -> None:
        atomic_write_text(self.out_dir / MANIFEST, json.dumps(self.data, indent=1))

    # ------------------------------------------------------------------ contents

    @property
    def header(self) -> dict[str, Any]:
        return self.data["header"]

    @property
    def num_classes(self) -> int:
        return int(self.header["num_classes"])

    @property
    def space(self):
        """The label space the shards were drawn in (classes unless the header names another)."""
        from rayflow.labels import as_space

        return as_space(self.header.get("label_space") or self.num_classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.header["image_shape"])

    @property
    def burnin(self) -> dict | None:
        return self.data["burnin"]

    @burnin.setter
    def burnin(self, value: dict) -> None:
        self.data["burnin"] = value

    @property
    def records(self) -> dict[int, dict]:
        """Finished shards: ``{shard_id: record}``."""
        return {int(k): v for k, v in self.data["shards"].items()}

    def specs(self) -> list[ShardSpec]:
        return [ShardSpec(**s) for rnd in self.data["rounds"] for s in rnd]

    @property
    def num_rounds(self) -> int:
        return len(self.data["rounds"])

    def pending(self) -> list[ShardSpec]:
        """Planned shards without a record, in shard-id order."""
        done = self.data["shards"]
        return [s for s in self.specs() if str(s.shard_id) not in done]

    def next_shard_id(self) -> int:
        return 1 + max((s.shard_id for s in self.specs()), default=-1)

    def add_round(self, specs: list[ShardSpec]) -> None:
        self.data["rounds"].append([s.item() for s in specs])

    def mark_done(self, record: dict[str, Any]) -> None:
        self.data["shards"][str(int(record["shard_id"]))] = record

    def per_class(self, field: str) -> np.ndarray:
        """Sum of a record field (``n_draws``, ``n_accepted``, ``n_kept``) per conditioning class."""
        out = np.zeros(self.num_classes, dtype=np.int64)
        for rec in self.data["shards"].values():
            out[rec["label"]] += rec[field]
        return out

    def selection(self, m_per_class: int | None = None) -> list[tuple[int, str, int]]:
        """The rows of the class-balanced set: ``[(shard_id, file, rows to take)]`` in shard order.

        For every conditioning class the first ``m_per_class`` kept rows by ``(shard_id, row)``;
        raises SynthError naming the classes that have fewer.
        """
        m = int(m_per_class or self.header["m_per_class"])
        need = np.full(self.num_classes, m, dtype=np.int64)
        out = []
        for sid, rec in sorted(self.records.items()):
            c = rec["label"]
            take = int(min(need[c], rec["n_kept"]))
            if take > 0:
                out.append((sid, rec["file"], take))
                need[c] -= take
        short = np.flatnonzero(need > 0)
        if len(short):
            have = (m - need[short]).tolist()
            raise SynthError(f"{self.out_dir}: class(es) {short.tolist()} have only {have} of {m} samples "
                             "(run incomplete; re-run run_synth to finish it)")
        return out
