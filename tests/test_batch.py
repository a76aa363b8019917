"""BatchEnsemble and MC dropout against an explicit per-member loop implementing EE Eq. (1)."""

import pytest
import torch
from torch.nn import functional as F

import deepens as d
from deepens.layers.parameterized import scaled_bias, scaled_weight

M = 4


def mods(ens):
    return {name: m.values for name, m in ens.modulations().items()}


def explicit_mlp(net, values, x, m, hidden, act=torch.relu, modulate_output=False):
    """x_α = u_α ⊙ φ(v_α ⊙ (W x_α + b)) per member, written out (EE Eq. 1)."""
    outs = []
    for a in range(m):
        h = x[a] if x.dim() == 3 else x
        if "u0" in values:
            h = h * values["u0"][a]
        for k in range(1, hidden + 1):
            layer = net.get_submodule(f"fc{k}")
            z = F.linear(h, scaled_weight(layer), scaled_bias(layer))
            if f"v{k}" in values:
                z = z * values[f"v{k}"][a]
            h = act(z)
            if f"u{k}" in values:
                h = h * values[f"u{k}"][a]
        y = F.linear(h, scaled_weight(net.readout), scaled_bias(net.readout))
        if modulate_output:
            y = y * values[f"v{hidden + 1}"][a]
        outs.append(y)
    return torch.stack(outs)


def explicit_conv(net, values, x, m, layers=4):
    outs = []
    for a in range(m):
        h = x
        for k in range(1, layers + 1):
            z = net.get_submodule(f"conv{k}")(h)
            if f"v{k}" in values:
                z = z * values[f"v{k}"][a][:, None, None]
            h = torch.relu(z)
            if f"u{k}" in values:
                h = h * values[f"u{k}"][a][:, None, None]
            h = net.get_submodule(f"pool{k}")(h)
        outs.append(net.readout(torch.flatten(h, 1)))
    return torch.stack(outs)


def test_all_modulations_one_equals_reference_network():
    net = d.MLP(6, [8, 8], 3, bias=True, bias_std=0.2).double()
    ens = d.BatchEnsemble(net, M, u=d.Constant(1), v=d.Constant(1), modulate_input=True, modulate_output=True)
    x = torch.randn(5, 6, dtype=torch.float64)
    out = ens(x)
    assert torch.allclose(out, net(x).expand(M, -1, -1), atol=1e-13)
    conv = d.ConvNet(1, 4, width=0.125).double()
    ens = d.BatchEnsemble(conv, M, u=d.Constant(1), v=d.Constant(1))
    xi = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    assert torch.allclose(ens(xi), conv(xi).expand(M, -1, -1), atol=1e-13)


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(u=d.Sign(), v=None),
        dict(u=None, v=d.ShiftedNormal(0.5)),
        dict(u={-1: d.Normal(0, 1)}, v=None),
        dict(modulate_input=True, modulate_output=True),
        dict(parameterization="ntk"),
    ],
    ids=["u+v", "u-only", "v-only", "last-u", "in+out", "ntk"],
)
@pytest.mark.parametrize("per_member", [False, True])
def test_mlp_equals_explicit_loop_outputs_and_gradients(kw, per_member):
    kw = dict(kw)
    param = kw.pop("parameterization", "standard")
    net = d.MLP(6, [8, 7], 3, bias=True, bias_std=0.3, parameterization=param).double()
    ens = d.BatchEnsemble(net, M, seed=5, **kw)
    x = torch.randn(M, 5, 6, dtype=torch.float64) if per_member else torch.randn(5, 6, dtype=torch.float64)
    out = ens(x)
    shared_net = ens.net  # shared weights live in the traced copy
    ref = explicit_mlp(shared_net, mods(ens), x, M, 2, modulate_output=kw.get("modulate_output", False))
    assert torch.allclose(out, ref, atol=1e-12)

    weights = torch.randn_like(out)
    params = list(ens.parameters())
    g_ens = torch.autograd.grad((out * weights).sum(), params)
    g_ref = torch.autograd.grad((ref * weights).sum(), params, allow_unused=True)
    for p, a, b in zip(params, g_ens, g_ref, strict=True):
        assert b is not None
        assert torch.allclose(a, b, atol=1e-11), p.shape


def test_conv_equals_explicit_loop():
    net = d.ConvNet(2, 5, width=0.125).double()
    ens = d.BatchEnsemble(net, M, seed=1)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    out = ens(x)
    ref = explicit_conv(ens.net, mods(ens), x, M)
    assert torch.allclose(out, ref, atol=1e-12)
    weights = torch.randn_like(out)
    params = list(ens.parameters())
    g_ens = torch.autograd.grad((out * weights).sum(), params)
    g_ref = torch.autograd.grad((ref * weights).sum(), params)
    for a, b in zip(g_ens, g_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-11)


