"""The KD loss zoo, method by method: direction, minimum, gradient routing, shapes, training, refusals.

Synthetic features stand in for models where the property is about the loss itself; real zoo
models (1x16x16 inputs) check that the shape adapters fit every family pair.
"""

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from rayflow.kd import (ATConfig, CRDConfig, Criterion, FitNetConfig, KDConfig, KDConfigError, KDMethodUnavailable,
                        build_criterion, build_method, list_methods, method_config)
from rayflow.models import build_model
from rayflow.train.tasks import Task

CLS, REG = Task.of(10), Task.of(None)
FEATURE_METHODS = ["fitnet", "at", "sp", "vid", "rkd", "pkt", "crd"]
PARAM_FREE = ["at", "sp", "rkd", "pkt"]
# a stem, two stage maps and the pooled embedding: the layout of the zoo's CNNs
SHAPES = [(4, 8, 8), (8, 8, 8), (16, 4, 4), (16,)]
N = 12


@pytest.fixture(autouse=True, scope="module")
def _threads(one_thread):
    yield


def feats(seed: int, n: int = N, shapes=SHAPES, signed: bool = False) -> list[torch.Tensor]:
    """Non-negative like post-ReLU features, or zero-mean (`signed`)."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn if signed else torch.rand)(n, *s, generator=g) for s in shapes]


def only_method(name: str, task=CLS, s_feats=None, t_feats=None, num_samples=64, **fields) -> Criterion:
    """A Criterion whose loss is this one method (gamma = alpha = 0, weight 1)."""
    if name == "crd":
        fields = {"nce_k": 16, **fields}
    cfg = method_config(name, weight=1.0, **fields)
    mod = build_method(cfg, s_feats or feats(0), t_feats or feats(1), task=task, num_samples=num_samples)
    return Criterion(KDConfig(alpha=0, gamma=0, methods=[cfg]), task, [(name, 1.0, mod)])


def batch_for(t_feats, n=N, task=CLS, seed=5):
    g = torch.Generator().manual_seed(seed)
    k = task.num_outputs
    y = torch.randint(0, 10, (n,), generator=g) if task is CLS else torch.rand(n, generator=g)
    return torch.randn(n, k, generator=g), torch.randn(n, k, generator=g), y, torch.arange(n)


def identity_adapters(crit: Criterion) -> None:
    """Square 1x1 convs -> identity and eval mode (BN = identity with fresh statistics), so a learned
    adapter passes the student feature through and the loss measures the student-teacher gap."""
    for m in crit.modules():
        if isinstance(m, nn.Conv2d):
            assert m.weight.shape[2:] == (1, 1) and m.in_channels == m.out_channels
            m.weight.data = torch.eye(m.out_channels).view(m.out_channels, m.out_channels, 1, 1)
            if m.bias is not None:
                m.bias.data.zero_()
    crit.eval()


def interpolate(crit, rand, teach, task=CLS, idx=None) -> list[float]:
    """Loss of s = (1-t) * random + t * teacher over t in [0, 1] on one fixed batch."""
    s_out0, t_out, y, idx0 = batch_for(teach, n=len(teach[0]), task=task)
    out = []
    for t in torch.linspace(0, 1, 6):
        s = [(1 - t) * r + t * f for r, f in zip(rand, teach)]
        s_out = (1 - t) * s_out0 + t * t_out
        torch.manual_seed(0)  # CRD: the same negatives at every t
        with torch.no_grad():
            out.append(float(crit((s_out, s), (t_out, teach), y, index=idx0 if idx is None else idx)))
    return out


@pytest.mark.parametrize("name", ["blkd", "fitnet", "at", "sp", "vid", "rkd", "pkt"])
def test_loss_decreases_as_student_approaches_teacher(name):
    crit = only_method(name)
    if name in ("fitnet", "vid"):
        identity_adapters(crit)
    losses = interpolate(crit, feats(0), feats(1))
    assert all(a > b for a, b in zip(losses, losses[1:])), losses
    if name in PARAM_FREE or name == "blkd":  # no learned adapter: minimal (0) at equality
        assert losses[-1] < 1e-6 * max(losses[0], 1e-3) + 1e-7, losses


def test_crd_loss_decreases_as_student_embedding_approaches_teacher():
    """Identity projections, orthonormal teacher embeddings and a random part orthogonal to all of
    them: the negatives' scores stay fixed, so only the positive pair moves, and it must pull."""
    q = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(0)))[0]
    teach, rand = [q[:N]], [q[N:2 * N]]
    crit = only_method("crd", s_feats=teach, t_feats=teach, num_samples=N, feat_dim=32)
    for embed in (crit.methods["crd"].embed_s, crit.methods["crd"].embed_t):
        embed.linear.weight.data, embed.linear.bias.data = torch.eye(32), torch.zeros(32)
    s_out, t_out, y, idx = batch_for(teach)
    for _ in range(20):  # the bank learns the embeddings (momentum 0.5)
        crit((s_out, teach), (t_out, teach), y, index=idx)
    losses = interpolate(crit.eval(), rand, teach)
    assert all(a > b for a, b in zip(losses, losses[1:])), losses


