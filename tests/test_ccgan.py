"""CcGAN (continuous labels in [0, 1]) on the shared GAN code: vicinity rules, embeddings, training.
CPU, small nets; the whole file runs in well under a minute."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rayflow.config import GANConfig
from rayflow.data.transforms import to_uint8
from rayflow.gan import (
    LabelMLP, ProjectionDiscriminator, SinusoidalEmbedding, VicinalSampler, Vicinity, build_gan, fit_y2h,
    gan_step, generate, resolve_vicinity, rule_of_thumb, train_gan, vicinal_weights,
)
from rayflow.gan.generator import GeneratorSpec


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


SMALL = dict(z_dim=16, g_channels=16, d_channels=16, batch_size=16, steps=10, checkpoint_every=5,
             embed_dim=16, diffaugment="translation")


def toy_set(n: int = 400, size: int = 16, seed: int = 0):
    """uint8 images whose brightness encodes y ~ U[0, 1]: pixel ~ 0.8 (2y - 1) + noise in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, generator=g)
    x = (0.8 * (2 * y - 1)).view(n, 1, 1, 1) + 0.15 * torch.randn(n, 1, size, size, generator=g)
    return to_uint8(x.clamp(-1, 1)).numpy(), y.numpy()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


# ---------------------------------------------------------------- vicinity rules

def test_vicinal_weights_hand_cases():
    labels = torch.tensor([0.0, 0.1, 0.2, 0.5], dtype=torch.float64)
    hard = Vicinity("hard", kappa=0.1, sigma=0.0)
    # target 0.12: distances 0.12, 0.02, 0.08, 0.38 -> only 0.1 and 0.2 are within kappa
    assert vicinal_weights(labels, 0.12, hard).tolist() == [0.0, 1.0, 1.0, 0.0]
    assert vicinal_weights(labels, 0.0, hard).tolist() == [1.0, 1.0, 0.0, 0.0]  # |d| = kappa counts
    soft = Vicinity("soft", kappa=0.1, sigma=0.0)  # nu = 100
    assert soft.nu == pytest.approx(100.0)
    w = vicinal_weights(labels, 0.12, soft)
    # exp(-100 d^2): 0.0144 -> e^-1.44, 0.0004 -> e^-0.04, 0.0064 -> e^-0.64; 0.1444 -> 5e-7 < 1e-3 -> 0
    assert w.tolist() == pytest.approx([math.exp(-1.44), math.exp(-0.04), math.exp(-0.64), 0.0])
    # broadcasting: a (reals x targets) weight matrix
    m = vicinal_weights(labels[:, None], torch.tensor([0.12, 0.45], dtype=torch.float64)[None], soft)
    # target 0.45: d^2 0.2025, 0.1225, 0.0625, 0.0025 -> e^-20.25 and e^-12.25 < 1e-3 are cut, e^-6.25 is kept
    assert m.shape == (4, 2) and m[:, 1].tolist() == pytest.approx([0, 0, math.exp(-6.25), math.exp(-0.25)])
    # the soft radius is where the weight falls to the 1e-3 cutoff
    assert soft.radius == pytest.approx(0.1 * math.sqrt(math.log(1000)))
    assert hard.radius == 0.1


def test_rule_of_thumb_hand_example():
    labels = [0.2, 0.2, 0.3, 0.6]  # distinct 0.2, 0.3, 0.6 -> gaps 0.1, 0.3; mean 0.325
    kappa, sigma = rule_of_thumb(labels, kappa_mult=2.0)
    var = (2 * 0.125 ** 2 + 0.025 ** 2 + 0.275 ** 2) / 4  # population variance, as np.std
    assert kappa == pytest.approx(0.6)
    assert sigma == pytest.approx(1.06 * math.sqrt(var) * 4 ** (-0.2))
    assert rule_of_thumb(labels, kappa_mult=5.0)[0] == pytest.approx(1.5)
    # config: rule of thumb by default, overrides win, one distinct label needs an explicit kappa
    v = resolve_vicinity(labels, GANConfig(vicinal="hard"))
    assert (v.kind, v.kappa, v.sigma) == ("hard", pytest.approx(0.6), pytest.approx(sigma))
    v = resolve_vicinity(labels, GANConfig(kappa=0.05, sigma=0.0))
    assert (v.kind, v.kappa, v.sigma, v.nu) == ("soft", 0.05, 0.0, pytest.approx(400.0))
    with pytest.raises(ValueError, match="kappa"):
        resolve_vicinity([0.3, 0.3], GANConfig())
    assert resolve_vicinity([0.3, 0.3], GANConfig(kappa=0.1)).sigma == 0.0


