"""The trainer: EE Eqs. (2)-(4) against explicit gradients, equivalence with separate training, run
directories, reproducibility, divergence, and resumption after an interruption."""

import copy
import json

import pytest
import torch
from conftest import interrupt_training_after
from torch.nn import functional as F

import deepens as d
from deepens.runs import RunDir
from deepens.training import DivergenceError, TrainConfig, Trainer, member_losses, train, training_step
from deepens.training import trainer as trainer_module

TINY = dict(dataset="digits", widths=[16], members=3, epochs=3, batch_size=64, lr=0.05, seed=0, checkpoint_seconds=0)


def flat_params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("gamma_scale", [1.0 / 4, 1.0, 2.5])
def test_eq4_shared_update_is_gamma_over_m_sum_and_eq3_individual(gamma_scale):
    torch.manual_seed(0)
    net = d.MLP(5, [6, 7], 3, bias=True, bias_std=0.2).double()
    ens = d.BatchEnsemble(net, 4, seed=0)
    x = torch.randn(8, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    eta_w, eta_u = 0.1, 0.3
    shared = [p for _, p in ens.named_shared_parameters()]
    individual = [p for _, p in ens.named_individual_parameters()]
    opt = torch.optim.SGD([{"params": shared, "lr": eta_w}, {"params": individual, "lr": eta_u}])
    before = [p.detach().clone() for p in shared + individual]
    # explicit: one autograd call per member loss L_α
    grads_w = [torch.zeros_like(p) for p in shared]
    grads_u = [torch.zeros_like(p) for p in individual]
    out = ens(x)
    for a in range(4):
        loss_a = F.cross_entropy(out[a], y)
        gw = torch.autograd.grad(loss_a, shared + individual, retain_graph=True)
        for i in range(len(shared)):
            grads_w[i] += gw[i]
        for j in range(len(individual)):
            grads_u[j] += gw[len(shared) + j]  # only row α is non-zero: u_α affects L_α alone
    training_step(ens, opt, x, y, gamma_scale=gamma_scale)
    for p, b, g in zip(shared, before[: len(shared)], grads_w, strict=True):
        assert torch.allclose(p, b - eta_w * gamma_scale * g, atol=1e-14)  # EE Eq. (4)
    for p, b, g in zip(individual, before[len(shared):], grads_u, strict=True):
        assert torch.allclose(p, b - eta_u * g, atol=1e-14)  # EE Eq. (3)


def test_lld_update_is_eq66():
    net = d.MLP(5, [6], 3).double()
    ens = d.LastLayerDropout(net, 5, seed=0)
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    params = list(ens.parameters())
    before = [p.detach().clone() for p in params]
    loss = sum(F.cross_entropy(ens(x)[a], y) for a in range(5)) * (2.0 / 5)  # γ = 2: (γ/M) Σ_α L_α
    grads = torch.autograd.grad(loss, params)
    training_step(ens, torch.optim.SGD(params, lr=0.2), x, y, gamma_scale=2.0 / 5)
    for p, b, g in zip(params, before, grads, strict=True):
        assert torch.allclose(p, b - 0.2 * g, atol=1e-14)


@pytest.mark.parametrize("independent", [False, True])
def test_deep_ensemble_training_equals_separately_trained_modules(independent):
    torch.manual_seed(0)
    modules = [d.MLP(5, [8], 3, bias=True, bias_std=0.1).double() for _ in range(3)]
    ens = d.DeepEnsemble.from_modules(copy.deepcopy(modules))
    opt = torch.optim.SGD(ens.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
            for m in modules]
    for _ in range(5):
        if independent:
            x, y = torch.randn(3, 10, 5, dtype=torch.float64), torch.randint(0, 3, (3, 10))
        else:
            x, y = torch.randn(10, 5, dtype=torch.float64), torch.randint(0, 3, (10,))
        training_step(ens, opt, x, y, gamma_scale=0.123)  # γ does not matter: nothing is shared
        for a, (m, o) in enumerate(zip(modules, opts, strict=True)):
            o.zero_grad()
            xa, ya = (x[a], y[a]) if independent else (x, y)
            F.cross_entropy(m(xa), ya).backward()
            o.step()
    for a, m in enumerate(modules):
        assert torch.allclose(ens.member(a).fc1.weight, m.fc1.weight, atol=1e-13)
        assert torch.allclose(ens.member(a).readout.bias, m.readout.bias, atol=1e-13)


def test_divergence_before_any_update_names_members():
    net = d.MLP(5, [6], 3).double()
    ens = d.DeepEnsemble(net, 3, seed=0)
    opt = torch.optim.SGD(ens.parameters(), lr=0.1)
    with torch.no_grad():
        ens.net.fc1.weight[1].fill_(float("nan"))
    before = flat_params(ens)
    with pytest.raises(DivergenceError, match="member\\(s\\) 1"):
        training_step(ens, opt, torch.randn(4, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0]))
    after = flat_params(ens)
    assert all(torch.equal(before[k], after[k]) or torch.isnan(before[k]).any() for k in before)


