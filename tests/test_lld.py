"""Last-layer dropout: members as EE Eq. (64) and single-pass inference as Eq. (65)."""

import torch

import deepens as d
from deepens.layers.parameterized import scaled_bias, scaled_weight


def features(net, x):
    h = x
    for name, module in net.named_children():
        if name == "readout":
            return h
        h = module(h)
    raise AssertionError


def test_members_are_readouts_of_masked_features():
    net = d.MLP(6, [8, 9], 3, bias=True, bias_std=0.5).double()
    ens = d.LastLayerDropout(net, 5, seed=0)
    x = torch.randn(7, 6, dtype=torch.float64)
    u = ens.head.values
    phi = features(net, x)
    ref = torch.stack([(phi * u[a]) @ scaled_weight(net.readout).T + scaled_bias(net.readout) for a in range(5)])
    assert torch.allclose(ens(x), ref, atol=1e-12)
    xm = torch.randn(5, 7, 6, dtype=torch.float64)
    ref_m = torch.stack([(features(net, xm[a]) * u[a]) @ net.readout.weight.T + net.readout.bias for a in range(5)])
    assert torch.allclose(ens(xm), ref_m, atol=1e-12)


def test_single_pass_equals_mean_of_members():
    for net, x in (
        (d.MLP(6, [32, 32], 10), torch.randn(16, 6)),
        (d.ConvNet(3, 100, width=0.25), torch.randn(4, 3, 16, 16)),
    ):
        ens = d.LastLayerDropout(net, 50, seed=1)
        single = ens.predict_logits_mean(x)
        mean = ens(x).mean(0)
        assert (single - mean).abs().max() < 1e-6
    net64 = d.MLP(6, [32], 10).double()
    ens = d.LastLayerDropout(net64, 50, seed=1)
    x = torch.randn(9, 6, dtype=torch.float64)
    assert (ens.predict_logits_mean(x) - ens(x).mean(0)).abs().max() < 1e-12


def test_lld_shares_all_parameters_and_first_k():
    net = d.MLP(6, [8], 3)
    ens = d.LastLayerDropout(net, 6, mask=d.ShiftedNormal(0.5), seed=0)
    assert sum(p.numel() for p in ens.parameters()) == sum(p.numel() for p in net.parameters())
    assert list(ens.individual_parameters()) == []
    x = torch.randn(4, 6)
    assert torch.allclose(ens.first(2)(x), ens(x)[:2], atol=1e-6)
    assert torch.allclose(ens.first(2).predict_logits_mean(x), ens(x)[:2].mean(0), atol=1e-6)


def test_gradients_flow_to_shared_weights_only():
    net = d.MLP(6, [8], 3)
    ens = d.LastLayerDropout(net, 4, seed=0)
    ens(torch.randn(5, 6)).sum().backward()
    assert ens.net.fc1.weight.grad is not None
    assert not ens.head.values.requires_grad


def test_cached_single_pass_follows_weight_updates():
    net = d.MLP(6, [8], 3).double()
    ens = d.LastLayerDropout(net, 7, seed=0)
    x = torch.randn(5, 6, dtype=torch.float64)
    with torch.no_grad():
        first = ens.predict_logits_mean(x)
        assert torch.allclose(first, ens(x).mean(0), atol=1e-12)
        ens.net.readout.readout.weight.add_(1.0)  # an optimizer step changes the weight in place
        second = ens.predict_logits_mean(x)
        assert not torch.allclose(first, second)
        assert torch.allclose(second, ens(x).mean(0), atol=1e-12)
    # with gradients the single pass is differentiable
    out = ens.predict_logits_mean(x).sum()
    out.backward()
    assert ens.net.readout.readout.weight.grad is not None