def test_blkd_regression_is_squared_error_to_teacher():
    losses = interpolate(only_method("blkd", REG), feats(0), feats(1), task=REG)
    assert all(a > b for a, b in zip(losses, losses[1:])) and losses[-1] < 1e-10, losses


@pytest.mark.parametrize("name", PARAM_FREE)
def test_parameter_free_methods_are_zero_at_equality_and_positive_otherwise(name):
    crit = only_method(name)
    s_out, t_out, y, idx = batch_for(feats(1))
    same = float(crit((s_out, feats(1)), (t_out, feats(1)), y))
    other = float(crit((s_out, feats(0)), (t_out, feats(1)), y))
    assert abs(same) < 1e-6 and other > 1e-4, (same, other)


@pytest.mark.parametrize("task", [CLS, REG], ids=["classification", "regression"])
@pytest.mark.parametrize("name", ["blkd", *FEATURE_METHODS])
def test_gradients_reach_student_and_loss_parameters_never_teacher(name, task):
    s = [f.clone().requires_grad_() for f in feats(0)]
    t = [f.clone().requires_grad_() for f in feats(1)]
    s_out, t_out, y, idx = batch_for(t, task=task)
    s_out.requires_grad_(), t_out.requires_grad_()
    crit = only_method(name, task).train()
    crit((s_out, s), (t_out, t), y, index=idx).backward()
    assert all(x.grad is None for x in [*t, t_out]), "gradient reached the teacher"
    student_grads = [x.grad for x in [*s, s_out] if x.grad is not None]
    assert student_grads and any(g.abs().sum() > 0 for g in student_grads)
    own = [p for p in crit.parameters()]
    assert (len(own) > 0) == (name in ("fitnet", "vid", "crd"))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own), name


PAIRS = [  # (student, teacher): MLP vs conv, conv vs MLP, families, widths and spatial sizes apart
    ("mlp", "resnet8"), ("resnet8", "mlp"), ("cnn_small", "resnet8"), ("resnet8", "vgg8"),
    ("resnet8", "wrn_16_1"), ("shufflenetv2", "resnet8x4"), ("mobilenetv2", "resnet_wide"),
]


def _zoo(name):
    torch.manual_seed(0)
    kw = {"hidden": (32,)} if name == "mlp" else {}
    return build_model(name, in_channels=1, image_size=16, num_outputs=10, **kw)


@pytest.mark.parametrize("student,teacher", PAIRS)
def test_methods_fit_real_zoo_pairs(student, teacher):
    s, t = _zoo(student), _zoo(teacher)
    has_maps = "mlp" not in (student, teacher)
    names = [m for m in FEATURE_METHODS if has_maps or m != "at"]
    cfg = KDConfig(alpha=0.5, methods=[{"method": m, "nce_k": 32} if m == "crd" else {"method": m} for m in names])
    crit = build_criterion(cfg, CLS, student=s, teacher=t, input_shape=(1, 16, 16), num_samples=40)
    t.eval()
    x, y = torch.randn(6, 1, 16, 16), torch.randint(0, 10, (6,))
    loss = crit(s(x, return_features=True), crit.run_teacher(t, x), y, index=torch.arange(6) + 30)
    loss.backward()
    assert torch.isfinite(loss) and set(crit.last_terms) == {"task", "kd", *names}
    assert all(p.grad is not None for p in crit.parameters())
    assert all(p.grad is None for p in t.parameters())
    assert sum(float(p.grad.abs().sum()) for p in s.parameters() if p.grad is not None) > 0


def _tiny(widths, seed):
    torch.manual_seed(seed)
    return build_model("cnn_small", in_channels=1, image_size=8, num_outputs=10, widths=widths)


