"""Standard vs NTK parameterization: forward multipliers, initial distributions."""

import math

import pytest
import torch
from torch.nn import functional as F

from deepens.layers import Conv2d, Linear


def test_ntk_linear_forward_multiplies_by_sigma_over_sqrt_fan_in():
    layer = Linear(50, 7, bias=True, parameterization="ntk", weight_std=1.3, bias_std=0.2).double()
    x = torch.randn(4, 50, dtype=torch.float64)
    expected = x @ (layer.weight * 1.3 / math.sqrt(50)).T + 0.2 * layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-13)


def test_initial_weight_std():
    torch.manual_seed(0)
    std = Linear(400, 500, parameterization="standard", weight_std=2.0).weight.std().item()
    assert std == pytest.approx(2.0 / math.sqrt(400), rel=0.01)
    ntk = Linear(400, 500, parameterization="ntk", weight_std=2.0).weight.std().item()
    assert ntk == pytest.approx(1.0, rel=0.01)
    xav = Conv2d(64, 128, 3, init="xavier").weight.std().item()
    assert xav == pytest.approx(math.sqrt(2.0 / (64 * 9 + 128 * 9)), rel=0.02)


def test_both_parameterizations_give_the_same_output_variance():
    torch.manual_seed(0)
    x = torch.randn(1, 256)
    outs = {p: [] for p in ("standard", "ntk")}
    for _ in range(400):
        for p in outs:
            outs[p].append(Linear(256, 64, parameterization=p, weight_std=1.5)(x))
    # E[z²] = σ² |x|²/fan_in in both
    target = 1.5**2 * float((x**2).sum()) / 256
    for p, values in outs.items():
        second = torch.cat(values).pow(2).mean().item()
        assert second == pytest.approx(target, rel=0.03), p


def test_standard_conv_forward_is_plain():
    layer = Conv2d(3, 5, 3, padding=1, bias=True, bias_std=0.1).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert torch.allclose(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=1), atol=1e-13)
