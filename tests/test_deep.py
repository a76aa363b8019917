"""DeepEnsemble equals M separately built modules: outputs and gradients (float64)."""

import copy

import pytest
import torch
from torch import nn

import deepens as d

M = 4


def build(kind):
    if kind == "mlp":
        modules = [d.MLP(6, [9, 7], 3, bias=True, bias_std=0.3).double() for _ in range(M)]
        x = torch.randn(5, 6, dtype=torch.float64)
    elif kind == "mlp-ntk":
        modules = [d.MLP(6, [9, 7], 3, bias=True, parameterization="ntk", bias_std=0.4).double() for _ in range(M)]
        x = torch.randn(5, 6, dtype=torch.float64)
    elif kind == "circular":  # circular padding, stride and dilation (1-D and 2-D)
        modules = [nn.Sequential(d.layers.Conv2d(2, 4, 3, padding=2, dilation=2, padding_mode="circular", bias=True),
                                 nn.ReLU(), d.layers.Conv2d(4, 3, 3, stride=2, padding=(1, 1), padding_mode="circular"),
                                 nn.Flatten(), nn.Linear(3 * 16, 3)).double() for _ in range(M)]
        x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    elif kind == "norm":  # batch norms, a grouped convolution and a 1-D convolution
        modules = [nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                 nn.Conv2d(4, 4, 3, groups=2), nn.BatchNorm2d(4, affine=False), nn.Flatten(2),
                                 nn.Conv1d(4, 3, 5, stride=2), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(3 * 16, 3)).double() for _ in range(M)]
        x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    else:
        modules = [d.ConvNet(2, 5, width=0.125).double() for _ in range(M)]
        x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    return modules, x


@pytest.mark.parametrize("kind, strategy", [("mlp", "auto"), ("mlp-ntk", "auto"), ("mlp", "chunks")]
                         + [(k, s) for k in ("conv", "circular", "norm") for s in ("grouped", "members", "chunks")])
@pytest.mark.parametrize("per_member", [False, True])
def test_outputs_and_gradients_equal_separate_modules(kind, strategy, per_member):
    """Every way of computing stacked convolutions and norms (``conv_strategy``) equals the separate modules: outputs,
    gradients and the norms' running buffers."""
    modules, x = build(kind)
    ens = d.DeepEnsemble.from_modules(copy.deepcopy(modules))
    ens.conv_strategy = strategy
    if per_member:
        x = torch.stack([x + 0.1 * i for i in range(M)])
    out = ens(x)
    ref = torch.stack([m(x[i] if per_member else x) for i, m in enumerate(modules)])
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-10, rtol=0)

    weights = torch.randn_like(ref)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    checked = 0
    for name, p in ens.named_parameters():
        layer_name, _, param = name.removeprefix("net.").rpartition(".")
        stacked = ens.net.get_submodule(layer_name)
        grads = stacked.to_reference(param, p.grad)  # stacked storage layout → nn.Linear/Conv layout
        for i, module in enumerate(modules):
            q = module.get_submodule(layer_name).get_parameter(param)
            assert torch.allclose(grads[i], q.grad, atol=1e-10, rtol=0), (name, i)
            checked += 1
    assert checked == M * len(list(modules[0].parameters()))
    for name, buffer in ens.named_buffers():
        layer_name, _, key = name.removeprefix("net.").rpartition(".")
        for i, module in enumerate(modules):
            ref_buffer = module.get_submodule(layer_name).get_buffer(key)
            assert torch.allclose(buffer[i].to(ref_buffer.dtype), ref_buffer, atol=1e-12, rtol=0), (name, i)


def test_members_are_independent_and_reproducible():
    net = d.MLP(20, [300], 2)
    state = torch.random.get_rng_state()
    a = d.DeepEnsemble(net, 3, seed=11)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    b = d.DeepEnsemble(net, 3, seed=11)
    c = d.DeepEnsemble(net, 3, seed=12)
    wa, wb, wc = (e.net.fc1.to_reference("weight", e.net.fc1.weight) for e in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)
    # each member is a fresh draw of the reference init: std σ/√fan_in = √2/√20, and members differ
    assert wa.std(dim=(1, 2)).sub(2**0.5 / 20**0.5).abs().max() < 0.01
    corr = torch.corrcoef(wa.reshape(3, -1))
    assert (corr - torch.eye(3)).abs().max() < 0.05


