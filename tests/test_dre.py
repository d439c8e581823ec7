"""cDR-RS numeric core on toy Gaussians where the true density ratio is known.

p(x | y) = N(mu_y, I), q(x | y) = N(mu_y + delta, 1.5^2 I) in 2-D; features are the points themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from rayflow.config import DREConfig
from rayflow.dre import RatioMLP, RejectionSampler, build_ratio_net, estimate_max, ratio_scores, sp_loss, train_ratio_net

MU = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
DELTA = torch.tensor([1.0, 0.5])
SIGMA_Q = 1.5


def make_samplers(seed: int):
    g = torch.Generator().manual_seed(seed)

    def real(n):
        y = torch.randint(0, 2, (n,), generator=g)
        return MU[y] + torch.randn(n, 2, generator=g), y

    def fake(y):
        return MU[y] + DELTA + SIGMA_Q * torch.randn(len(y), 2, generator=g)

    return real, fake, g


def true_ratio(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    a = x - MU[y]
    b = a - DELTA
    return SIGMA_Q**2 * torch.exp(-(a**2).sum(1) / 2 + (b**2).sum(1) / (2 * SIGMA_Q**2))


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


TOY_CFG = DREConfig(steps=300, batch_size=256, lr=2e-3, penalty=0.01, hidden=[32, 32], seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    net = build_ratio_net(TOY_CFG, feature_dim=2, num_classes=2, dropout=0.0)
    real, fake, _ = make_samplers(0)
    reports = []
    train_ratio_net(net, real, fake, TOY_CFG, reporter=lambda m, s: reports.append((m, s)))
    return net, reports


@pytest.fixture(scope="module")
def fresh_fakes():
    _, fake, g = make_samplers(123)
    y = torch.randint(0, 2, (20000,), generator=g)
    return fake(y), y


# ----------------------------------------------------------------------------- SP loss


def _discrete_problem():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.3, 0.5])
    # "samples" = atoms repeated in proportion to their probability (exact expectations)
    real_idx = torch.repeat_interleave(torch.arange(3), (p * 100).round().long())
    fake_idx = torch.repeat_interleave(torch.arange(3), (q * 100).round().long())
    return p, q, real_idx, fake_idx


@pytest.mark.parametrize("penalty", [0.0, 0.01, 1.0])
def test_sp_loss_minimiser_is_p_over_q(penalty):
    p, q, real_idx, fake_idx = _discrete_problem()
    r = torch.ones(3, requires_grad=True)
    opt = torch.optim.LBFGS([r], lr=1, max_iter=200, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = sp_loss(r[real_idx], r[fake_idx], penalty)
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(r.detach(), p / q, atol=5e-3, rtol=0)


def test_sp_loss_pointwise_gradient():
    p, q, real_idx, fake_idx = _discrete_problem()
    r = torch.tensor([0.3, 1.7, 4.0], requires_grad=True)
    sp_loss(r[real_idx], r[fake_idx], 0.0).backward()
    s = torch.sigmoid(r.detach())
    torch.testing.assert_close(r.grad, s * (1 - s) * (q * r.detach() - p))


def test_sp_loss_penalty_term():
    rr, rf = torch.rand(7) * 3, torch.rand(11) * 3
    diff = sp_loss(rr, rf, 0.5) - sp_loss(rr, rf, 0.0)
    torch.testing.assert_close(diff, 0.5 * (rf.mean() - 1) ** 2)
    with pytest.raises(ValueError, match="penalty"):
        sp_loss(rr, rf, -1.0)


# ----------------------------------------------------------------------------- network


def test_ratio_mlp_architecture_and_output():
    net = RatioMLP(10, 4, hidden=[32, 16], dropout=0.5)
    assert isinstance(net.label_embedding, nn.Embedding)
    assert net.label_embedding.weight.shape == (4, 4)
    kinds = [type(m) for m in net.body]
    assert kinds == [nn.Linear, nn.GroupNorm, nn.ReLU, nn.Dropout, nn.Linear, nn.GroupNorm, nn.ReLU, nn.Dropout,
                     nn.Linear, nn.ReLU]
    assert net.body[0].in_features == 14 and net.body[1].num_groups == 8
    net.eval()
    out = net(torch.randn(33, 10) * 5, torch.randint(0, 4, (33,)))
    assert out.shape == (33,) and (out >= 0).all()
    with pytest.raises(ValueError, match="features of size 10"):
        net(torch.randn(3, 9), torch.zeros(3, dtype=torch.long))


def test_ratio_mlp_continuous_label_embedding():
    class Y2H(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 6)

        def forward(self, y):
            return self.lin(y.float().view(-1, 1))

    with pytest.raises(ValueError, match="label_dim"):
        RatioMLP(5, None, hidden=[8], label_embedding=Y2H())
    net = RatioMLP(5, None, hidden=[8], label_embedding=Y2H(), label_dim=6)
    assert net(torch.randn(4, 5), torch.rand(4)).shape == (4,)
    net2 = RatioMLP(5, None, hidden=[8], label_embedding=nn.Sequential(nn.Unflatten(0, (-1, 1)), nn.Linear(1, 3)),
                    label_dim=3)
    assert net2(torch.randn(4, 5), torch.rand(4)).shape == (4,)
    lin = nn.Linear(1, 7)
    assert RatioMLP(5, None, hidden=[8], label_embedding=lin).label_dim == 7


def test_build_ratio_net_uses_cfg_hidden():
    net = build_ratio_net(DREConfig(hidden=[24, 16]), feature_dim=3, num_classes=2)
    assert [m.out_features for m in net.body if isinstance(m, nn.Linear)] == [24, 16, 1]


# ----------------------------------------------------------------------------- training


def test_learned_ratio_ranks_like_true_ratio(trained, fresh_fakes):
    net, _ = trained
    x, y = fresh_fakes
    r = ratio_scores(net, x, y, batch_size=4096)
    tr = true_ratio(x, y)
    for c in (0, 1):
        m = y == c
        rho = spearmanr(r[m].numpy(), tr[m].numpy()).statistic
        print(f"class {c}: spearman={rho:.4f}")
        assert rho > 0.8, f"class {c}: Spearman {rho:.3f}"


def test_learned_ratio_is_normalised_under_q(trained, fresh_fakes):
    net, _ = trained
    x, y = fresh_fakes
    r = ratio_scores(net, x, y)
    for c in (0, 1):
        mean = float(r[y == c].mean())
        assert abs(mean - 1.0) < 0.3, f"class {c}: E_q[r] = {mean:.3f}"
    # and real samples get larger ratios than fakes on average (E_p[r] = E_q[r^2] > 1)
    real, _, _ = make_samplers(7)
    xr, yr = real(4000)
    assert float(ratio_scores(net, xr, yr).mean()) > float(r.mean()) + 0.3


def test_reporter_and_eval_mode(trained):
    net, reports = trained
    assert not net.training
    assert [m["step"] for m, _ in reports] == list(range(30, 301, 30))
    assert all(s is None for _, s in reports)
    assert all(np.isfinite(m["loss"]) for m, _ in reports)
    assert reports[-1][0]["mean_r_real"] > reports[-1][0]["mean_r_fake"]


def test_training_is_deterministic_given_seed():
    cfg = DREConfig(steps=15, batch_size=32, lr=1e-3, hidden=[16], seed=3)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        net = RatioMLP(2, 2, hidden=[16], dropout=0.5)
        real, fake, _ = make_samplers(1)
        state = torch.get_rng_state()
        train_ratio_net(net, real, fake, cfg)
        assert torch.equal(torch.get_rng_state(), state)  # caller's RNG untouched
        weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_ratio_scores_restores_mode_and_matches_forward():
    net = RatioMLP(2, 2, hidden=[16], dropout=0.5).train()
    x, y = torch.randn(50, 2), torch.randint(0, 2, (50,))
    r = ratio_scores(net, x, y, batch_size=7)
    assert net.training and r.shape == (50,) and not r.requires_grad
    net.eval()
    torch.testing.assert_close(r, net(x, y).detach())


# ----------------------------------------------------------------------------- rejection sampling


def test_acceptance_rate_matches_mean_ratio_over_max(trained, fresh_fakes):
    net, _ = trained
    x, y = fresh_fakes
    r = ratio_scores(net, x, y)
    burn_x, burn_y = x[:2000], y[:2000]
    sampler = RejectionSampler(burnin_max=estimate_max(ratio_scores(net, burn_x, burn_y), burn_y), seed=0)
    acc = sampler.accept(r[2000:], y[2000:])
    for c in (0, 1):
        m = (y[2000:] == c).numpy()
        expected = float(r[2000:][m].mean()) / sampler.max_ratio[c]
        assert sampler.max_ratio[c] >= float(r[2000:][m].max())
        assert abs(acc[m].mean() - expected) < 0.02, (acc[m].mean(), expected)


def test_rejection_sampled_fakes_are_closer_to_real(trained, fresh_fakes):
    net, _ = trained
    x, y = fresh_fakes
    sampler = RejectionSampler(score_fn=lambda f, l: ratio_scores(net, f, l), seed=1)
    sampler.estimate_max(ratio_scores(net, x[:2000], y[:2000]), y[:2000])
    acc = torch.from_numpy(sampler(x[2000:], y[2000:], rng_key=0))
    xs, ys = x[2000:], y[2000:]
    real, _, _ = make_samplers(99)
    for c in (0, 1):
        raw = xs[ys == c][:1500]
        kept = xs[(ys == c) & acc][:1500]
        assert len(kept) >= 1000
        p_samples = MU[c] + torch.randn(1500, 2, generator=torch.Generator().manual_seed(c))
        e_raw, e_kept = energy_distance(raw, p_samples), energy_distance(kept, p_samples)
        d_raw = float((raw.mean(0) - MU[c]).norm())
        d_kept = float((kept.mean(0) - MU[c]).norm())
        print(f"class {c}: energy {e_raw:.3f} -> {e_kept:.3f}, mean offset {d_raw:.3f} -> {d_kept:.3f}")
        assert e_kept < 0.3 * e_raw
        assert d_kept < 0.35 * d_raw


def test_acceptance_is_per_label():
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1, 2], 20000)
    scale = np.array([1.0, 10.0, 100.0])
    r = rng.random(len(y)) * scale[y]
    s = RejectionSampler(burnin_max={0: 1.0, 1: 10.0, 2: 200.0}, seed=0)
    acc = s.accept(r, y, rng_key=0)
    rates = [acc[y == c].mean() for c in range(3)]
    np.testing.assert_allclose(rates, [0.5, 0.5, 0.25], atol=0.015)


def test_rejection_is_deterministic_and_resumable():
    rng = np.random.default_rng(0)
    r = rng.exponential(size=500)
    y = rng.integers(0, 3, size=500)
    a = RejectionSampler(burnin_max=2.0, seed=5)
    b = RejectionSampler(burnin_max=2.0, seed=5)
    m1 = a.accept(r, y, rng_key=(3, 0))
    assert np.array_equal(m1, b.accept(torch.from_numpy(r), torch.from_numpy(y), rng_key=(3, 0)))
    assert not np.array_equal(m1, a.accept(r, y, rng_key=(3, 1)))
    assert not np.array_equal(m1, RejectionSampler(burnin_max=2.0, seed=6).accept(r, y, rng_key=(3, 0)))
    # auto keys: call order determines the draws; a saved state resumes the sequence
    c = RejectionSampler(burnin_max={0: 1.0, 1: 1.0, 2: 1.0}, seed=5)
    first = c.accept(r, y)
    state = c.state_dict()
    import json

    state = json.loads(json.dumps(state))
    second = c.accept(r * 1.5, y)
    resumed = RejectionSampler.from_state(state)
    assert np.array_equal(resumed.accept(r * 1.5, y), second)
    assert resumed.max_ratio == c.max_ratio
    assert not np.array_equal(first, c.accept(r, y))  # next call, next draws


def test_max_is_updated_on_the_fly():
    s = RejectionSampler(burnin_max={0: 1.0, 1: 4.0}, seed=0)
    r = np.array([0.5, 2.0, 1.0, 2.0])
    y = np.array([0, 0, 1, 1])
    acc = s.accept(r, y, rng_key=1)
    assert s.max_ratio == {0: 2.0, 1: 4.0}
    assert acc[1]  # r == M̄ -> accepted with probability 1
    np.testing.assert_allclose(s.acceptance_prob(r, y), [0.25, 1.0, 0.25, 0.5])
    # frozen M̄: ratios above it are accepted, M̄ unchanged
    assert s.accept(np.array([10.0]), np.array([0]), rng_key=2, update_max=False).all()
    assert s.max_ratio[0] == 2.0
    # zero ratio is never accepted
    assert not s.accept(np.zeros(1000), np.zeros(1000, dtype=int), rng_key=3).any()


def test_rejection_errors():
    s = RejectionSampler(seed=0)
    with pytest.raises(ValueError, match="estimate_max"):
        s.accept(np.ones(3), np.zeros(3, dtype=int), update_max=False)
    with pytest.raises(ValueError, match="degenerate"):
        s.accept(np.zeros(3), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="NaN"):
        s.accept(np.array([1.0, np.nan]), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="labels"):
        s.accept(np.ones(3), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="score_fn"):
        s(np.ones((3, 2)), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="seed"):
        RejectionSampler(seed=-1)


def test_continuous_labels_keyed_per_value():
    s = RejectionSampler(seed=0)
    y = np.array([0.25, 0.25, 0.5], dtype=np.float32)
    s.accept(np.array([1.0, 3.0, 2.0]), y)
    assert s.max_ratio == {0.25: 3.0, 0.5: 2.0}
    assert RejectionSampler.from_state(s.state_dict()).max_ratio == s.max_ratio


def test_non_finite_ratio_loss_stops_at_a_check():
    """NaN features: the SP loss is NaN; without a reporter the check runs every steps/10 steps (one
    host sync each), so training stops at the first of them, not after all 300 steps."""
    from rayflow.train.diverged import LossNotFinite

    net = build_ratio_net(TOY_CFG, feature_dim=2, num_classes=2, dropout=0.0)
    real, fake, _ = make_samplers(0)

    def nan_real(n):
        x, y = real(n)
        return x * float("nan"), y

    with pytest.raises(LossNotFinite, match=r"^dre: loss is nan at step 30 "):
        train_ratio_net(net, nan_real, fake, TOY_CFG)
