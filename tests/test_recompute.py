"""Lean training memory (deepens.layers.recompute): the tensors a lean forward recomputes instead of keeping give
bit-for-bit the outputs, gradients and batch-norm buffers of the plain forward, for every ensemble kind, in float64
and under autocast, through double backward, and the forward keeps fewer bytes; refusals and fallbacks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import deepens as d
from deepens.errors import DeepensError
from deepens.layers.recompute import lean, remember, saved_bytes


def _cnn(bn: bool = False, act=nn.ReLU) -> nn.Module:
    layers, c = [], 3
    for out in (8, 16):
        layers += [nn.Conv2d(c, out, 3, padding=1)] + ([nn.BatchNorm2d(out)] if bn else []) + [act()]
        c = out
    return nn.Sequential(*layers, nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 5))


class _MeanPooled(nn.Module):
    """A mean over positions at the end: the gradient reaching the last fused ReLU is an expanded tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 5))


CASES = {
    "deep": lambda: d.DeepEnsemble(_cnn(), 3, seed=0),
    "deep-bn": lambda: d.DeepEnsemble(_cnn(True), 3, seed=0),
    "batch": lambda: d.BatchEnsemble(_cnn(), 3, seed=0),
    "batch-bn-gelu": lambda: d.BatchEnsemble(_cnn(True, nn.GELU), 3, seed=0),
    "batch-tanh-edges": lambda: d.BatchEnsemble(_cnn(False, nn.Tanh), 3, seed=0, modulate_input=True,
                                                modulate_output=True),
    "mc-dropout": lambda: d.MCDropout(_cnn(), 3, seed=0),
    "mc-dropout-resampled": lambda: d.MCDropout(_cnn(), 3, seed=0, resample=True),
    "lld": lambda: d.LastLayerDropout(_cnn(True), 3, seed=0),
    "batch-mean-pool": lambda: d.BatchEnsemble(_MeanPooled(), 3, seed=0),
    "batch-mlp": lambda: d.BatchEnsemble(_mlp(), 3, seed=0),
    "batch-v-only": lambda: d.BatchEnsemble(_cnn(True), 3, u=None, seed=0),
    "batch-u-first-layer": lambda: d.BatchEnsemble(_cnn(), 3, u={0: "normal:0,1"}, v=None, seed=0),
}


def _counted(model, x, *, create_graph=False):
    """Outputs, parameter gradients, buffers and the bytes the forward keeps for backward (counted once per storage,
    parameters excepted, through a saved-tensors hook that composes with the lean one)."""
    model.zero_grad()
    with saved_bytes(model.parameters()) as kept:
        out = model(x)
    weights = torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape) / out.numel()
    loss = (out.sin() * weights).sum()
    if create_graph:  # a gradient penalty: second derivatives through the recomputed tensors
        grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
        loss = sum((g**2).sum() for g in grads)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return out.detach(), grads, buffers, kept["bytes"]


def _compare(make, x, **kw):
    plain = make().double()
    plain.lean = False
    leaner = copy.deepcopy(plain)
    leaner.lean = True
    a = _counted(plain, x, **kw)
    b = _counted(leaner, x, **kw)
    assert torch.equal(a[0], b[0])
    assert a[1].keys() == b[1].keys() and len(a[1]) > 0
    scale = max(float(g.abs().max()) for g in a[1].values())  # 1e-12 of the gradients' scale (a bias before a
    for name in a[1]:                                          # batch norm has a gradient of zero, up to rounding)
        if "modulations" in name and a[1][name].dim() == 2 or kw.get("create_graph"):
            # a convolution's modulation gradient Σ g ⊙ x is a batched dot product in the lean forward (no
            # activation-sized temporary): the same sum in another order (and second derivatives go through it)
            assert torch.allclose(a[1][name], b[1][name], rtol=1e-12, atol=1e-12 * scale), name
        else:
            assert torch.equal(a[1][name], b[1][name]), name
    for name in a[2]:
        assert torch.equal(a[2][name], b[2][name]), name
    return a[3], b[3]


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("per_member", [False, True])
def test_lean_and_plain_forwards_give_the_same_numbers_and_lean_keeps_less(kind, per_member):
    make = CASES[kind]
    members = make().members
    torch.manual_seed(1)
    sample = (12,) if kind.endswith("mlp") else (3, 8, 8)
    x = torch.randn(((members,) if per_member else ()) + (6,) + sample, dtype=torch.float64)
    plain, leaner = _compare(make, x)
    if kind in ("deep", "deep-bn") or kind in ("batch-mlp", "lld") and per_member:
        # the re-laid-out copies only (none in a dense per-member ensemble); per-member LLD readout rows come from
        # max-pooled features nothing else keeps, so keeping them costs the same
        assert leaner <= plain
    elif kind in ("lld", "batch-u-first-layer", "batch-mean-pool"):
        # the masked readout rows of the shared features; one modulated layer of two; two fused layers whose
        # second convolution's input is kept anyway
        assert leaner < plain
    else:
        assert leaner < 0.8 * plain, (leaner, plain)


