"""Unit tests for rayflow.gan (CPU, small nets, whole file well under a minute)."""

from __future__ import annotations

import torch
import torch.nn as nn
import pytest

from rayflow.config import GANConfig
from rayflow.gan import (
    EMA, CondGenerator, ProjectionDiscriminator, build_gan, d_loss, diff_augment, g_loss,
    gan_step, generate, recalibrate_bn, save_grid_png, spatial_plan, train_gan, unwrap,
)



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core box, 2 OpenMP threads can spin 10-50x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


SMALL = dict(z_dim=16, g_channels=16, d_channels=16, batch_size=16, steps=10, checkpoint_every=5)


def toy_sampler(seed: int = 0, size: int = 16):
    """Class 0: dark images, class 1: bright images (values in [-1, 1])."""
    gen = torch.Generator().manual_seed(seed)

    def sample(n: int):
        y = torch.randint(0, 2, (n,), generator=gen)
        base = torch.where(y == 1, 0.6, -0.6).view(n, 1, 1, 1)
        x = (base + 0.3 * (torch.rand(n, 1, size, size, generator=gen) * 2 - 1)).clamp(-1, 1)
        return x, y

    return sample


@pytest.mark.parametrize("ch,size", [(1, 28), (3, 32), (1, 16), (1, 8)])
def test_shapes_and_range(ch, size):
    torch.manual_seed(0)
    G = CondGenerator(10, z_dim=32, out_channels=ch, image_size=size, base_channels=32)
    D = ProjectionDiscriminator(10, in_channels=ch, image_size=size, base_channels=32)
    y = torch.arange(6) % 10
    x = G(torch.randn(6, 32) * 5, y)
    assert x.shape == (6, ch, size, size)
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0
    logits = D(x, y)
    assert logits.shape == (6,)


def test_spatial_plan():
    assert spatial_plan(28) == (7, 2)
    assert spatial_plan(32) == (4, 3)
    assert spatial_plan(16) == (4, 2)
    with pytest.raises(ValueError):
        spatial_plan(7)


def test_default_param_budget():
    G = CondGenerator(10, z_dim=64, out_channels=1, image_size=28, base_channels=64)
    n = sum(p.numel() for p in G.parameters())
    assert 200_000 <= n <= 1_000_000
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in G.modules())


def test_generator_uses_label_embedding_seam():
    """A custom (continuous-label) embedding plugs in; G calls it on y."""
    calls = []

    class Cont(nn.Module):
        out_features = 8

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 8)

        def forward(self, y):
            calls.append(y)
            return self.lin(y.view(-1, 1).float())

    G = CondGenerator(1, z_dim=8, image_size=16, base_channels=16, label_embedding=Cont())
    assert G.cond_dim == 8
    y = torch.tensor([0.1, 0.9, 0.5])
    assert G(torch.randn(3, 8), y).shape == (3, 1, 16, 16)
    assert calls and torch.equal(calls[0], y)
    d_emb = nn.Linear(1, ProjectionDiscriminator.feature_dim(16, 16))
    D = ProjectionDiscriminator(1, image_size=16, base_channels=16,
                                label_embedding=nn.Sequential(nn.Unflatten(0, (-1, 1)), d_emb))
    assert D(torch.randn(3, 1, 16, 16), y).shape == (3,)


def test_discriminator_is_spectrally_normalised_and_uses_label():
    D = ProjectionDiscriminator(4, in_channels=1, image_size=16, base_channels=16)
    weighted = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert weighted and all(hasattr(m, "parametrizations") for m in weighted)
    D.eval()
    x = torch.randn(4, 1, 16, 16)
    assert not torch.allclose(D(x, torch.zeros(4, dtype=torch.long)), D(x, torch.full((4,), 3)))


