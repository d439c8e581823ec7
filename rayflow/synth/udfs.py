"""The per-batch steps of the synthetic-data stage as plain-torch callables (no Ray import).

``Generate -> Score -> Label -> io.write_shards``: Ray Data runs them as ``map_batches`` UDFs in actor
pools; the ``local`` executor calls the very same objects in a loop. A *batch* is a dict of numpy
arrays holding whole shards (one row per generator draw, ``shard_id``/``draw``/``n_draws``
columns); every step regroups it by shard and works on fixed sub-batches of ``batch_size`` draws
of one shard, so results never depend on how Ray Data happens to cut or merge blocks:

* the ratio MLP's float output depends on the batch it runs in (GEMM blocking), so every net runs
  on the same ``(shard, batch_idx)`` sub-batches in both executors;
* the rejection sampler's uniforms come from ``rng_key=(shard_id, batch_idx)`` with the per-class
  max ratio frozen after the burn-in (``update_max=False``): no decision depends on execution order.

A shard split across two batches raises :class:`~rayflow.synth.manifest.SynthError` instead of
producing different numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rayflow.checkpoint import load_into, load_weights
from rayflow.data.transforms import to_float
from rayflow.dre import RatioMLP, RejectionSampler, ratio_scores
from rayflow.dre.features import embed
from rayflow.filtering import keep_mask, relabel, teacher_ce
from rayflow.gan.generator import GeneratorSpec  # noqa: F401  (re-exported)
from rayflow.gan.loop import generate
from rayflow.models.io import load_model
from rayflow.synth.io import by_shard
from rayflow.synth.manifest import SynthError

__all__ = ["GeneratorSpec", "build_generator", "derive_seed", "embed", "Generate", "Score", "Label"]

Batch = dict[str, np.ndarray]


def derive_seed(*key: int) -> int:
    """A 62-bit seed from a tuple of non-negative ints (``np.random.SeedSequence`` mixing)."""
    a, b = np.random.SeedSequence([int(k) for k in key]).generate_state(2, np.uint32)
    return (int(a) << 30) ^ int(b)


def build_generator(factory: Callable[[], nn.Module], state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """``factory()`` with ``state`` loaded (if given), in eval mode (the EMA sampling mode)."""
    G = factory()
    if state is not None:
        load_into(G, state, "generator state dict")
    return G.eval()


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _Step:
    def __init__(self, batch_size: int, device: str | None, threads: int | None):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if threads:
            torch.set_num_threads(int(threads))
        self.batch_size = int(batch_size)
        self.device = _device(device)


class Generate(_Step):
    """Work items ``{shard_id, label, n_draws, seed}`` -> one row per draw:
    ``shard_id, draw, n_draws, orig_label`` (int64) and ``image`` (uint8 ``(n, C, H, W)``)."""

    def __init__(self, generator: Callable[[], nn.Module], generator_state: dict | None = None, *,
                 batch_size: int = 500, device: str | None = "cpu", threads: int | None = None):
        super().__init__(batch_size, device, threads)
        self.G = build_generator(generator, generator_state).to(self.device)

    def draw(self, label: int, n: int, seed: int) -> torch.Tensor:
        """``n`` uint8 images of class ``label``; depends only on (G, label, n, seed)."""
        labels = torch.full((int(n),), int(label), dtype=torch.long)
        return generate(self.G, labels, seed=int(seed), batch_size=self.batch_size)

    def __call__(self, batch: Batch) -> Batch:
        parts = []
        for sid, label, n, seed in zip(*(np.asarray(batch[k]).tolist() for k in ("shard_id", "label", "n_draws", "seed"))):
            parts.append({"shard_id": np.full(n, sid, np.int64), "draw": np.arange(n, dtype=np.int64),
                          "n_draws": np.full(n, n, np.int64), "orig_label": np.full(n, label, np.int64),
                          "image": self.draw(label, n, seed).numpy()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def ratio_weights(state: dict | str | Path) -> dict:
    """The ratio net's state dict, given as one or as a safetensors path. A path keeps actor
    constructor arguments small (Ray keeps large ones in the object store, where an actor restart
    cannot rely on them)."""
    return load_weights(state) if isinstance(state, (str, Path)) else state


class Score(_Step):
    """Adds ``ratio`` (float32) and ``accepted`` (bool): cDR-RS rejection with M̄ frozen per class.

    ``max_ratio`` (per class, from the burn-in) may be ``None`` for :meth:`ratios`-only use.
    """

    def __init__(self, feature_dir: str | Path, ratio_state: dict | str | Path, *, num_classes: int,
                 ratio_hidden: Sequence[int] = (512, 256, 128), ratio_dropout: float = 0.5,
                 max_ratio: Sequence[float] | None = None, seed: int = 0, batch_size: int = 500,
                 device: str | None = "cpu", threads: int | None = None):
        super().__init__(batch_size, device, threads)
        self.features = load_model(feature_dir).to(self.device)
        feature_dim = getattr(self.features, "feature_dim", None)
        if feature_dim is None:
            raise SynthError(f"feature net in {feature_dir} has no feature_dim (not a rayflow FeatureNet)")
        net = RatioMLP(int(feature_dim), num_classes, hidden=list(ratio_hidden), dropout=ratio_dropout)
        load_into(net, ratio_weights(ratio_state), "ratio-net state dict")
        self.ratio_net = net.to(self.device).eval()
        self.seed = int(seed)
        self.sampler = None
        if max_ratio is not None:
            self.set_max_ratio(max_ratio)

    def set_max_ratio(self, max_ratio: Sequence[float]) -> None:
        self.sampler = RejectionSampler(burnin_max=dict(enumerate(float(m) for m in max_ratio)), seed=self.seed)

    def ratios(self, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        """Density ratios (float32) of uint8 ``images`` under ``labels``, in sub-batches of ``batch_size``."""
        out = []
        for sl in _chunks(len(images), self.batch_size):
            feats = embed(self.features, images[sl].to(self.device))
            out.append(ratio_scores(self.ratio_net, feats, labels[sl], batch_size=self.batch_size).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def accept(self, images: torch.Tensor, labels: torch.Tensor, key: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(ratio, accepted)`` for draws ``0..n-1`` of one shard; sub-batch ``b`` uses ``rng_key=(*key, b)``."""
        if self.sampler is None:
            raise SynthError("Score.accept needs the burn-in max ratio per class (max_ratio)")
        ratio = self.ratios(images, labels)
        acc = np.concatenate([
            self.sampler.accept(ratio[sl], labels[sl].numpy(), rng_key=(*key, b), update_max=False)
            for b, sl in enumerate(_chunks(len(images), self.batch_size))]) if len(images) else np.zeros(0, bool)
        return ratio, acc

    def __call__(self, batch: Batch) -> Batch:
        out, groups = by_shard(batch)
        n = len(out["draw"])
        out["ratio"], out["accepted"] = np.empty(n, np.float32), np.empty(n, bool)
        for sid, sl in groups:
            images, labels = torch.from_numpy(out["image"][sl]), torch.from_numpy(out["orig_label"][sl])
            out["ratio"][sl], out["accepted"][sl] = self.accept(images, labels, key=(sid,))
        return out