def test_run_directory_contents(tmp_path):
    out = tmp_path / "run"
    result = train(TrainConfig(**TINY), out, progress=False)
    run = RunDir(out)
    for name in ("config.json", "metrics.json", "metrics.jsonl", "logits.safetensors", "model.safetensors",
                 "checkpoint.json"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "member_accuracy", "nll", "ece", "correlation", "curve", "brier", "disagreement"):
        assert key in metrics["test"]
    assert len(metrics["test"]["curve"]) == 3
    history = run.read_history()
    assert [row["epoch"] for row in history] == [1, 2, 3]
    logits = run.read_logits()
    assert logits["test.logits"].shape == (3, len(result.data.test), 10)
    assert torch.equal(logits["test.labels"], result.data.test.y)
    # the stored logits reproduce the reported metrics
    again = d.training.classification_metrics(logits["test.logits"], logits["test.labels"])
    assert again["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-12)
    # config.json is complete enough to re-run: the same config gives the same weights
    config = TrainConfig.from_dict(run.read_config())
    rerun = train(config, tmp_path / "rerun", progress=False)
    for k, v in rerun.model.state_dict().items():
        assert torch.equal(v, result.model.state_dict()[k])
    # only the latest checkpoint is kept
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch-000003"]


def test_same_seed_same_numbers_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a = train(TrainConfig(**{**TINY, "ensemble": "mc-dropout", "resample": True}), progress=False)
    assert torch.equal(state, torch.random.get_rng_state())
    b = train(TrainConfig(**{**TINY, "ensemble": "mc-dropout", "resample": True}), progress=False)
    c = train(TrainConfig(**{**TINY, "ensemble": "mc-dropout", "resample": True, "seed": 1}), progress=False)
    assert a.metrics["test"]["nll"] == b.metrics["test"]["nll"]
    assert a.metrics["test"]["nll"] != c.metrics["test"]["nll"]


@pytest.mark.parametrize("kind", ["deep", "batch", "mc-dropout", "lld", "vectorized"])
def test_every_ensemble_kind_trains(kind):
    cfg = TrainConfig(**{**TINY, "ensemble": kind, "epochs": 8, "widths": [32]})
    result = train(cfg, progress=False)
    assert result.metrics["test"]["accuracy"] > 0.85, kind
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_convnet_and_independent_batches_train():
    cfg = TrainConfig(dataset="digits", model="convnet", width=0.125, ensemble="deep", members=2, epochs=4,
                      batches="independent", lr=0.05, batch_size=32)
    result = train(cfg, progress=False)
    assert result.metrics["test"]["accuracy"] > 0.8


def test_mc_dropout_resampled_masks_change_during_training():
    cfg = TrainConfig(**{**TINY, "ensemble": "mc-dropout", "resample": True, "epochs": 1})
    result = train(cfg, progress=False)
    draws = [int(m.draws) for m in result.model.modulations().values()]
    steps = result.metrics["steps"]
    assert all(n >= steps for n in draws)  # one draw per forward: at least one per training step


@pytest.mark.parametrize("calls", [0, 5, 23, 35])
def test_resume_after_interruption_is_bitwise_equal(tmp_path, interrupted_and_resumed, calls):
    cfg = dict(**{**TINY, "ensemble": "batch", "epochs": 4, "momentum": 0.9, "schedule": "cosine"})
    # 21 steps per epoch: interrupted before, inside and after epoch 1
    reference, resumed = interrupted_and_resumed(cfg, after=calls)
    ref_state, new_state = reference.model.state_dict(), resumed.model.state_dict()
    for key in ref_state:
        assert torch.equal(ref_state[key], new_state[key]), key
    assert RunDir(tmp_path / "cut").read_history()[-1]["epoch"] == 4
    assert resumed.metrics["test"]["nll"] == reference.metrics["test"]["nll"]


def test_resume_refuses_different_options(tmp_path):
    train(TrainConfig(**TINY), tmp_path / "r", progress=False)
    with pytest.raises(d.DeepensError, match="resume: the options differ.*lr"):
        train(TrainConfig(**{**TINY, "lr": 0.5}), tmp_path / "r", resume=True, progress=False)
    with pytest.raises(d.DeepensError, match="already holds a run"):
        train(TrainConfig(**TINY), tmp_path / "r", progress=False)


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = member_losses
    count = {"n": 0}

    def poisoned(out, y, kind="ce"):
        count["n"] += 1
        losses = real(out, y, kind)
        return losses * float("nan") if count["n"] == 50 else losses  # step 50: inside epoch 3

    monkeypatch.setattr(trainer_module, "member_losses", poisoned)
    out = tmp_path / "run"
    with pytest.raises(DivergenceError, match=r"diverged at step 49 \(epoch 3\).*member\(s\) 0, 1, 2.*kept in"):
        train(TrainConfig(**TINY), out, progress=False)
    pointer = json.loads((out / "checkpoint.json").read_text())
    assert pointer["epoch"] == 2
    model = RunDir(out).load_checkpoint()[0]
    assert all(torch.isfinite(v).all() for v in model.values() if v.is_floating_point())
    assert not (out / "metrics.json").exists()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        interrupt_training_after(patch, 30)
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**TINY), out, progress=False)
    ckpt = out / json.loads((out / "checkpoint.json").read_text())["dir"]
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(d.DeepensError, match="checkpoint: .* is corrupt"):
        train(TrainConfig(**TINY), out, resume=True, progress=False)


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(d.DeepensError, match="out: cannot write"):
        Trainer(TrainConfig(**TINY), blocker / "run").fit()


