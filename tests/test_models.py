import pytest
import torch
from torch import nn

from rayflow.models import build_model, list_models, register

torch.set_num_threads(1)

ALL = list_models()


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registry_has_all_families():
    expected = {
        "resnet8", "resnet14", "resnet20", "resnet32", "resnet56", "resnet110",
        "resnet8x4", "resnet32x4", "resnet_wide", "vgg8", "vgg11", "vgg13",
        "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "mobilenetv2", "shufflenetv2",
        "mlp", "cnn_small",
    }
    assert expected <= set(ALL)
    assert ALL == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("in_ch,size,n_out", [(1, 28, 10), (3, 32, 1), (1, 8, 10)])
def test_shapes_and_features(name, in_ch, size, n_out):
    torch.manual_seed(0)
    m = build_model(name, in_channels=in_ch, image_size=size, num_outputs=n_out).eval()
    x = torch.randn(2, in_ch, size, size)
    with torch.no_grad():
        out = m(x)
        out2, feats = m(x, return_features=True)
    assert isinstance(out, torch.Tensor) and out.shape == (2, n_out)
    assert torch.allclose(out, out2)
    assert isinstance(feats, list) and len(feats) >= 1
    assert all(isinstance(f, torch.Tensor) and f.shape[0] == 2 for f in feats)
    assert feats[-1].shape == (2, m.feature_dim)
    assert torch.isfinite(out).all()


def test_param_counts():
    assert n_params(build_model("mlp", in_channels=1, image_size=28, num_outputs=10)) == 204_042
    assert n_params(build_model("cnn_small")) == 44_274
    r8, r20, r56 = (n_params(build_model(f"resnet{d}")) for d in (8, 20, 56))
    assert r8 < r20 < r56
    assert 600_000 <= n_params(build_model("resnet_wide")) <= 750_000
    assert n_params(build_model("resnet8x4")) > n_params(build_model("resnet8"))


def test_kwargs_change_the_net():
    assert n_params(build_model("mlp", hidden=[64, 32])) == 784 * 64 + 64 + 128 + 64 * 32 + 32 + 64 + 32 * 10 + 10
    wide = build_model("resnet_wide", widths=[8, 16, 32])
    assert wide.feature_dim == 32 and len(wide.groups) == 2
    assert n_params(build_model("mobilenetv2", width_mult=1.0)) > n_params(build_model("mobilenetv2"))
    assert n_params(build_model("shufflenetv2", net_size=0.5)) < n_params(build_model("shufflenetv2"))


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="resnet8"):
        build_model("resnet9000")


def test_bad_kwargs():
    with pytest.raises(ValueError, match=r"resnet20.*depth"):
        build_model("resnet20", depth=7)
    with pytest.raises(ValueError, match=r"mlp.*width_mult"):
        build_model("mlp", width_mult=2)
    with pytest.raises(ValueError, match="shufflenetv2"):
        build_model("shufflenetv2", net_size=0.7)


def test_register_custom_and_duplicate():
    with pytest.raises(ValueError):
        register("mlp")(lambda in_channels, image_size, num_outputs: None)

    name = "_test_linear"
    if name not in list_models():
        @register(name)
        def _build(in_channels, image_size, num_outputs):
            return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_outputs))

    m = build_model(name, image_size=4, num_outputs=3)
    assert m(torch.zeros(2, 1, 4, 4)).shape == (2, 3)


def test_tiny_model_overfits():
    torch.manual_seed(0)
    x = torch.randn(32, 1, 28, 28)
    y = torch.randint(0, 10, (32,))
    m = build_model("cnn_small")
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
