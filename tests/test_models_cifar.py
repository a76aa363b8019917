"""The power-laws paper's CIFAR networks (VGG16, WideResNet): parameter counts against the paper, and deep /
batch ensembles of them with per-member batch norm equal to explicit per-member computations (float64)."""

import copy

import pytest
import torch

import deepens as d
from deepens.models import VGG16, WideResNet


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_of_the_standard_networks():
    assert _count(VGG16(100, 64)) == 15_295_524  # PL: 15.3M at w = 64 on CIFAR-100
    assert _count(WideResNet(28, 160, 100)) == 36_536_884  # WRN-28-10 (the paper states 36.8M; see docstring)
    assert _count(WideResNet(16, 64, 10)) == 2_748_890  # WRN-16-4, CIFAR-10: 2.7M
    # the width knob scales every layer: ~w² parameters
    assert 3.9 < _count(VGG16(100, 32)) / _count(VGG16(100, 16)) < 4.1
    with pytest.raises(d.DeepensError, match="6n \\+ 4"):
        WideResNet(27, 4)


FAMILIES = {
    "vgg16": lambda: VGG16(5, 2, 3, dropout=0.0).double(),
    "wrn": lambda: WideResNet(10, 2, 5, 3).double(),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_deep_ensemble_with_per_member_batch_norm_equals_separate_modules(family):
    m = 3
    torch.manual_seed(0)
    modules = [FAMILIES[family]() for _ in range(m)]
    ens = d.DeepEnsemble.from_modules(copy.deepcopy(modules))
    x = torch.randn(m, 4, 3, 16, 16, dtype=torch.float64)
    out = ens(x)  # training mode: batch statistics per member, running buffers updated
    ref = torch.stack([net(x[i]) for i, net in enumerate(modules)])
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    weights = torch.randn_like(ref)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    for i, net in enumerate(modules):
        member = ens.member(i)
        for (name, a), (_, b) in zip(member.state_dict().items(), net.state_dict().items(), strict=True):
            assert torch.allclose(a.double(), b.double(), atol=1e-12, rtol=0), (name, i)  # running stats too
    for name, p in ens.named_parameters():
        layer, _, param = name.removeprefix("net.").rpartition(".")
        stacked = ens.net.get_submodule(layer)
        grads = stacked.to_reference(param, p.grad)
        for i, net in enumerate(modules):
            assert torch.allclose(grads[i], net.get_submodule(layer).get_parameter(param).grad, atol=1e-10), name
    ens.eval()
    for net in modules:
        net.eval()
    shared = torch.randn(5, 3, 16, 16, dtype=torch.float64)
    assert torch.allclose(ens(shared), torch.stack([net(shared) for net in modules]), atol=1e-12, rtol=0)


def test_batch_ensemble_batch_norm_is_per_member():
    """BatchEnsemble of a VGG16: each member normalises with its own batch statistics (a member's output does not
    depend on the other members' samples), its BN affine parameters are individual, and the pre-activation
    modulation sits after the batch norm (a per-member norm would otherwise undo it)."""
    torch.manual_seed(0)
    ens = d.BatchEnsemble(VGG16(5, 2, 3).double(), 3, u="shifted-normal:0.5", v="normal:0,1", seed=0)
    x = torch.randn(3, 4, 3, 16, 16, dtype=torch.float64)
    out = ens(x)
    other = x.clone()
    other[1:] = torch.randn_like(other[1:])
    assert torch.allclose(ens(other)[0], out[0], atol=1e-12)
    alone = ens.first(1)
    assert torch.allclose(alone(x[:1]), out[:1], atol=1e-12)
    names = dict(ens.named_individual_parameters())
    assert any(".bn1." in n for n in names) and any("modulations.v1" in n for n in names)
    order = [n.target for n in ens.net.graph.nodes if n.op == "call_module"]
    assert order.index("features.bn1") < order.index("modulations.v1") < order.index("features.relu1")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vgg16", "wrn"])  # resnext29's fixed 256-1024 channels are too slow for CI
@pytest.mark.parametrize("ensemble", ["deep", "batch", "mc-dropout", "lld", "vectorized"])
def test_every_family_trains_with_every_ensemble_kind_and_resumes_bitwise(interrupted_and_resumed, model, ensemble):
    """Tiny widths on 8×8 digits, 2 epochs of 7 steps: a run interrupted after 9 steps and resumed equals the
    uninterrupted run bitwise (checkpoints carry the per-member batch-norm buffers)."""
    cfg = dict(dataset="digits", model=model, width=2, depth=10 if model == "wrn" else None, ensemble=ensemble,
               members=2, epochs=2, batch_size=256, lr=0.02, seed=3, checkpoint_seconds=0)
    ref, resumed = interrupted_and_resumed(cfg, after=9)
    assert all(torch.isfinite(v).all() for v in ref.model.state_dict().values() if v.is_floating_point())
    a, b = ref.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["test"]["nll"] == ref.metrics["test"]["nll"]


def test_models_listing_and_dry_run(cli):
    import json

    code, out, err = cli(["models", "--json"])
    assert code == 0, err
    counts = {row["model"]: row["parameters_cifar100"] for row in json.loads(out)}
    assert counts["vgg16"] == 15_295_524 and counts["wrn"] == 36_536_884
    assert counts["resnext29"] == 34_518_948  # 8×64d (CE §4.2 quotes 34.4M for CIFAR-10's head)
    code, out, err = cli(["train", "--dataset", "digits", "--model", "wrn", "--width", "2", "--depth", "10",
                          "--members", "3", "--dry-run", "--json"])
    assert code == 0, err
    report = json.loads(out)
    one = report["parameters"]["reference_network"]
    assert report["parameters"]["total"] == 3 * one == report["parameters"]["individual"]
    assert report["flops_per_sample"]["ensemble"] == 3 * report["flops_per_sample"]["reference_network"] > 0
    code, out, err = cli(["train", "--dataset", "digits", "--model", "vgg16", "--width", "2", "--ensemble", "batch",
                          "--members", "4", "--dry-run"])
    assert code == 0 and "shared" in out
    code, _, err = cli(["train", "--dataset", "digits", "--model", "mlp", "--cardinality", "4", "--dry-run"])
    assert code == 2 and "cardinality" in err


def test_resnext29_deep_ensemble_equals_its_members():
    """ResNeXt-29 (grouped convolutions, projection shortcuts, batch norm) from TrainConfig, as a deep ensemble
    with per-member batch norm: one training-mode forward equals the members run one by one."""
    from deepens.data import load_dataset
    from deepens.training import TrainConfig
    from deepens.training.build import build_ensemble

    config = TrainConfig(dataset="digits", model="resnext29", width=2, cardinality=2, members=2).validate()
    data = load_dataset("digits", seed=0)
    ens = build_ensemble(config, data).double()
    x = data.train.x[:3].double()
    members = [ens.member(i).train() for i in range(2)]
    assert torch.allclose(ens(x), torch.stack([m(x) for m in members]), atol=1e-10)