# Final loss / early peak each method must reach. CRD is an NCE loss whose floor on 32 samples
# sits well above 0 (its first steps also rise while the memory bank fills with real embeddings);
# VID is a Gaussian NLL, started at variance 1 here so that its log-variance constant is 0.
TRAIN_RATIO = {"fitnet": 0.3, "at": 0.1, "sp": 0.1, "vid": 0.5, "rkd": 0.3, "pkt": 0.3, "crd": 0.85}
TRAIN_FIELDS = {"vid": {"init_pred_var": 1.0}, "crd": {"nce_k": 16}}


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_method_only_training_reduces_the_loss(name):
    """A tiny student trained on the method's loss alone (Adam, fixed batch) gets closer to the teacher."""
    student, teacher = _tiny((4, 8), 0), _tiny((8, 16), 1).eval()
    cfg = KDConfig(alpha=0, gamma=0, methods=[method_config(name, weight=1.0, **TRAIN_FIELDS.get(name, {}))])
    crit = build_criterion(cfg, CLS, student=student, teacher=teacher, input_shape=(1, 8, 8), num_samples=32)
    g = torch.Generator().manual_seed(0)
    x, y, idx = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g), torch.arange(32)
    t = crit.run_teacher(teacher, x)
    opt = torch.optim.Adam([*student.parameters(), *crit.parameters()], lr=1e-2)
    losses = []
    for _ in range(150):
        loss = crit(student(x, return_features=True), t, y, index=idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    peak, last = max(losses[:30]), sum(losses[-10:]) / 10
    assert last < TRAIN_RATIO[name] * peak, (name, peak, last)


# ------------------------------------------------------------------------------------------ refusals

def test_unknown_method_names_itself_and_the_known_ones():
    with pytest.raises(ValidationError) as e:
        KDConfig.model_validate({"methods": [{"method": "fitnett"}]})
    msg = str(e.value)
    assert "'fitnett'" in msg and "known methods: " + ", ".join(list_methods()) in msg
    with pytest.raises(KDConfigError, match="unknown KD method 'nope'; known methods: blkd, fitnet"):
        method_config("nope")


@pytest.mark.parametrize("name,says", [("sskd", "SSKD is not implemented"),
                                       ("takd", "TAKD is not a loss: it is a chain of training stages")])
def test_sskd_and_takd_are_refused_as_losses(name, says):
    with pytest.raises(ValidationError, match=says) as e:
        KDConfig(methods=[{"method": name}])
    assert "implemented KD methods: blkd, fitnet, at, sp, vid, rkd, pkt, crd" in str(e.value)
    with pytest.raises(NotImplementedError, match=says):
        method_config(name)
    with pytest.raises(KDMethodUnavailable, match=says):
        build_method(name, feats(0), feats(1), task=CLS)


def test_feature_map_method_on_mlp_names_method_model_and_what_is_missing():
    mlp, conv = _zoo("mlp"), _zoo("resnet8")
    with pytest.raises(KDConfigError, match=r"at: needs \(N,C,H,W\) feature maps.*student 'mlp' has only vector"):
        build_criterion(KDConfig(methods=[ATConfig()]), CLS, student=mlp, teacher=conv, input_shape=(1, 16, 16),
                        student_name="mlp", teacher_name="resnet8")
    with pytest.raises(KDConfigError, match="teacher 'MLP' has only vector"):  # default name: the class
        build_criterion(KDConfig(methods=[ATConfig()]), CLS, student=conv, teacher=mlp, input_shape=(1, 16, 16))
    with pytest.raises(KDConfigError, match="fitnet: cannot regress between a feature map and a vector"):
        build_method(FitNetConfig(student_layer=-1, teacher_layer=2), feats(0, shapes=[(32,)]), feats(1), task=CLS)
    with pytest.raises(KDConfigError, match=r"fitnet: layer 5 does not exist in student 'student'.*\(N,32\)"):
        build_method(FitNetConfig(student_layer=5), feats(0, shapes=[(32,)]), feats(1), task=CLS)


def test_regression_incompatible_settings_are_refused_at_build():
    with pytest.raises(KDConfigError, match="crd: negatives='other_class' needs classes, but the task is regression"):
        build_method(CRDConfig(negatives="other_class"), feats(0), feats(1), task=REG, num_samples=64)
    with pytest.raises(KDConfigError, match="crd: needs num_samples"):
        build_method(CRDConfig(), feats(0), feats(1), task=CLS)
    # the feature methods themselves apply to a scalar output
    for name in ["blkd", *FEATURE_METHODS]:
        build_method(name, feats(0), feats(1), task=REG, num_samples=64)


def test_weight_settings_are_checked():
    with pytest.raises(ValidationError, match="negative for alpha=1.5; set gamma"):
        KDConfig(alpha=1.5)
    KDConfig(alpha=1.5, gamma=1.0)
    with pytest.raises(ValidationError, match="'blkd' repeats the Hinton term"):
        KDConfig(alpha=0.5, methods=[{"method": "blkd"}])
