"""The Criterion around the zoo: today's loss reproduced, teacher-target masks, owned state,
the CRD index contract, and KDConfig as the YAML will hold it."""

import pytest
import torch

from rayflow.kd import CRDConfig, Criterion, FitNetConfig, KDConfig, KDConfigError, build_criterion
from rayflow.models import build_model
from rayflow.train.sources import Batch
from rayflow.train.tasks import Task

CLS, REG = Task.of(10), Task.of(None)


@pytest.fixture(autouse=True, scope="module")
def _threads(one_thread):
    yield


def reference_loss(out, y, t, task, alpha, temperature):
    """The formula of rayflow.train.loop._loss after its forward (kept here: the loop may drop it)."""
    loss = task.loss(out, y)
    if alpha <= 0:
        return loss
    have = ~torch.isnan(t.to(out.dtype)).any(1)
    if not have.any():
        return loss
    return (1 - alpha) * loss + alpha * task.distill(out[have], t.to(out.dtype)[have], temperature)


def _net(name="mlp", n_out=10, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(name, in_channels=1, image_size=8, num_outputs=n_out, **kw).eval()


def _batch(task, n=10, missing=(1, 4)):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g) if task is CLS else torch.rand(n, generator=g)
    t = torch.randn(n, task.num_outputs, generator=g) * 3
    t[list(missing)] = float("nan")
    return Batch(x=x, y=y, t=t)


