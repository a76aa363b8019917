"""Design families: closed-form parameter and FLOP counts against the real modules and torch's flop
counter; fan-ins and the variance exponent S(n) under each convention."""

import pytest
import torch

import deepens as d
from deepens.design import BottleneckFamily, MLPFamily, ResNeXt29Family, count_flops, count_parameters
from deepens.design.families import family_from_name


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("m", "n"), [(1, 500), (30, 48), (7, 3)])
def test_mlp_counts_match_modules(bias, m, n):
    family = MLPFamily(784, 10, 6, bias=bias)
    module = family.build(m, n)
    assert count_parameters(module) == family.parameters(m, n)
    assert count_flops(module, (784,)) == family.flops(m, n)
    assert count_flops(module, (784,), batch=3) == 3 * family.flops(m, n)


@pytest.mark.parametrize(("channels", "k", "spatial"), [(256, 3, (8, 8)), (32, 5, (6, 4))])
@pytest.mark.parametrize(("m", "n"), [(1, 128), (37, 10), (4, 1)])
def test_bottleneck_counts_match_modules(channels, k, spatial, m, n):
    family = BottleneckFamily(channels, k, spatial)
    module = family.build(m, n)
    assert count_parameters(module) == family.parameters(m, n)
    assert count_flops(module, (channels,) + spatial) == family.flops(m, n)


@pytest.mark.parametrize(("m", "n", "classes", "image"), [(1, 128, 10, 32), (37, 10, 10, 32), (44, 8, 100, 32),
                                                          (3, 5, 10, 16)])
def test_resnext29_counts_match_modules(m, n, classes, image):
    family = ResNeXt29Family(classes, image)
    with torch.device("meta"):
        net = family.build(m, n)
    assert count_parameters(net) == family.parameters(m, n)
    assert count_flops(net, (3, image, image)) == family.flops(m, n)
    # affine in the cardinality: fixed + m·member
    assert family.parameters(m, n) == family.fixed_parameters() + m * family.member_parameters(n)


def test_resnext29_flops_match_the_paper():
    """CE Table 5: 1×128d 4.19, 3×64d 4.15, 44×8d 4.20 GFLOPs (ours: 4.18, 4.15, 4.19)."""
    family = ResNeXt29Family()
    assert round(family.flops(3, 64) / 1e9, 2) == 4.15
    assert abs(family.flops(1, 128) / 1e9 - 4.19) < 0.015
    assert abs(family.flops(44, 8) / 1e9 - 4.20) < 0.015


def test_count_flops_leaves_the_module_untouched():
    net = d.MLP(5, [4], 2)
    before = [p.clone() for p in net.parameters()]
    assert count_flops(net, (5,)) == 2 * (5 * 4 + 4 * 2)
    assert all(p.device.type == "cpu" and torch.equal(p, q) for p, q in zip(net.parameters(), before, strict=True))
    with pytest.raises(d.DeepensError, match="input_shape"):
        count_flops(net, (0,))


def test_exponents_under_each_convention():
    mlp = MLPFamily(784, 10, 6)
    assert mlp.exponent(48) == pytest.approx(5 / 48, rel=1e-15)
    assert mlp.exponent(48, "widths") == pytest.approx(5 / 48, rel=1e-15)
    assert mlp.exponent(48, "all") == pytest.approx(5 / 48 + 1 / 784, rel=1e-15)
    block = BottleneckFamily(256)
    assert block.exponent(10) == pytest.approx(1 / 90 + 1 / 10, rel=1e-15)  # fan-ins 9n and n
    assert block.exponent(10, "widths") == pytest.approx(2 / 10, rel=1e-15)  # n = [n, n]
    assert block.exponent(10, "all") == pytest.approx(1 / 256 + 1 / 90 + 1 / 10, rel=1e-15)
    assert [f.fan_in for f in block.fan_ins(10)] == [256, 90, 10]
    assert ResNeXt29Family().exponent(10) == block.exponent(10)
    with pytest.raises(d.DeepensError, match="terms"):
        mlp.exponent(4, "bogus")
    with pytest.raises(d.DeepensError, match="block"):
        family_from_name("vgg")
