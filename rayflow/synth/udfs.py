"""The per-batch steps of the synthetic-data stage as plain-torch callables (no Ray import).

``Generate -> Score -> Label -> io.write_shards``: Ray Data runs them as ``map_batches`` UDFs in actor
pools; the ``local`` executor calls the very same objects in a loop. A *batch* is a dict of numpy
arrays holding whole shards (one row per generator draw, ``shard_id``/``draw``/``n_draws``
columns); every step regroups it by shard and works on fixed sub-batches of ``batch_size`` draws
of one shard (the nets run them in forward passes of at most ``infer_batch`` rows), so results
never depend on how Ray Data happens to cut or merge blocks:

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
from rayflow.dre import RejectionSampler, build_ratio_net, ratio_scores
from rayflow.dre.features import embed
from rayflow.filtering import keep_mask
from rayflow.gan.generator import GeneratorSpec  # noqa: F401  (re-exported)
from rayflow.gan.loop import generate
from rayflow.labels import LabelSpace, as_space
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


CPU_INFER_BATCH = 128  # rows per forward pass on CPU: a 500-row pass of the generator peaks ~250 MB
# higher per actor than 128 rows, at no speed gain (measured on the synth benchmark's nets)


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
        # the nets' forward sub-batch: ``batch_size`` keys the rejection sampler's uniforms (which
        # draws are kept), this only bounds activation memory; z is drawn up front (see generate)
        self.infer_batch = self.batch_size if self.device.type == "cuda" else min(self.batch_size, CPU_INFER_BATCH)


class Generate(_Step):
    """Work items ``{shard_id, label, n_draws, seed}`` (``label``: the stratum) -> one row per draw:
    ``shard_id, draw, n_draws`` (int64), ``orig_label`` (the conditioning label: the class, or a
    continuous label drawn inside the stratum) and ``image`` (uint8 ``(n, C, H, W)``)."""

    def __init__(self, generator: Callable[[], nn.Module], generator_state: dict | None = None, *,
                 batch_size: int = 500, device: str | None = "cpu", threads: int | None = None,
                 space: LabelSpace | int | dict | None = None, latent_scale: float = 1.0,
                 truncation: float | None = None):
        super().__init__(batch_size, device, threads)
        self.G = build_generator(generator, generator_state).to(self.device)
        self.latent = {"latent_scale": float(latent_scale), "truncation": truncation}  # synth.latent_kwargs
        self.space = None if space is None else as_space(space)  # None: class ids

    def labels(self, stratum: int, n: int, seed: int) -> torch.Tensor:
        """The conditioning labels of ``n`` draws of one stratum; a function of (stratum, n, seed)."""
        if self.space is None:
            return torch.full((int(n),), int(stratum), dtype=torch.long)
        return self.space.draw(stratum, n, derive_seed(int(seed), 1))

    def draw_labelled(self, stratum: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels, uint8 images)`` of ``n`` draws of one stratum; depends only on (G, stratum, n, seed)."""
        y = self.labels(stratum, n, seed)
        return y, generate(self.G, y, seed=int(seed), batch_size=self.infer_batch, **self.latent)

    def draw(self, label: int, n: int, seed: int) -> torch.Tensor:
        """``n`` uint8 images of stratum ``label`` (the class, for class ids)."""
        return self.draw_labelled(label, n, seed)[1]

    def __call__(self, batch: Batch) -> Batch:
        parts = []
        for sid, label, n, seed in zip(*(np.asarray(batch[k]).tolist() for k in ("shard_id", "label", "n_draws", "seed"))):
            y, x = self.draw_labelled(label, n, seed)
            parts.append({"shard_id": np.full(n, sid, np.int64), "draw": np.arange(n, dtype=np.int64),
                          "n_draws": np.full(n, n, np.int64), "orig_label": y.numpy(), "image": x.numpy()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def ratio_weights(state: dict | str | Path) -> dict:
    """The ratio net's state dict, given as one or as a safetensors path. A path keeps actor
    constructor arguments small (Ray keeps large ones in the object store, where an actor restart
    cannot rely on them)."""
    return state if isinstance(state, dict) else load_weights(state)  # a path: str, Path or NodePath


class Score(_Step):
    """Adds ``ratio`` (float32) and ``accepted`` (bool): cDR-RS rejection with M̄ frozen per stratum
    (per class; for a continuous label, per slice of its range).

    ``max_ratio`` (per stratum, from the burn-in) may be ``None`` for :meth:`ratios`-only use.
    """

    def __init__(self, feature_dir: str | Path, ratio_state: dict | str | Path, *,
                 num_classes: LabelSpace | int | dict,
                 ratio_hidden: Sequence[int] = (512, 256, 128), ratio_dropout: float = 0.5,
                 max_ratio: Sequence[float] | None = None, seed: int = 0, batch_size: int = 500,
                 device: str | None = "cpu", threads: int | None = None):
        super().__init__(batch_size, device, threads)
        self.features = load_model(feature_dir).to(self.device)
        feature_dim = getattr(self.features, "feature_dim", None)
        if feature_dim is None:
            raise SynthError(f"feature net in {feature_dir} has no feature_dim (not a rayflow FeatureNet)")
        self.space = as_space(num_classes)
        net = build_ratio_net(list(ratio_hidden), int(feature_dim), self.space, dropout=ratio_dropout)
        load_into(net, ratio_weights(ratio_state), "ratio-net state dict")
        self.ratio_net = net.to(self.device).eval()
        self.seed = int(seed)
        self.sampler = None
        if max_ratio is not None:
            self.set_max_ratio(max_ratio)

    def set_max_ratio(self, max_ratio: Sequence[float]) -> None:
        self.sampler = RejectionSampler(burnin_max=dict(enumerate(float(m) for m in max_ratio)), seed=self.seed)

    def ratios(self, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        """Density ratios (float32) of uint8 ``images`` under ``labels``, in sub-batches of ``infer_batch``."""
        out = []
        for sl in _chunks(len(images), self.infer_batch):
            feats = embed(self.features, images[sl].to(self.device))
            out.append(ratio_scores(self.ratio_net, feats, labels[sl], batch_size=self.infer_batch).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def accept(self, images: torch.Tensor, labels: torch.Tensor, key: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(ratio, accepted)`` for draws ``0..n-1`` of one shard; sub-batch ``b`` uses ``rng_key=(*key, b)``."""
        if self.sampler is None:
            raise SynthError("Score.accept needs the burn-in max ratio per class (max_ratio)")
        ratio = self.ratios(images, labels)
        acc = np.concatenate([
            self.sampler.accept(ratio[sl], self.space.strata_of(labels[sl].numpy()), rng_key=(*key, b),
                                update_max=False)
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
    """Adds ``teacher_logits`` (float32 ``(n, K)``: class logits, or the teacher's prediction for a
    scalar label), ``teacher_ce`` (float32: the teacher's error w.r.t. ``orig_label``, cross-entropy
    or |prediction - y|), ``keep`` (bool) and ``label``; rows not ``accepted`` by :class:`Score` get
    NaN and ``keep=False`` without running the teacher.

    ``cutoffs`` (per stratum, from the filter burn-in; one global value repeated for a continuous
    label) enable filtering: keep ``error <= cutoffs[stratum]``; ``relabel`` sets ``label`` to the
    teacher's label (argmax, or its clipped prediction), else to ``orig_label``. ``all_draws`` (a
    scored pool) runs the teacher on the rejected draws too and keeps every row; the accepted ones
    are still scored in the very batches a filtering run uses, so their numbers are identical to its.
    """

    def __init__(self, teacher_dir: str | Path, *, num_classes: LabelSpace | int | dict,
                 cutoffs: Sequence[float] | None = None,
                 relabel: bool = False, all_draws: bool = False, batch_size: int = 500,
                 device: str | None = "cpu", threads: int | None = None):
        super().__init__(batch_size, device, threads)
        self.all_draws = bool(all_draws)
        self.teacher = load_model(teacher_dir).to(self.device)
        self.space = as_space(num_classes)
        self.num_outputs = self.space.num_outputs
        self.cutoffs = None if cutoffs is None else np.asarray(cutoffs, np.float64)
        self.relabel = bool(relabel)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> np.ndarray:
        """Teacher outputs (float32 ``(n, K)``) of uint8 ``images``, in sub-batches of ``infer_batch``."""
        out = [self.teacher(to_float(images[sl].to(self.device))).float().cpu().numpy()
               for sl in _chunks(len(images), self.infer_batch)]
        return np.concatenate(out) if out else np.zeros((0, self.num_outputs), np.float32)

    def errors(self, outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The filter's score of each draw: the teacher's error w.r.t. its conditioning label."""
        return self.space.teacher_error(torch.from_numpy(outputs), torch.from_numpy(labels)).numpy()

    def __call__(self, batch: Batch) -> Batch:
        out, groups = by_shard(batch)
        n = len(out["draw"])
        accepted = out["accepted"] if "accepted" in out else np.ones(n, bool)
        logits = np.full((n, self.num_outputs), np.nan, np.float32)
        ce = np.full(n, np.nan, np.float32)
        keep = np.zeros(n, bool)
        label = out["orig_label"].astype(self.space.np_dtype)
        for _, sl in groups:  # the teacher runs on each shard's accepted draws, in draw order
            rows = np.arange(sl.start, sl.stop)
            for r in (rows[accepted[sl]], rows[~accepted[sl]] if self.all_draws else rows[:0]):
                if not len(r):
                    continue
                lg = self.logits(torch.from_numpy(out["image"][r]))
                logits[r] = lg
                orig = out["orig_label"][r]
                ce[r] = self.errors(lg, orig)
                keep[r] = True if self.cutoffs is None or self.all_draws else \
                    keep_mask(ce[r], self.space.strata_of(orig), self.cutoffs)
                if self.relabel:
                    label[r] = self.space.teacher_label(torch.from_numpy(lg)).numpy()
        out.update(teacher_logits=logits, teacher_ce=ce, keep=keep, label=label)
        return out
