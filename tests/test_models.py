"""Reference networks: closed-form parameter counts and the EE ConvNet's structure."""

import torch
from torch import nn

import deepens as d


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_mlp_parameter_count_closed_form():
    assert count(d.MLP(64, [128, 128], 10)) == 64 * 128 + 128 * 128 + 128 * 10
    assert count(d.MLP(64, [128, 128], 10, bias=True)) == 64 * 128 + 128 * 128 + 128 * 10 + 128 + 128 + 10


def test_convnet_parameter_count_closed_form():
    for width in (0.25, 1.0, 2.0):
        c = [round(k * width) for k in (64, 128, 256, 512)]
        expected = 9 * (3 * c[0] + c[0] * c[1] + c[1] * c[2] + c[2] * c[3]) + c[3] * 100
        assert count(d.ConvNet(3, 100, width=width)) == expected


def test_convnet_is_the_ee_architecture():
    net = d.ConvNet(3, 100)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [64, 128, 256, 512]
    assert all(m.kernel_size == (3, 3) and m.bias is None for m in convs)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) for m in net.modules())
    assert net.readout.bias is None
    # works on 8×8 digits and 32×32 CIFAR alike
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert d.ConvNet(1, 10, width=0.25)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_mlp_default_gain_preserves_relu_signal():
    torch.manual_seed(0)
    x = torch.randn(512, 256)
    net = d.MLP(256, [1024] * 4, 1)
    h = x
    for name, module in net.named_children():
        if name == "readout":
            break
        h = module(h)
    # He initialisation: ReLU halves the second moment and σ_w² = 2 restores it, layer after layer
    assert abs(h.pow(2).mean().item() - x.pow(2).mean().item()) < 0.1


def test_reset_parameters_redraws():
    net = d.MLP(4, [8], 2)
    before = net.fc1.weight.clone()
    net.reset_parameters()
    assert not torch.equal(before, net.fc1.weight)