def test_sampler_draws_vicinal_batches():
    labels = np.array([0.0, 0.02, 0.5, 0.51, 0.52, 1.0], dtype=np.float32)
    images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1).repeat(8, 2).repeat(8, 3)
    for kind in ("hard", "soft"):
        s = VicinalSampler(images, labels, Vicinity(kind, kappa=0.03, sigma=0.2))
        torch.manual_seed(0)
        x, y, t, y_fake = s.d_batch(2000)
        assert x.dtype == torch.uint8 and x.shape == (2000, 1, 8, 8)
        assert torch.equal(torch.from_numpy(labels)[x[:, 0, 0, 0].long()], y)  # image i has label i
        r = s.vicinity.radius + 1e-6
        # sigma >> gaps: epsilon was redrawn until each target had a real within its vicinity
        assert ((y - t).abs() <= r).all() and ((y_fake - t).abs() <= r).all()
        assert y_fake.min() >= 0 and y_fake.max() <= 1
        w = vicinal_weights(y, t, s.vicinity)
        assert (w > 0).all() and (w.eq(1).all() if kind == "hard" else (w < 1).any())
        tg = s.targets(500)
        assert tg.dtype == torch.float32 and tg.min() >= 0 and tg.max() <= 1 and tg.std() > 0.1
    # sigma = 0: targets are the distinct labels (uniformly), reals uniform within the window
    s = VicinalSampler(images, labels, Vicinity("hard", kappa=0.015, sigma=0.0))
    torch.manual_seed(1)
    _, y, t, _ = s.d_batch(6000)
    assert set(t.tolist()) == set(labels.tolist())
    near = y[t == labels[3]]  # 0.51: window [0.495, 0.525] holds 0.5, 0.51, 0.52 equally often
    counts = torch.stack([(near == v).sum() for v in torch.from_numpy(labels[2:5])]).float()
    assert counts.sum() == len(near) and (counts / counts.mean() - 1).abs().max() < 0.15
    x, y = s(5)  # plain SampleReal use
    assert x.shape == (5, 1, 8, 8) and y.dtype == torch.float32
    with pytest.raises(ValueError):
        VicinalSampler(images, labels * 2, s.vicinity)


# ---------------------------------------------------------------- networks

@pytest.mark.parametrize("kind", ["mlp", "sinusoidal"])
def test_forward_shapes_with_float_labels(kind):
    cfg = GANConfig(**{**SMALL, "label_embedding": kind})
    st = build_gan(cfg, None, 3, 16)
    assert st.G.num_classes is None and st.D.num_classes is None
    y = torch.tensor([0.0, 0.3, 0.31, 1.0])
    x = st.G(torch.randn(4, 16), y)
    assert x.shape == (4, 3, 16, 16) and x.abs().max() <= 1
    assert st.D(x, y).shape == (4,)
    emb = st.G.label_embedding
    assert isinstance(emb, LabelMLP if kind == "mlp" else SinusoidalEmbedding) and emb(y).shape == (4, 16)
    assert st.D.label_embedding(y).shape == (4, ProjectionDiscriminator.feature_dim(16, 16))
    # the label matters: same z, different y -> different images and logits
    st.G.eval(), st.D.eval()
    z = torch.randn(2, 16)
    a, b = st.G(z, torch.tensor([0.1, 0.1])), st.G(z, torch.tensor([0.9, 0.9]))
    assert not torch.allclose(a, b) and not torch.allclose(st.D(a, torch.full((2,), 0.1)), st.D(a, torch.full((2,), 0.9)))
    # the spec rebuilds the same architecture (artifact / synth path): EMA weights load strictly
    G2 = GeneratorSpec.of(cfg, None, 3, 16)()
    G2.load_state_dict(st.ema.state_dict()["model"])
    # class-conditional specs ignore the CcGAN fields
    assert type(GeneratorSpec.of(cfg, 5, 3, 16)().label_embedding) is torch.nn.Embedding


def test_continuous_needs_embedding_and_vicinal_sampler():
    from rayflow.gan import CondGenerator

    with pytest.raises(ValueError):
        CondGenerator(None, image_size=16)
    with pytest.raises(ValueError):
        ProjectionDiscriminator(None, image_size=16)
    st = build_gan(GANConfig(**SMALL), None, 1, 16)
    with pytest.raises(TypeError, match="VicinalSampler"):
        gan_step(st, lambda n: (torch.zeros(n, 1, 16, 16), torch.rand(n)), GANConfig(**SMALL))