def test_shared_weights_are_copied_from_net_and_modulation_placement():
    net = d.MLP(6, [8, 7], 3)
    ens = d.BatchEnsemble(net, M, seed=0)
    assert torch.equal(ens.net.fc1.weight, net.fc1.weight)
    assert ens.net.fc1.weight is not net.fc1.weight  # the ensemble owns its copy
    assert sorted(ens.modulations()) == ["u1", "u2", "v1", "v2"]  # no input / output modulation
    ens_io = d.BatchEnsemble(net, M, modulate_input=True, modulate_output=True, seed=0)
    assert sorted(ens_io.modulations()) == ["u0", "u1", "u2", "v1", "v2", "v3"]


def test_frozen_modulations_receive_no_gradient():
    net = d.MLP(6, [8, 7], 3)
    ens = d.BatchEnsemble(net, M, trainable={"u": False, "v": True}, seed=0)
    names = {n for n, _ in ens.named_individual_parameters()}
    assert names == {"net.modulations.v1.values", "net.modulations.v2.values"}
    ens(torch.randn(5, 6)).sum().backward()
    for name, m in ens.modulations().items():
        if name.startswith("u"):
            assert not m.values.requires_grad and m.values.grad is None
        else:
            assert m.values.grad is not None and m.values.grad.abs().sum() > 0


def test_parameter_count_adds_m_times_modulated_widths():
    net = d.MLP(5, [7, 9], 3)
    shared = 5 * 7 + 7 * 9 + 9 * 3
    count = lambda e: sum(p.numel() for p in e.parameters())  # noqa: E731
    assert count(d.BatchEnsemble(net, M)) == shared + M * (7 + 7 + 9 + 9)
    assert count(d.BatchEnsemble(net, M, v=None)) == shared + M * (7 + 9)
    assert count(d.BatchEnsemble(net, M, modulate_input=True, modulate_output=True)) == shared + M * (
        5 + 7 + 7 + 9 + 9 + 3
    )
    assert count(d.MCDropout(net, M)) == shared  # frozen masks are buffers
    conv = d.ConvNet(3, 10, width=0.25)
    c = conv.channels
    assert count(d.BatchEnsemble(conv, M)) == count(conv) + M * 2 * sum(c)
    ens = d.BatchEnsemble(conv, M)
    assert sum(p.numel() for p in ens.shared_parameters()) == count(conv)
    assert sum(p.numel() for p in ens.individual_parameters()) == M * 2 * sum(c)


def test_mc_dropout_fixed_masks_stay_fixed():
    net = d.MLP(6, [16, 16], 3)
    ens = d.MCDropout(net, M, mask=d.Bernoulli(0.5), seed=3)
    before = {k: v.clone() for k, v in mods(ens).items()}
    x = torch.randn(4, 6)
    a, b = ens(x), ens(x)
    assert torch.equal(a, b)
    for k, v in mods(ens).items():
        assert torch.equal(v, before[k])
    assert sorted(before) == ["u1", "u2"]
    assert not torch.allclose(a[0], a[1])  # members differ


def test_mc_dropout_resampled_masks_change_and_are_reproducible():
    net = d.MLP(6, [16, 16], 3)
    ens = d.MCDropout(net, M, mask=d.Bernoulli(0.5), resample=True, seed=3)
    twin = d.MCDropout(net, M, mask=d.Bernoulli(0.5), resample=True, seed=3)
    x = torch.randn(4, 6)
    a1 = ens(x)
    m1 = {k: v.clone() for k, v in mods(ens).items()}
    a2 = ens(x)
    m2 = {k: v.clone() for k, v in mods(ens).items()}
    assert not torch.equal(a1, a2)
    assert all(not torch.equal(m1[k], m2[k]) for k in m1)
    assert torch.equal(twin(x), a1) and torch.equal(twin(x), a2)  # same seed, same sequence


def test_mc_dropout_layers_selection_and_frozen():
    net = d.MLP(6, [8, 8, 8], 3)
    ens = d.MCDropout(net, M, mask=d.Normal(0, 1), layers=[-1])
    assert sorted(ens.modulations()) == ["u3"]
    assert list(ens.individual_parameters()) == []


def test_first_k_members_of_batch_ensemble():
    net = d.ConvNet(1, 4, width=0.125)
    ens = d.BatchEnsemble(net, 5, seed=0)
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(ens.first(3)(x), ens(x)[:3], atol=1e-6)


def _bn_cnn(momentum=0.1):
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4, momentum=momentum),
                               torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(6, 3))