def test_hinge_losses():
    assert d_loss(torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 1.0])).item() == pytest.approx(0.5 + 1.0)
    assert g_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_lecam_penalises_only_logits_beyond_the_other_sides_anchor():
    from rayflow.gan import LeCam

    reg = LeCam(decay=0.0)  # anchors = this batch's means
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([-1.0, 1.0])
    # anchors: real 3, fake 0 -> relu(real - 0)^2 = [4, 16], relu(3 - fake)^2 = [16, 4]
    assert reg(real, fake).item() == pytest.approx(10.0 + 10.0)
    assert reg.state_dict() == {"real": 3.0, "fake": 0.0}
    # D that cannot tell reals from fakes (equal logits) pays nothing
    assert LeCam(decay=0.0)(torch.zeros(3), torch.zeros(3)).item() == 0.0
    slow = LeCam(decay=0.9)
    slow(real, fake)
    assert slow.real == pytest.approx(0.3) and slow.fake == pytest.approx(0.0)


@pytest.mark.parametrize("ch", [1, 3])
def test_diffaugment_shape_and_grad(ch):
    torch.manual_seed(0)
    x = torch.randn(8, ch, 16, 16, requires_grad=True)
    out = diff_augment(x)
    assert out.shape == x.shape
    assert not torch.allclose(out, x)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, ""), x)
    with pytest.raises(ValueError):
        diff_augment(x, "rotate")


def test_diffaugment_cutout_zeroes_a_square():
    torch.manual_seed(1)
    out = diff_augment(torch.ones(4, 1, 16, 16), "cutout")
    zeros = (out == 0).flatten(1).sum(1)
    assert torch.all(zeros > 0) and torch.all(zeros <= 64)


def test_ema_warmup_tracks_then_lags():
    torch.manual_seed(0)
    G = nn.Linear(4, 4)
    init = G.weight.detach().clone()
    ema = EMA(G, decay=0.999)
    with torch.no_grad():
        G.weight.add_(1.0)  # a big "training step"
    ema.update(G)
    w = ema.ema.weight
    # warm-up decay 0.1: 90 % of the way to G after one update, not stuck at init
    assert torch.allclose(w, init + 0.9, atol=1e-5)
    for _ in range(5):
        with torch.no_grad():
            G.weight.add_(1.0)
        ema.update(G)
    assert not torch.allclose(ema.ema.weight, G.weight)
    assert (ema.ema.weight < G.weight).all()
    assert not ema.ema.training and not any(p.requires_grad for p in ema.ema.parameters())


def test_ema_copies_bn_buffers():
    G = CondGenerator(2, z_dim=8, image_size=16, base_channels=16)
    ema = EMA(G)
    G(torch.randn(8, 8), torch.randint(0, 2, (8,)))  # train-mode forward moves running stats
    ema.update(G)
    for (n, b), (_, e) in zip(G.named_buffers(), ema.ema.named_buffers()):
        assert torch.equal(b, e), n


@pytest.mark.parametrize("lecam", [0.0, 0.3])
def test_toy_run_follows_condition(lecam):
    """100 steps on dark (-0.6) vs bright (+0.6) 16x16 images: raw and EMA G must render each
    class at its own brightness. At init the class means are arbitrary (e.g. -0.75/-0.74); an
    unconditional or collapsed G cannot pass (gap ~0 or one class off by ~1.2). With LeCam on,
    D is held back but must still teach G the condition."""
    torch.manual_seed(0)
    cfg = GANConfig(**{**SMALL, "steps": 100, "batch_size": 16, "lr_g": 5e-4, "lr_d": 5e-4, "lecam": lecam})
    state = build_gan(cfg, num_classes=2, in_channels=1, image_size=16)
    train_gan(state, toy_sampler(0), cfg, log_every=1000)
    assert state.step == 100
    labels = torch.tensor([0, 1]).repeat_interleave(200)
    for G in (state.G, state.G_ema):
        imgs = generate(G, labels, seed=3).float() / 127.5 - 1
        dark, bright = imgs[:200].mean().item(), imgs[200:].mean().item()
        assert abs(dark + 0.6) < 0.25 and abs(bright - 0.6) < 0.25, (dark, bright)
        assert bright - dark > 0.8