@pytest.mark.parametrize("kind,vic", [("mlp", "soft"), ("sinusoidal", "hard")])
def test_steps_are_finite_and_gradients_reach_the_embedding(kind, vic):
    torch.manual_seed(0)
    cfg = GANConfig(**{**SMALL, "label_embedding": kind, "vicinal": vic, "n_dis": 2, "lecam": 0.3,
                       "diffaugment": "color,translation,cutout"})
    imgs, ys = toy_set(200)
    s = VicinalSampler.from_config(imgs, ys, cfg)
    st = build_gan(cfg, None, 1, 16)
    g_emb = [p.detach().clone() for p in st.G.label_embedding.parameters()]
    d_emb = [p.detach().clone() for p in st.D.label_embedding.parameters()]
    for _ in range(3):
        m = gan_step(st, s, cfg)
        assert all(isinstance(v, float) and math.isfinite(v) for v in m.values()), m
    assert st.step == 3 and st.lecam.state_dict() != {"real": 0.0, "fake": 0.0}
    assert all(p.requires_grad for p in st.D.parameters())
    # D's label side (embedding and/or its SN projection) learnt from the vicinal D loss
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in st.D.label_embedding.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(d_emb, st.D.label_embedding.parameters()))
    if kind == "mlp":  # G's own y2h learnt from the G loss (sinusoidal has no weights)
        assert all(p.grad is not None for p in st.G.label_embedding.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(g_emb, st.G.label_embedding.parameters()))
    else:
        assert not g_emb
        assert st.G.blocks[0].bn1.gain.weight.grad.abs().sum() > 0  # CBN reads the sin/cos features


def test_pretrained_y2h_is_frozen_and_shared():
    torch.manual_seed(0)
    h2y = torch.nn.Sequential(torch.nn.Linear(16, 1), torch.nn.ReLU())  # a regression net's head
    torch.nn.init.uniform_(h2y[0].weight, 0.0, 0.2)
    y2h = fit_y2h(LabelMLP(16), h2y, torch.rand(100), steps=300, batch_size=64)
    grid = torch.linspace(0.05, 0.95, 19)
    assert (h2y(y2h(grid)).flatten() - grid).abs().mean() < 0.05  # h2y(y2h(y)) ~ y (measured 0.017)
    cfg = GANConfig(**SMALL)
    st = build_gan(cfg, None, 1, 16, y2h=y2h)
    s = VicinalSampler.from_config(*toy_set(100), cfg)
    gan_step(st, s, cfg)
    for emb in (st.G.label_embedding, st.D.label_embedding.embed, st.G_ema.label_embedding):
        assert all(not p.requires_grad for p in emb.parameters())
        assert all(torch.equal(a, b) for a, b in zip(emb.state_dict().values(), y2h.state_dict().values()))
    assert st.D.label_embedding.proj.parametrizations.weight.original.requires_grad
    with pytest.raises(ValueError):
        build_gan(GANConfig(**{**SMALL, "label_embedding": "sinusoidal"}), None, 1, 16, y2h=y2h)


def test_vicinal_training_resumes_bit_for_bit(tmp_path):
    cfg = GANConfig(**{**SMALL, "steps": 6})
    s = VicinalSampler.from_config(*toy_set(100), cfg)
    full = build_gan(cfg, None, 1, 16)
    train_gan(full, s, cfg, log_every=100)
    part = build_gan(cfg, None, 1, 16)
    train_gan(part, s, GANConfig(**{**SMALL, "steps": 3}), log_every=100)
    torch.save(part.state_dict(), tmp_path / "s.pt")
    resumed = build_gan(cfg, None, 1, 16)
    resumed.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    train_gan(resumed, s, cfg, log_every=100)
    for k, v in full.state_dict()["G"].items():
        assert torch.equal(v, resumed.state_dict()["G"][k]), k


def test_toy_ccgan_follows_the_label():
    """16x16 images whose brightness is 0.8 (2y - 1): after 120 seeded CcGAN steps (SVDL, the y2h
    MLP trained jointly, rule-of-thumb kappa/sigma) the EMA generator's brightness must rank like the
    conditioning label. At init the Spearman correlation is about -0.15; measured after training:
    about 0.97 (~5 s on one CPU thread)."""
    torch.manual_seed(0)
    cfg = GANConfig(**{**SMALL, "batch_size": 32, "steps": 120, "lr_g": 5e-4, "lr_d": 5e-4, "embed_dim": 32})
    s = VicinalSampler.from_config(*toy_set(400), cfg)
    st = build_gan(cfg, None, 1, 16)
    train_gan(st, s, cfg, log_every=1000)
    labels = torch.linspace(0, 1, 200)
    bright = (generate(st.G_ema, labels, seed=1).float() / 127.5 - 1).mean(dim=(1, 2, 3))
    rho = spearman(labels, bright)
    assert rho > 0.5, rho
    assert bright[150:].mean() - bright[:50].mean() > 0.5  # and the effect is large, not just ordered