def test_gamma_values():
    assert TrainConfig(members=6, gamma="M").validate().gamma_value() == 6
    assert TrainConfig(members=6, gamma="1").validate().gamma_value() == 1
    assert TrainConfig(members=6, gamma=2.5).validate().gamma_value() == 2.5
    assert TrainConfig(members=6, gamma=lambda m: m**0.5).validate().gamma_value() == pytest.approx(6**0.5)
    for bad in ("x", -1, 0, "nan"):
        with pytest.raises(d.DeepensError, match="gamma"):
            TrainConfig(gamma=bad).validate()


def test_collegial_members_are_scaled_sums_of_m_networks():
    """Each trained collegial member equals m^{-1/2} Σ_j of its m subnetworks (CE Eq. 4), and the members
    are independently initialised."""
    cfg = TrainConfig(**{**TINY, "ensemble": "collegial", "multiplicity": 3, "widths": [8, 8], "epochs": 1})
    result = train(cfg, progress=False)
    ens = result.model
    x = result.data.test.x[:20]
    with torch.no_grad():
        out = ens(x)
        assert out.shape == (3, 20, 10)
        for a in range(3):
            member = ens.member(a)
            assert torch.allclose(member(x), out[a], atol=1e-6)
            nets = [member.subnetwork(j) for j in range(3)]
            explicit = sum(net(x) for net in nets) / 3 ** 0.5
            assert torch.allclose(out[a], explicit, atol=1e-5)
        assert not torch.allclose(out[0], out[1])