def test_second_derivatives_through_recomputed_tensors_are_the_plain_ones():
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    for kind in ("batch-bn-gelu", "lld", "batch", "mc-dropout"):
        _compare(CASES[kind], x, create_graph=True)


def test_the_lean_graph_fuses_every_channel_modulated_relu():
    """u ⊙ ReLU(v ⊙ z) of each modulated convolution is one FusedModulation node in the lean graph (so the
    comparisons above exercise the fused backward); other activations and dense layers keep the plain nodes."""
    from deepens.ensembles.fused import FusedModulation, lean_graph

    def fused(ens):
        gm = lean_graph(ens.net)
        return 0 if gm is None else sum(isinstance(m, FusedModulation) for m in gm.modules())

    assert fused(CASES["batch"]()) == 2 and fused(CASES["mc-dropout"]()) == 2
    assert fused(CASES["batch-bn-gelu"]()) == 0 and fused(CASES["batch-mlp"]()) == 0
    assert fused(d.BatchEnsemble(_cnn(), 3, u=None, seed=0)) == 2  # v alone
    assert fused(d.BatchEnsemble(_cnn(), 3, u={0: "normal:0,1"}, v=None, seed=0)) == 1


def _avg_pooled() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))


@pytest.mark.parametrize("make", [lambda: d.BatchEnsemble(_cnn(True), 3, seed=0),
                                  lambda: d.MCDropout(_avg_pooled(), 3, seed=0),  # u alone: the product widens
                                  lambda: d.BatchEnsemble(_avg_pooled(), 3, v=None, seed=0)])