def test_gan_step_returns_floats_and_updates():
    torch.manual_seed(0)
    cfg = GANConfig(**{**SMALL, "n_dis": 2})
    state = build_gan(cfg, 2, 1, 16)
    g0 = [p.detach().clone() for p in state.G.parameters()]
    d0 = [p.detach().clone() for p in state.D.parameters()]
    calls = []
    sample = toy_sampler()

    def counting(n):
        calls.append(n)
        return sample(n)

    m = gan_step(state, counting, cfg)
    assert set(m) >= {"d_loss", "g_loss"} and all(isinstance(v, float) for v in m.values())
    assert calls == [16, 16] and state.step == 1 and state.ema.num_updates == 1
    assert any(not torch.equal(a, b) for a, b in zip(g0, state.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, state.D.parameters()))
    assert all(p.requires_grad for p in state.D.parameters())
    # EMA after one update: 90 % of the way from init to G (warm-up), so near G but not equal
    for e, g, g_init in zip(state.G_ema.parameters(), state.G.parameters(), g0):
        assert torch.allclose(e, 0.1 * g_init + 0.9 * g, atol=1e-6)
    assert any(not torch.equal(e, g) for e, g in zip(state.G_ema.parameters(), state.G.parameters()))

    def uint8_sampler(n):  # uint8 real batches are accepted too
        x, y = sample(n)
        return ((x + 1) * 127.5).round().to(torch.uint8), y

    assert all(v == v for v in gan_step(state, uint8_sampler, cfg).values())


def test_generate_deterministic():
    cfg = GANConfig(**SMALL)
    state = build_gan(cfg, 3, 1, 16)
    labels = torch.arange(3).repeat(7)
    a = generate(state.G_ema, labels, seed=5, batch_size=4)
    b = generate(state.G_ema, labels, seed=5, batch_size=500)
    c = generate(state.G_ema, labels, seed=6)
    assert a.dtype == torch.uint8 and a.shape == (21, 1, 16, 16)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    state.G.train()
    generate(state.G, labels, seed=1)
    assert state.G.training  # mode restored


