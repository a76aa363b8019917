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


def test_batch_norm_below_the_readout_uses_each_members_own_batch():
    """LLD of a network with batch norms: on one batch per member, member α is the network (its batch norm in
    training mode) on x_α alone; the running buffers take the mean of those M updates; on a shared batch and in
    evaluation it is the network itself. Float64, against an explicit loop over members."""
    import copy

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5),
                              torch.nn.BatchNorm1d(5, momentum=None), torch.nn.ReLU(), torch.nn.Linear(5, 3)).double()
    m = 3
    ens = d.LastLayerDropout(net, m, seed=1).double().train()
    x = torch.randn(m, 6, 3, 5, 5, dtype=torch.float64)
    refs = [copy.deepcopy(ens) for _ in range(m)]
    out = ens(x)
    out.square().sum().backward()
    expected = []
    for a, ref in enumerate(refs):
        o = ref(x[a])[a]  # a shared batch x_α: the network's own batch norm on x_α
        o.square().sum().backward()
        expected.append(o)
    assert torch.allclose(out, torch.stack(expected), atol=1e-12)
    for name, p in ens.named_parameters():
        grad = sum(dict(ref.named_parameters())[name].grad for ref in refs)
        assert torch.allclose(p.grad, grad, atol=1e-10), name
    for name, buffer in ens.named_buffers():
        if "running" in name:
            mean = torch.stack([dict(ref.named_buffers())[name] for ref in refs]).mean(0)
            assert torch.allclose(buffer, mean, atol=1e-12), name
        elif "num_batches_tracked" in name:
            assert int(buffer) == 1
    for module in (ens.net.get_submodule("1"), ens.net.get_submodule("6")):  # shared batches, evaluation:
        torch_bn = (torch.nn.BatchNorm2d if module.running_mean.shape == (4,) else torch.nn.BatchNorm1d)(
            module.num_features, momentum=module.momentum).double()  # exactly nn.BatchNorm, buffers included
        torch_bn.load_state_dict({k: v.clone() for k, v in module.state_dict().items()})
        h = torch.randn((6, module.num_features) + ((5, 5) if isinstance(torch_bn, torch.nn.BatchNorm2d) else ()),
                        dtype=torch.float64)
        for training in (True, False):
            module.train(training)
            torch_bn.train(training)
            ens.ctx.shared = True
            try:
                assert torch.allclose(module(h), torch_bn(h), atol=1e-12)
            finally:
                ens.ctx.shared = False
            for key, value in torch_bn.state_dict().items():
                assert torch.equal(module.state_dict()[key], value), key
