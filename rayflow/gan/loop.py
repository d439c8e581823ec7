"""GAN training state and loop, plain PyTorch (Ray drivers wrap it; DDP is the caller's job).

`gan_step` works whether G/D are bare modules or DistributedDataParallel wrappers: forwards and
backwards go through the wrappers (so gradients are all-reduced), `unwrap` is used only where
the bare module is needed (EMA, state dicts, attributes such as z_dim).

Class labels and continuous labels (CcGAN, `num_classes=None`) share everything but the batch
plan: a CcGAN's D step draws target labels and vicinal reals from a `VicinalSampler` (vicinal.py)
and weights the hinge terms; its G step draws noisy target labels from the same sampler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
from torch import Tensor

from ..config import GANConfig
from ..data.transforms import to_float, to_uint8
from ..seeding import reseed_torch
from ..train.diverged import check_loss
from .diffaugment import diff_augment
from .discriminator import ProjectionDiscriminator
from .ema import EMA, unwrap
from .generator import GeneratorSpec
from .label_embed import LabelMLP, projection_embedding
from .losses import LeCam, d_loss, g_loss
from .vicinal import VicinalSampler, vicinal_weights

SampleReal = Callable[[int], tuple[Tensor, Tensor]]
"""n -> (images (n, C, H, W) float in [-1, 1] or uint8, labels (n,)) from the real training set.
For continuous labels gan_step needs a `VicinalSampler` (also callable as a SampleReal)."""


@dataclass
class GANState:
    G: nn.Module
    D: nn.Module
    ema: EMA
    optG: torch.optim.Optimizer
    optD: torch.optim.Optimizer
    step: int = 0
    lecam: LeCam = field(default_factory=LeCam)

    @property
    def G_ema(self) -> nn.Module:
        return self.ema.ema

    def state_dict(self) -> dict:
        """Tensors / nested dicts / numbers only, so `torch.load(..., weights_only=True)` reads it."""
        return {"G": unwrap(self.G).state_dict(), "D": unwrap(self.D).state_dict(),
                "G_ema": self.ema.state_dict(), "optG": self.optG.state_dict(),
                "optD": self.optD.state_dict(), "step": int(self.step),
                "lecam": self.lecam.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        unwrap(self.G).load_state_dict(sd["G"])
        unwrap(self.D).load_state_dict(sd["D"])
        self.ema.load_state_dict(sd["G_ema"])
        self.optG.load_state_dict(sd["optG"])
        self.optD.load_state_dict(sd["optD"])
        self.step = int(sd["step"])
        if "lecam" in sd:  # checkpoints written before LeCam existed start its anchors at 0
            self.lecam.load_state_dict(sd["lecam"])


def build_gan(cfg: GANConfig, num_classes: int | None, in_channels: int, image_size: int, *,
              device: torch.device | str | None = None, y2h: nn.Module | None = None) -> GANState:
    """Fresh G, D, EMA(G) and Adam optimisers; weights depend only on cfg.seed (global RNG untouched).

    num_classes None = continuous labels in [0, 1] (CcGAN): G and D each get their own
    `cfg.label_embedding` of size `cfg.embed_dim`, trained with the GAN. `y2h` (a pre-trained
    LabelMLP, see label_embed.fit_y2h) replaces both by frozen copies: the paper's setup."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        G = GeneratorSpec.of(cfg, num_classes, in_channels, image_size)()
        D = ProjectionDiscriminator(num_classes, in_channels=in_channels, image_size=image_size,
                                    base_channels=cfg.d_channels,
                                    label_embedding=None if num_classes is not None else projection_embedding(
                                        cfg.label_embedding, cfg.embed_dim,
                                        ProjectionDiscriminator.feature_dim(image_size, cfg.d_channels)))
    if y2h is not None:
        _install_y2h(G, D, y2h)
    if device is not None:
        G, D = G.to(device), D.to(device)
    optG = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas))
    optD = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas))
    return GANState(G=G, D=D, ema=EMA(G, cfg.ema_decay), optG=optG, optD=optD, step=0)