class Label(_Step):
    """Adds ``teacher_logits`` (float32 ``(n, K)``), ``teacher_ce`` (float32, w.r.t. ``orig_label``),
    ``keep`` (bool) and ``label`` (int64); rows not ``accepted`` by :class:`Score` get NaN and
    ``keep=False`` without running the teacher.

    ``cutoffs`` (per class, from the filter burn-in) enable filtering: keep ``ce <= cutoffs[orig]``;
    ``relabel`` sets ``label`` to the teacher argmax, else to ``orig_label``. ``all_draws`` (a scored
    pool) runs the teacher on the rejected draws too and keeps every row; the accepted ones are still
    scored in the very batches a filtering run uses, so their numbers are identical to its.
    """

    def __init__(self, teacher_dir: str | Path, *, num_classes: int, cutoffs: Sequence[float] | None = None,
                 relabel: bool = False, all_draws: bool = False, batch_size: int = 500,
                 device: str | None = "cpu", threads: int | None = None):
        super().__init__(batch_size, device, threads)
        self.all_draws = bool(all_draws)
        self.teacher = load_model(teacher_dir).to(self.device)
        self.num_classes = int(num_classes)
        self.cutoffs = None if cutoffs is None else np.asarray(cutoffs, np.float64)
        self.relabel = bool(relabel)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> np.ndarray:
        """Teacher logits (float32 ``(n, K)``) of uint8 ``images``, in sub-batches of ``batch_size``."""
        out = [self.teacher(to_float(images[sl].to(self.device))).float().cpu().numpy()
               for sl in _chunks(len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)

    def __call__(self, batch: Batch) -> Batch:
        out, groups = by_shard(batch)
        n = len(out["draw"])
        accepted = out["accepted"] if "accepted" in out else np.ones(n, bool)
        logits = np.full((n, self.num_classes), np.nan, np.float32)
        ce = np.full(n, np.nan, np.float32)
        keep = np.zeros(n, bool)
        label = out["orig_label"].astype(np.int64)
        for _, sl in groups:  # the teacher runs on each shard's accepted draws, in draw order
            rows = np.arange(sl.start, sl.stop)
            for r in (rows[accepted[sl]], rows[~accepted[sl]] if self.all_draws else rows[:0]):
                if not len(r):
                    continue
                lg = self.logits(torch.from_numpy(out["image"][r]))
                logits[r] = lg
                orig = out["orig_label"][r]
                ce[r] = teacher_ce(torch.from_numpy(lg), torch.from_numpy(orig)).numpy()
                keep[r] = True if self.cutoffs is None or self.all_draws else keep_mask(ce[r], orig, self.cutoffs)
                if self.relabel:
                    label[r] = relabel(lg)
        out.update(teacher_logits=logits, teacher_ce=ce, keep=keep, label=label)
        return out