def test_build_gan_seeded():
    cfg = GANConfig(**SMALL)
    a, b = build_gan(cfg, 2, 1, 16), build_gan(cfg, 2, 1, 16)
    c = build_gan(GANConfig(**{**SMALL, "seed": 1}), 2, 1, 16)
    pa, pb, pc = (torch.cat([p.flatten() for p in s.G.parameters()]) for s in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a.optG.defaults["betas"] == cfg.betas and a.optD.defaults["lr"] == cfg.lr_d


def test_state_dict_roundtrip(tmp_path):
    torch.manual_seed(0)
    cfg = GANConfig(**{**SMALL, "seed": 1, "lecam": 0.3})
    state = build_gan(cfg, 2, 1, 16)
    sample = toy_sampler()
    for _ in range(3):
        gan_step(state, sample, cfg)
    torch.save(state.state_dict(), tmp_path / "gan.pt")
    fresh = build_gan(GANConfig(**{**SMALL, "seed": 2}), 2, 1, 16)
    fresh.load_state_dict(torch.load(tmp_path / "gan.pt", weights_only=True))
    assert fresh.step == 3 and fresh.ema.num_updates == 3
    assert fresh.lecam.state_dict() == state.lecam.state_dict() != {"real": 0.0, "fake": 0.0}
    labels = torch.tensor([0, 1, 0, 1])
    for a, b in ((state.G, fresh.G), (state.G_ema, fresh.G_ema)):
        assert torch.equal(generate(a, labels, 0), generate(b, labels, 0))
    x, y = sample(4)
    state.D.eval(), fresh.D.eval()
    assert torch.equal(state.D(x, y), fresh.D(x, y))
    # optimiser state restored: the next step is identical
    torch.manual_seed(9)
    ma = gan_step(state, toy_sampler(5), cfg)
    torch.manual_seed(9)
    mb = gan_step(fresh, toy_sampler(5), cfg)
    assert ma == pytest.approx(mb)


def test_train_gan_checkpoints_reports_and_resumes(tmp_path):
    torch.manual_seed(0)
    cfg = GANConfig(**{**SMALL, "steps": 12})
    state = build_gan(cfg, 2, 1, 16)
    ckpts, reports = [], []

    def on_ckpt(s):
        ckpts.append(s.step)
        torch.save(s.state_dict(), tmp_path / "last.pt")

    last = train_gan(state, toy_sampler(), cfg, reporter=lambda m, st: reports.append(m),
                     on_checkpoint=on_ckpt, log_every=4)
    assert ckpts == [5, 10, 12]
    assert [r["step"] for r in reports] == [4, 8, 12]
    assert {"step", "d_loss", "g_loss", "steps_per_s"} <= set(reports[0]) and last == reports[-1]

    # "crash" after the checkpoint at 12, restart towards 20: only 8 more steps run
    resumed = build_gan(cfg, 2, 1, 16)
    resumed.load_state_dict(torch.load(tmp_path / "last.pt", weights_only=True))
    calls = []
    sample = toy_sampler(1)
    cfg2 = GANConfig(**{**SMALL, "steps": 20})
    train_gan(resumed, lambda n: (calls.append(n), sample(n))[1], cfg2, on_checkpoint=on_ckpt)
    assert len(calls) == 8 and resumed.step == 20 and ckpts[3:] == [15, 20]
    # already finished: nothing runs
    train_gan(resumed, lambda n: (calls.append(n), sample(n))[1], cfg2)
    assert len(calls) == 8


def test_gan_step_under_ddp(tmp_path):
    """World size 1 gloo DDP: forwards/backwards go through the wrappers, EMA/state unwrap them."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        cfg = GANConfig(**SMALL)
        state = build_gan(cfg, 2, 1, 16)
        state.G, state.D = DDP(state.G), DDP(state.D)
        for _ in range(2):
            m = gan_step(state, toy_sampler(), cfg)
        assert state.step == 2 and all(map(lambda v: v == v, m.values()))
        assert unwrap(state.G) is state.G.module
        sd = state.state_dict()
        assert not any(k.startswith("module.") for k in sd["G"])
        out = generate(state.G, torch.tensor([0, 1]), seed=0)
        assert out.shape == (2, 1, 16, 16)
    finally:
        dist.destroy_process_group()


def test_recalibrate_bn_sets_eval_and_stats():
    G = CondGenerator(2, z_dim=8, image_size=16, base_channels=16)
    bn = G.out_bn
    recalibrate_bn(G, torch.randint(0, 2, (64,)), batch_size=16)
    assert not G.training and bn.momentum == 0.1
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_save_grid_png(tmp_path):
    from PIL import Image

    imgs = torch.randint(0, 256, (7, 3, 8, 8), dtype=torch.uint8)
    p = save_grid_png(imgs, tmp_path / "sub" / "grid.png", nrow=3)
    im = Image.open(p)
    assert im.size == (3 * 10 + 2, 3 * 10 + 2) and im.mode == "RGB"
    assert list((tmp_path / "sub").iterdir()) == [p]  # no temp file left behind
    assert torch.equal(torch.from_numpy(__import__("numpy").array(im))[2:10, 2:10].permute(2, 0, 1), imgs[0])
    gray = save_grid_png(imgs[:, :1], tmp_path / "g.png", nrow=10)
    assert Image.open(gray).mode == "L"
    with pytest.raises(ValueError):
        save_grid_png(imgs.float(), tmp_path / "bad.png", nrow=3)


def test_non_finite_gan_loss_stops_at_once():
    """Real images turn NaN from step 3 on: the GAN stops at that step with one message, instead of
    training on (and checkpointing) NaN weights to the end."""
    from rayflow.train.diverged import LossNotFinite

    cfg = GANConfig(**{**SMALL, "steps": 50})
    state = build_gan(cfg, 2, 1, 16)
    sample, calls = toy_sampler(0), []

    def poisoned(n: int):
        calls.append(n)
        x, y = sample(n)
        return (x * float("nan") if len(calls) >= 3 else x), y

    saved = []
    with pytest.raises(LossNotFinite, match=r"^gan: d loss is nan at step 3 \(learning rates too high"):
        train_gan(state, poisoned, cfg, log_every=1000, on_checkpoint=lambda s: saved.append(s.step))
    assert state.step == 3 and saved == []