def _install_y2h(G: nn.Module, D: nn.Module, y2h: nn.Module) -> None:
    """Frozen copies of a pre-trained y2h as G's embedding and under D's projection."""
    if G.num_classes is not None or not isinstance(G.label_embedding, LabelMLP):
        raise ValueError("y2h needs continuous labels (num_classes=None) and label_embedding='mlp'")
    sd = y2h.state_dict()
    for emb in (G.label_embedding, D.label_embedding.embed):
        emb.load_state_dict(sd)  # raises on a size mismatch with cfg.embed_dim
        emb.requires_grad_(False)


def _is_ddp(m: nn.Module) -> bool:
    return isinstance(m, nn.parallel.DistributedDataParallel)


def _real_batch(sample_real: SampleReal, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    x, y = sample_real(n)
    x = torch.as_tensor(x)
    if x.dtype == torch.uint8:
        x = to_float(x)
    return x.to(device, torch.float32), torch.as_tensor(y).to(device)


def _vicinal_batch(sampler: VicinalSampler, n: int, device: torch.device):
    """(real images, target labels y*, fake labels, real weights, fake weights) for one CcGAN D step."""
    x, y, t, y_fake = sampler.d_batch(n)
    x = to_float(x) if x.dtype == torch.uint8 else x
    vic = sampler.vicinity
    w_real, w_fake = vicinal_weights(y, t, vic), vicinal_weights(y_fake, t, vic)
    return (x.to(device, torch.float32), t.to(device), y_fake.to(device), w_real.to(device),
            w_fake.to(device))


def gan_step(state: GANState, sample_real: SampleReal, cfg: GANConfig, *,
             batch_size: int | None = None) -> dict:
    """n_dis hinge D steps (DiffAugment on real and fake), one G step, EMA update; step += 1.

    Fakes are drawn with the labels of the real batch (class balance follows the sampler).
    Continuous labels (G.num_classes None): `sample_real` must be a VicinalSampler; D sees reals
    and fakes at vicinal targets y* with HVDL/SVDL weights, G trains at y* = y + N(0, sigma^2).
    `batch_size` is this process's batch (under DDP: per worker); default cfg.batch_size.
    Returns float metrics: d_loss, g_loss (means over the D steps for D), d_real, d_fake logits.
    """
    G, D = state.G, state.D
    n = batch_size or cfg.batch_size
    z_dim = unwrap(G).z_dim
    device = next(unwrap(D).parameters()).device
    vicinal = unwrap(G).num_classes is None
    if vicinal and not hasattr(sample_real, "d_batch"):
        raise TypeError("a continuous-label GAN needs a VicinalSampler (rayflow.gan.vicinal) as sample_real")
    G.train()
    D.train()
    d_tot = real_tot = fake_tot = 0.0
    for _ in range(cfg.n_dis):
        if vicinal:  # y = vicinal target labels, fakes drawn at labels within their vicinity
            x_real, y, y_fake, w_real, w_fake = _vicinal_batch(sample_real, n, device)
        else:
            x_real, y = _real_batch(sample_real, n, device)
            y_fake = y
            w_real = w_fake = None
        with torch.no_grad():
            x_fake = G(torch.randn(n, z_dim, device=device), y_fake)
        # one D call on real+fake: a single DDP forward/backward, and the same SN power iteration
        logits = D(diff_augment(torch.cat([x_real, x_fake]), cfg.diffaugment), torch.cat([y, y]))
        loss_d = d_loss(logits[:n], logits[n:], w_real, w_fake)
        if cfg.lecam > 0:
            loss_d = loss_d + cfg.lecam * state.lecam(logits[:n], logits[n:])
        state.optD.zero_grad(set_to_none=True)
        loss_d.backward()
        state.optD.step()
        d_tot += loss_d.item()
        real_tot += logits[:n].mean().item()
        fake_tot += logits[n:].mean().item()

    # G step. Without DDP, freeze D's weights so backward skips their gradients; a DDP-wrapped
    # D must keep requires_grad as at construction (its reducer expects every gradient). Only the
    # trainable ones are frozen and restored: a frozen pre-trained y2h stays frozen.
    if vicinal:
        y = sample_real.targets(n).to(device)
    frozen = [p for p in D.parameters() if p.requires_grad] if not _is_ddp(D) else []
    for p in frozen:
        p.requires_grad_(False)
    try:
        x_fake = G(torch.randn(n, z_dim, device=device), y)
        loss_g = g_loss(D(diff_augment(x_fake, cfg.diffaugment), y))
        state.optG.zero_grad(set_to_none=True)
        loss_g.backward()
        state.optG.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    state.ema.update(G)
    state.step += 1
    k = cfg.n_dis
    return {"d_loss": d_tot / k, "g_loss": loss_g.item(), "d_real": real_tot / k, "d_fake": fake_tot / k}


GAN_HINT = "learning rates too high for this data, or images too small for the networks?"


def train_gan(state: GANState, sample_real: SampleReal, cfg: GANConfig, *,
              reporter: Callable[[dict, dict | None], None] | None = None,
              on_checkpoint: Callable[[GANState], None] | None = None,
              log_every: int = 100, batch_size: int | None = None, rank: int = 0) -> dict:
    """Run `gan_step` from state.step up to cfg.steps (a resumed state continues where it stopped).

    `on_checkpoint(state)` fires every cfg.checkpoint_every steps and once at the end; the caller
    saves `state.state_dict()`. `reporter(metrics, None)` (design.md reporter contract; no state,
    checkpoints go through on_checkpoint) fires every `log_every` steps and at the last step with
    step, d_loss, g_loss, d_real, d_fake (means over the window) and steps_per_s.
    Returns the last window's metrics ({"step": ...} only if no step was run).
    The global torch RNG (z, DiffAugment, `sample_real` if it draws from it) is reseeded from
    (cfg.seed, rank, step) before every step, so a run resumed at step k continues bit for bit.
    """
    last: dict = {"step": state.step}
    sums: dict[str, float] = {}
    count, t0 = 0, time.perf_counter()
    while state.step < cfg.steps:
        reseed_torch(cfg.seed, rank, state.step)
        m = gan_step(state, sample_real, cfg, batch_size=batch_size)
        for k in ("d_loss", "g_loss"):  # host floats already (.item() in gan_step): no extra sync
            check_loss(m[k], "gan", state.step, k.replace("_", " "), GAN_HINT)
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        done = state.step >= cfg.steps
        if state.step % log_every == 0 or done:
            dt = time.perf_counter() - t0
            last = {"step": state.step, **{k: v / count for k, v in sums.items()},
                    "steps_per_s": count / dt if dt > 0 else float("inf")}
            if reporter is not None:
                reporter(last, None)
            sums, count, t0 = {}, 0, time.perf_counter()
        if on_checkpoint is not None and (state.step % cfg.checkpoint_every == 0 or done):
            on_checkpoint(state)
    return last


@torch.no_grad()
def latent(n: int, z_dim: int, seed: int, scale: float = 1.0, truncation: float | None = None) -> Tensor:
    """z ~ N(0, scale^2) from a CPU generator seeded by `seed`; with `truncation`, every coordinate
    with |z| > truncation is redrawn until within it. Why: the latent scale and truncation trade the
    draws' variety against their fidelity (GaFi, arXiv 2305.10118; BigGAN). Scale 1 and no
    truncation draw exactly the z of every pool built before they existed."""
    if scale <= 0 or (truncation is not None and truncation <= 0):
        raise ValueError(f"latent scale and truncation must be > 0, got {scale}, {truncation}")
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, z_dim, generator=g)
    if scale != 1.0:
        z = z * scale
    if truncation is not None:
        out = z.abs() > truncation
        while out.any():
            z[out] = scale * torch.randn(int(out.sum()), generator=g)
            out = z.abs() > truncation
    return z


def generate(G: nn.Module, labels: Tensor, seed: int, batch_size: int = 500, latent_scale: float = 1.0,
             truncation: float | None = None) -> Tensor:
    """uint8 images (N, C, H, W) for `labels`, on CPU; depends only on (G, labels, seed) and the
    latent draw's scale / truncation (`latent`).

    G runs in eval mode (see ema.py for why) and its mode is restored; z for all N samples is
    drawn up front from a CPU torch.Generator, so the result does not depend on batch_size or device RNG.
    """
    g = unwrap(G)
    was_training = g.training
    g.eval()
    try:
        device = next(g.parameters()).device
        z = latent(len(labels), g.z_dim, seed, latent_scale, truncation)
        out = [to_uint8(g(z[i:i + batch_size].to(device), labels[i:i + batch_size].to(device))).cpu()
               for i in range(0, len(labels), batch_size)]
    finally:
        g.train(was_training)
    if not out:
        return torch.empty(0, g.out_channels, g.image_size, g.image_size, dtype=torch.uint8)
    return torch.cat(out)