def test_factory_and_member_export():
    ens = d.DeepEnsemble(lambda: d.MLP(4, [5], 2), 3, seed=0)
    x = torch.randn(7, 4)
    out = ens(x)
    for i in range(3):
        member = ens.member(i)
        assert isinstance(member, d.MLP)
        assert torch.allclose(member(x), out[i], atol=1e-6)


def test_first_k_members():
    ens = d.DeepEnsemble(d.MLP(4, [5], 2), 5, seed=0)
    x = torch.randn(3, 4)
    sub = ens.first(2)
    assert sub.members == 2 and ens.members == 5
    assert torch.allclose(sub(x), ens(x)[:2], atol=1e-6)
    assert sub.net.fc1.weight.shape == (2, 4, 5)  # (members, in, out)


def test_custom_forward_with_functional_ops():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)
            self.fc = nn.Linear(3 * 4 * 4, 2)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            x = nn.functional.max_pool2d(x, 2)
            return self.fc(torch.flatten(x, 1))

    modules = [Net().double() for _ in range(3)]
    ens = d.DeepEnsemble.from_modules(copy.deepcopy(modules))
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    ref = torch.stack([m(x) for m in modules])
    assert torch.allclose(ens(x), ref, atol=1e-12)


def test_parameter_count_is_m_times_single():
    net = d.ConvNet(3, 10, width=0.25)
    single = sum(p.numel() for p in net.parameters())
    ens = d.DeepEnsemble(net, 6, seed=0)
    assert sum(p.numel() for p in ens.parameters()) == 6 * single
    assert sum(p.numel() for p in ens.individual_parameters()) == 6 * single
    assert list(ens.shared_parameters()) == []


class _Scaled(nn.Module):
    """A plain tensor attribute (a buffer once traced) and an in-place activation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm, self.fc = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Linear(3 * 16, 2)
        self.drop = nn.Dropout(0.5)
        self.scale = torch.tensor(2.0, dtype=torch.float64)

    def forward(self, x):
        return self.fc(self.drop(torch.relu_(self.norm(self.conv(x)) * self.scale).flatten(1)))


def test_the_member_by_member_forward_follows_the_state_of_the_stacked_network():
    """The 'chunks' strategy sees what the folded one sees: a batch norm put in eval mode (frozen statistics) or
    given another momentum, a dropout switched off, a plain tensor attribute, hooks (then it runs folded)."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(),
                         nn.Linear(48, 2)).double()
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    outs = {}
    for strategy in ("grouped", "chunks"):
        ens = d.DeepEnsemble(copy.deepcopy(base), 2, seed=0)
        ens.conv_strategy = strategy
        ens.net.get_submodule("1").eval()  # frozen batch-norm statistics while the rest trains
        ens.net.get_submodule("3").p = 0.0
        outs[strategy] = (ens(x), ens.net.get_submodule("1").running_mean.clone())
        ens.net.get_submodule("1").train()
        ens.net.get_submodule("1").momentum = 0.5
        outs[strategy] += (ens(x), ens.net.get_submodule("1").running_mean.clone())
    for a, b in zip(outs["grouped"], outs["chunks"], strict=True):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    assert float(outs["chunks"][1].abs().max()) == 0.0  # eval mode: the running mean did not move

    ens = d.DeepEnsemble(_Scaled().double(), 2, seed=0)
    ens.conv_strategy = "chunks"
    ens.eval()
    folded = copy.deepcopy(ens)
    folded.conv_strategy = "members"
    assert torch.allclose(ens(x), folded(x), atol=1e-12, rtol=0)
    seen = []
    ens.net.get_submodule("conv").register_forward_hook(lambda mod, i, o: seen.append(o.shape[0]))
    ens(x)
    assert seen == [2 * 4]  # a hooked network runs folded: the hook sees every member's batch at once


def test_a_parametrized_stacked_layer_runs_folded():
    """A parametrization of a stacked layer (its parameter computed at each access) is seen by the folded forward
    only: 'chunks' then runs folded, with the same numbers as 'members'."""
    from torch.nn.utils import parametrize

    class Doubled(nn.Module):
        def forward(self, t):
            return 2 * t

    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    ens = d.DeepEnsemble(nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2)).double(), 2,
                         seed=0)
    parametrize.register_parametrization(ens.net.get_submodule("0"), "bias", Doubled())
    outs = {}
    for strategy in ("members", "chunks"):
        ens.conv_strategy = strategy
        outs[strategy] = ens(x)
    assert torch.allclose(outs["members"], outs["chunks"], rtol=0, atol=1e-12)