@pytest.mark.parametrize("task", [CLS, REG], ids=["classification", "regression"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("missing", [(), (1, 4), tuple(range(10))], ids=["all-targets", "some", "none"])
def test_without_methods_it_is_todays_loss(task, alpha, missing):
    model, b = _net(n_out=task.num_outputs), _batch(task, missing=missing)
    out = model(b["x"])
    crit = build_criterion(KDConfig(alpha=alpha, temperature=3.0), task)
    got = crit(out, b["t"], b["y"])
    want = reference_loss(out, b["y"], b["t"], task, alpha, 3.0)
    assert torch.equal(got, want), (float(got), float(want))
    from rayflow.train.loop import _step_loss  # the loop's own call of the criterion

    assert torch.equal(_step_loss(model, b, task, crit, None), want), "the loop's loss differs from the formula"


def test_online_teacher_fills_missing_rows_like_the_loop():
    from rayflow.train.loop import _step_loss

    model, teacher, b = _net(), _net("cnn_small", seed=1, widths=(4, 8)), _batch(CLS)
    crit = build_criterion(KDConfig(alpha=0.7), CLS)
    t = b["t"].clone()
    missing = torch.isnan(t).any(1)
    t[missing] = crit.run_teacher(teacher, b["x"])[0][missing]
    got = crit(model(b["x"]), t, b["y"])
    assert torch.allclose(got, _step_loss(model, b, CLS, crit, teacher), atol=1e-6)
    want = reference_loss(model(b["x"]), b["y"], t, CLS, 0.7, 4.0)
    assert torch.allclose(got, want, atol=1e-6)


def test_gamma_and_no_teacher():
    model, b = _net(), _batch(CLS)
    out = model(b["x"])
    task_loss = CLS.loss(out, b["y"])
    assert torch.equal(build_criterion(KDConfig(alpha=0.9), CLS)(out, None, b["y"]), task_loss)
    crit = build_criterion(KDConfig(alpha=0.9, gamma=0.1), CLS)  # RepDistiller's KD setting -r 0.1 -a 0.9
    have = ~torch.isnan(b["t"]).any(1)
    want = 0.1 * task_loss + 0.9 * CLS.distill(out[have], b["t"][have], 4.0)
    assert torch.allclose(crit(out, b["t"], b["y"]), want)


def _pair(student="resnet8", teacher="vgg8"):
    torch.manual_seed(0)
    s = build_model(student, in_channels=1, image_size=8, num_outputs=10)
    t = build_model(teacher, in_channels=1, image_size=8, num_outputs=10).eval()
    return s, t


def test_masked_rows_take_no_kd_terms():
    s, t = _pair()
    cfg = KDConfig(alpha=0.5, methods=[{"method": m} for m in ("fitnet", "at", "sp", "vid", "rkd", "pkt")])
    crit = build_criterion(cfg, CLS, student=s, teacher=t, input_shape=(1, 8, 8)).eval()
    s.eval()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    mask = torch.tensor([1, 1, 0, 1, 0, 1, 1, 1], dtype=torch.bool)
    with torch.no_grad():
        s_all, t_all = s(x, return_features=True), crit.run_teacher(t, x)
        full = crit(s_all, t_all, y, mask=mask)
        kd_terms = {k: v for k, v in crit.last_terms.items() if k != "task"}
        t_garbage = (t_all[0].clone(), [f.clone() for f in t_all[1]])
        for f in [t_garbage[0], *t_garbage[1]]:
            f[~mask] = 1e3  # what the masked rows' teacher says must not matter
        assert torch.equal(crit(s_all, t_garbage, y, mask=mask), full)
        nan_rows = t_all[0].clone()
        nan_rows[~mask] = float("nan")  # NaN teacher outputs mark the same rows
        assert torch.equal(crit(s_all, (nan_rows, t_all[1]), y), full)
        sub = crit((s_all[0][mask], [f[mask] for f in s_all[1]]),
                   (t_all[0][mask], [f[mask] for f in t_all[1]]), y[mask])
    assert all(torch.allclose(crit.last_terms[k], v) for k, v in kd_terms.items()), (crit.last_terms, kd_terms)
    assert len(kd_terms) == 7 and sub.shape == ()


def test_criterion_owns_adapters_and_buffers_but_not_the_teacher():
    s, t = _pair()
    cfg = KDConfig(alpha=0.9, gamma=0.1, methods=[FitNetConfig(), {"method": "vid"}, CRDConfig(nce_k=8)])
    crit = build_criterion(cfg, CLS, student=s, teacher=t, input_shape=(1, 8, 8), num_samples=50)
    teacher_ids = {id(p) for p in t.parameters()} | {id(p) for p in s.parameters()}
    assert crit.parameters() and not any(id(p) in teacher_ids for p in crit.parameters())
    keys = set(crit.state_dict())
    assert {"methods.crd.memory_s", "methods.crd.memory_t", "methods.crd.z",
            "methods.fitnet.regressor.0.weight", "methods.vid.layers.0.log_scale"} <= keys
    assert crit.needs_teacher_features and crit.needs_index
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    before = crit.methods["crd"].memory_s.clone()
    crit(s(x, return_features=True), crit.run_teacher(t, x), y, index=torch.tensor([0, 1, 2, 40, 41, 49]))
    moved = (crit.methods["crd"].memory_s != before).any(1)
    assert moved.nonzero().flatten().tolist() == [0, 1, 2, 40, 41, 49]  # only these samples' slots
    again = build_criterion(cfg, CLS, student=s, teacher=t, input_shape=(1, 8, 8), num_samples=50)
    again.load_state_dict(crit.state_dict())
    assert torch.equal(again.methods["crd"].memory_s, crit.methods["crd"].memory_s)
    crit.eval()
    frozen = crit.methods["crd"].memory_s.clone()
    crit(s(x, return_features=True), crit.run_teacher(t, x), y, index=torch.arange(6))
    assert torch.equal(frozen, crit.methods["crd"].memory_s), "eval mode must not move the bank"


def test_crd_index_contract_is_enforced():
    s, t = _pair()
    crit = build_criterion(KDConfig(alpha=0, methods=[CRDConfig(nce_k=8)]), CLS, student=s, teacher=t,
                           input_shape=(1, 8, 8), num_samples=20)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    args = (s(x, return_features=True), crit.run_teacher(t, x), y)
    with pytest.raises(ValueError, match=r"\['crd'\] need per-sample indices"):
        crit(*args)
    with pytest.raises(KDConfigError, match=r"out of range \[0, 20\).*got 3..20"):
        crit(*args, index=torch.tensor([18, 19, 20, 3]))


@pytest.mark.parametrize("student,teacher", [("mlp", "resnet8"), ("resnet8", "cnn_small")])
def test_regression_runs_every_feature_method(student, teacher):
    torch.manual_seed(0)
    kw = {"hidden": (16,)} if student == "mlp" else {}
    s = build_model(student, in_channels=1, image_size=8, num_outputs=1, **kw)
    t = build_model(teacher, in_channels=1, image_size=8, num_outputs=1).eval()
    names = ["fitnet", "sp", "vid", "rkd", "pkt", "crd"] + ([] if student == "mlp" else ["at"])
    cfg = KDConfig(alpha=0.5, methods=[{"method": m, "nce_k": 8} if m == "crd" else {"method": m} for m in names])
    crit = build_criterion(cfg, REG, student=s, teacher=t, input_shape=(1, 8, 8), num_samples=16)
    x, y = torch.randn(5, 1, 8, 8), torch.rand(5)
    loss = crit(s(x, return_features=True), crit.run_teacher(t, x), y, index=torch.arange(5))
    loss.backward()
    assert torch.isfinite(loss) and set(crit.last_terms) == {"task", "kd", *names}
    assert not crit.methods["crd"].other_class  # uniform negatives: no classes needed


def test_config_as_the_yaml_holds_it():
    cfg = KDConfig.model_validate({"alpha": 0.9, "gamma": 0.1, "methods": [
        {"method": "crd"}, {"method": "fitnet", "weight": 10, "student_layer": 1},
        {"method": "fitnet", "student_layer": 2}]})
    crd, fit1, fit2 = cfg.methods
    assert (crd.feat_dim, crd.nce_k, crd.nce_t, crd.nce_m, crd.weight) == (128, 16384, 0.07, 0.5, 0.8)
    assert (fit1.weight, fit1.student_layer, fit2.weight) == (10, 1, 100.0)
    assert KDConfig.model_validate(cfg.model_dump()) == cfg
    s, t = _pair()
    crit = build_criterion(cfg.model_copy(update={"methods": cfg.methods[1:]}), CLS, student=s, teacher=t,
                           input_shape=(1, 8, 8))
    assert list(crit.methods) == ["fitnet_0", "fitnet_1"] and crit.weights == {"fitnet_0": 10.0, "fitnet_1": 100.0}
    with pytest.raises(ValueError, match="weight"):
        KDConfig(methods=[{"method": "at", "weight": -1}])
    with pytest.raises(ValueError, match="extra"):
        KDConfig(methods=[{"method": "at", "hint_layer": 2}])


def test_student_out_alone_is_enough_without_feature_methods():
    crit = Criterion(KDConfig(alpha=0.5), CLS)
    assert not crit.needs_teacher_features and not crit.needs_index and not list(crit.parameters())
    out, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.randint(0, 10, (4,))
    assert torch.equal(crit((out, None), (t, None), y), crit(out, t, y))