def test_under_autocast_the_recomputation_runs_in_the_forward_precision(make):
    torch.manual_seed(0)
    plain = make()
    plain.lean = False
    leaner = copy.deepcopy(plain)
    leaner.lean = True
    x = torch.randn(4, 3, 8, 8)
    results = []
    for model in (plain, leaner):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().square().sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert results[0][0].dtype == torch.bfloat16 and torch.equal(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys()
    for name, grad in results[0][1].items():
        if "modulations" in name:  # float32 sums in another order (batched dot products)
            assert torch.allclose(grad, results[1][1][name], rtol=1e-5, atol=1e-6 * grad.abs().max()), name
        else:
            assert torch.equal(grad, results[1][1][name]), name


def test_the_default_is_lean_where_activations_weigh():
    conv = d.BatchEnsemble(_cnn(), 2, seed=0)
    dense = d.BatchEnsemble(_mlp(), 2, seed=0)
    assert conv._lean_now(torch.zeros(4, 3, 8, 8)) and not dense._lean_now(torch.zeros(4, 12))
    assert dense._lean_now(torch.zeros(2**20 // 12 + 1, 12))
    with torch.no_grad():
        assert not conv._lean_now(torch.zeros(4, 3, 8, 8))
    conv.lean = "sometimes"
    with pytest.raises(DeepensError, match="lean: expected True, False or 'auto'"):
        conv(torch.zeros(2, 3, 8, 8))


def test_a_recipe_input_changed_in_place_after_the_forward_is_an_error():
    w = torch.randn(50, dtype=torch.float64, requires_grad=True)
    with lean() as active:
        assert active
        scaled = remember(w * 3.0, lambda t: t * 3.0, w)
        y = scaled.sin()  # sin keeps its input: the recipe replaces it
    with torch.no_grad():
        w.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place after the forward pass"):
        y.sum().backward()


def test_a_recipe_replaces_the_saved_tensor_and_the_gradient_is_exact():
    w = torch.randn(50, dtype=torch.float64, requires_grad=True)
    calls = []

    def triple(t):
        calls.append(1)
        return t * 3.0

    with lean():
        y = remember(w * 3.0, triple, w).sin()
    (g,) = torch.autograd.grad(y.sum(), w)
    assert len(calls) == 1  # recomputed once, in the backward pass
    assert torch.equal(g, (w * 3.0).cos().detach() * 3.0)


def test_under_another_saved_tensor_hook_or_torch_func_the_forward_is_plain():
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    model = CASES["batch"]().double()
    model.lean = True
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    expected = torch.autograd.grad(model(x).sum(), list(model.parameters()))
    out = checkpoint(model, x, use_reentrant=False)
    got = torch.autograd.grad(out.sum(), list(model.parameters()))
    for a, b in zip(expected, got, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    with lean() as active:
        with lean() as nested:
            assert active and not nested
    with torch.no_grad(), lean() as active:
        assert not active


class _Doubles(nn.Module):
    def forward(self, x):
        return x.mul_(2.0)  # a traced in-place method


class _ViewDoubles(nn.Module):
    def forward(self, x):
        return x.flatten(1).mul_(2.0)  # an in-place method on a view


def _in_place_after_chain(kind: str) -> nn.Module:
    if kind in ("flatten-dropout", "view-method"):  # in place on a view of the chain's output
        after = [nn.Flatten(), nn.Dropout(0.5, inplace=True)] if kind == "flatten-dropout" else [_ViewDoubles()]
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                             *after, nn.Linear(6 * 64, 3))
    after = {"dropout": nn.Dropout(0.5, inplace=True), "method": _Doubles()}[kind]
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), after,
                         nn.Conv2d(6, 5, 3), nn.Flatten(), nn.Linear(5 * 36, 3))


@pytest.mark.parametrize("kind", ["dropout", "method", "flatten-dropout", "view-method"])
def test_a_chain_whose_output_changes_in_place_is_not_fused_and_gradients_stay_plain(kind):
    """The fused chain keeps its output for the backward pass: an in-place module or method after it would change
    what the backward reads, so such a chain stays unfused and the lean gradients equal the plain ones."""
    from deepens.ensembles.fused import FusedModulation, lean_graph

    ens = d.BatchEnsemble(_in_place_after_chain(kind), 3, seed=0).double()
    gm = lean_graph(ens.net)
    assert sum(isinstance(m, FusedModulation) for m in gm.modules()) == 1  # the first chain only
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    grads = {}
    for lean_mode in (False, True):
        model = copy.deepcopy(ens)
        model.lean = lean_mode
        torch.manual_seed(3)  # the same dropout mask
        grads[lean_mode] = torch.autograd.grad(model(x).sin().sum(), list(model.parameters()))
    for a, b in zip(grads[False], grads[True], strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-13)


class _ChangesSaved(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4 * 36, 2)

    def forward(self, x):
        h = (torch.tanh(self.conv(x)) + 1.0).flatten(1)  # no recipe: kept as it is
        out = self.head(h)  # keeps h for its weight gradient
        h.mul_(2.0)  # then h changes: plain autograd refuses the backward
        return out


def _changes_recomputed() -> nn.Module:
    """The second tanh's output has a recipe (the u modulations are off) and the dropout changes it in place after
    the tanh saved it."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(),
                         nn.Dropout(0.5, inplace=True), nn.Conv2d(4, 2, 3), nn.Flatten(), nn.Linear(2 * 36, 2))


def test_a_kept_tensor_changed_in_place_is_refused_as_plain_autograd_refuses_it():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for lean_mode in (False, True):
        model = d.BatchEnsemble(_ChangesSaved(), 2, seed=0).double()
        model.lean = lean_mode
        model.conv_strategy = "members"
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            model(x).sum().backward()


def test_a_recomputed_tensor_changed_in_place_gets_the_gradient_of_the_values_used():
    """Plain autograd refuses this backward (the tanh's saved output changed); lean recomputes the output from the
    tanh's input and gives the gradient of the forward as it ran: the same as a network whose dropout is not in
    place."""
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    model = d.BatchEnsemble(_changes_recomputed(), 2, u=None, seed=0).double()
    reference = copy.deepcopy(model)
    reference.lean = False
    reference.net.get_submodule("4").inplace = False
    grads = []
    for net, lean_mode in ((model, True), (reference, False)):
        net.lean = lean_mode
        torch.manual_seed(2)  # the same dropout mask
        grads.append(torch.autograd.grad(net(x).sin().sum(), list(net.parameters())))
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    plain = copy.deepcopy(model)
    plain.lean = False
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        plain(x).sum().backward()


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e-23), (torch.float16, 1e-3), (torch.bfloat16, 1e-20),
                                          (torch.float64, 1e-150)])
def test_the_fused_backward_keeps_tiny_modulations(dtype, scale):
    """A modulation u near the bottom of the dtype's range: the fused backward's ReLU mask and ∂v are the plain
    graph's (no product u², which would underflow), and a float16 chain keeps z (u ⊙ ReLU(a) would underflow)."""
    from deepens.ensembles.fused import ModulatedReLU

    torch.manual_seed(0)
    z = (torch.rand(2, 4, 3, 5, dtype=torch.float64) + 0.1).to(dtype).requires_grad_()  # a > 0 everywhere
    v = (torch.rand(2, 3, dtype=torch.float64) + 0.5).to(dtype).requires_grad_()
    u = (torch.rand(2, 3, dtype=torch.float64) + 0.5)
    u[:, 0] *= scale
    u = u.to(dtype).requires_grad_()
    g = torch.randn(2, 4, 3, 5, dtype=torch.float64).to(dtype)
    fused = torch.autograd.grad(ModulatedReLU.apply(z, v, u), (z, v, u), g)
    plain = torch.autograd.grad(torch.relu(z * v[:, None, :, None]) * u[:, None, :, None], (z, v, u), g)
    assert torch.equal(fused[0], plain[0])  # ∂z bit for bit: the same mask and products
    for a, b in zip(fused[1:], plain[1:], strict=True):
        assert (a[:, 0] != 0).all()
        assert torch.allclose(a.double(), b.double(), rtol=2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5,
                              atol=0), (a, b)