STRATEGY_CASES = {
    "convnet": lambda: d.BatchEnsemble(d.ConvNet(2, 5, width=0.125), M, seed=1),
    "bn-edges": lambda: d.BatchEnsemble(_bn_cnn(), M, seed=2, modulate_input=True, modulate_output=True),
    "mc-dropout-resampled": lambda: d.MCDropout(_bn_cnn(momentum=None), M, seed=3, resample=True),
    # a trained u with exact zeros (the fused chain runs its modules plainly) and a v with a zero channel
    "zeros": lambda: d.BatchEnsemble(_bn_cnn(), M, u="bernoulli:0.5", v="bernoulli:0.7", seed=4),
}


@pytest.mark.parametrize("case", sorted(STRATEGY_CASES))
@pytest.mark.parametrize("per_member", [False, True])
def test_every_strategy_and_memory_mode_computes_the_same_numbers(case, per_member):
    """Members one at a time ('chunks'), per-member slices ('members') and one grouped call ('grouped'), each with
    the lean (fused modulated ReLU, saving its output alone) and the plain graph: the same outputs, gradients,
    batch-norm buffers and mask draws (float64)."""
    torch.manual_seed(5)
    base = STRATEGY_CASES[case]().double()
    x = torch.randn(((M,) if per_member else ()) + (3, 2, 8, 8), dtype=torch.float64)
    if case == "zeros":
        assert any(bool((mod.values == 0).any()) for mod in base.modulations().values())
    results = {}
    for strategy in ("grouped", "members", "chunks"):
        for lean in (False, True):
            ens = __import__("copy").deepcopy(base)
            ens.conv_strategy, ens.lean = strategy, lean
            outs, grads = [], {}
            for step in range(3):  # resampled masks and running statistics move on; then frozen statistics
                ens.train(step < 2)
                out = ens(x)
                (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
                outs.append(out.detach())
            grads = {n: p.grad.clone() for n, p in ens.named_parameters()}
            buffers = {n: b.clone() for n, b in ens.named_buffers()}
            results[strategy, lean] = (outs, grads, buffers)
    ref_outs, ref_grads, ref_buffers = results["grouped", False]
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    for key, (outs, grads, buffers) in results.items():
        for a, b in zip(outs, ref_outs, strict=True):
            assert torch.allclose(a, b, rtol=0, atol=1e-12), key
        assert grads.keys() == ref_grads.keys()
        for name in grads:
            assert torch.allclose(grads[name], ref_grads[name], rtol=1e-10, atol=1e-12 * scale), (key, name)
        for name in buffers:
            assert torch.allclose(buffers[name].double(), ref_buffers[name].double(), rtol=0, atol=1e-12), (key, name)


def test_auto_runs_a_convolutional_batch_ensemble_member_by_member_on_large_batches_only():
    """'auto' on the CPU: one member at a time from 2^17 folded input numbers (shared or per-member batches), one
    folded pass below, and never when a module of the network has hooks or under torch.func."""
    from unittest import mock

    ens = d.BatchEnsemble(_bn_cnn(), M, seed=0)
    per_sample = 2 * 8 * 8
    calls = []
    with mock.patch.object(d.BatchEnsemble, "_run_members", autospec=True,
                           side_effect=lambda self, *a: calls.append(1) or d.Ensemble._run_members(self, *a)):
        least = 2**17 // (M * per_sample)  # the smallest batch a member that is run member by member
        for batch, per_member, chunked in ((least, False, True), (least - 1, False, False), (least, True, True),
                                           (least - 1, True, False)):
            calls.clear()
            shape = ((M,) if per_member else ()) + (batch, 2, 8, 8)
            ens(torch.randn(shape))
            assert bool(calls) == chunked, (batch, per_member)
        calls.clear()
        handle = ens.net.get_submodule("0").register_forward_hook(lambda *a: None)
        ens(torch.randn(2**10, 2, 8, 8))
        handle.remove()
        ens.eval()
        torch.func.vmap(ens)(torch.randn(1, 2**10, 2, 8, 8))
        assert calls == []


def test_a_failing_member_by_member_pass_restores_the_ensemble():
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 36, 3))
    ens = d.MCDropout(net, M, seed=0, resample=True)
    ens.conv_strategy = "chunks"
    head, calls = ens.net.get_submodule("4"), []

    def fails(x):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the second member fails")
        return torch.nn.functional.linear(x, head.weight, head.bias)

    head.forward = fails
    before = {n: t for n, t in list(ens.named_parameters()) + list(ens.named_buffers())}
    with pytest.raises(RuntimeError, match="second member"):
        ens(torch.randn(3, 2, 8, 8))
    after = {n: t for n, t in list(ens.named_parameters()) + list(ens.named_buffers())}
    assert before.keys() == after.keys() and all(after[n] is before[n] for n in before)
    assert ens.ctx.members == M and not ens.ctx.chunked and not ens.ctx.shared
    assert all(mod.resample for mod in ens.modulations().values())
    assert ens(torch.randn(3, 2, 8, 8)).shape == (M, 3, 3)
