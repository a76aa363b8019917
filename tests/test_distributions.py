"""Sample moments of every modulation distribution match its declared moments."""

import math

import numpy as np
import pytest
import torch

import deepens as d
from deepens.layers.distributions import parse_distribution

DISTRIBUTIONS = [
    d.Normal(0.0, 1.0),
    d.Normal(0.7, 0.3),
    d.ShiftedNormal(0.0),
    d.ShiftedNormal(0.6),
    d.ShiftedNormal(1.0),
    d.Bernoulli(0.8),
    d.Bernoulli(0.3, scale=True),
    d.Ternary(0.25, 0.5, 0.25),
    d.Ternary(0.1, 0.3, 0.6),
    d.Sign(),
    d.Constant(2.5),
]


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=lambda x: x.spec)
def test_sample_moments_match_declared(dist):
    n = 400_000
    x = dist.sample((n,), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    m1, m2 = float(x.mean()), float((x**2).mean())
    se1 = math.sqrt(max(float(x.var()), 0.0) / n)
    se2 = math.sqrt(max(float((x**2).var()), 0.0) / n)
    # 5 standard errors; exact (to rounding) for constants
    assert abs(m1 - dist.first_moment) <= 5 * se1 + 1e-12
    assert abs(m2 - dist.second_moment) <= 5 * se2 + 1e-12
    assert dist.variance == pytest.approx(dist.second_moment - dist.first_moment**2, abs=1e-15)


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=lambda x: x.spec)
def test_quadrature_reproduces_moments(dist):
    nodes, weights = dist.quadrature(40)
    assert np.sum(weights) == pytest.approx(1.0, abs=1e-12)
    assert np.sum(weights * nodes) == pytest.approx(dist.first_moment, abs=1e-12)
    assert np.sum(weights * nodes**2) == pytest.approx(dist.second_moment, abs=1e-12)


def test_gaussian_quadrature_integrates_smooth_functions():
    # E[exp(t u)] = exp(mean t + std² t² / 2) and E[(u - mean)^4] = 3 std^4
    dist = d.Normal(0.3, 0.8)
    nodes, weights = dist.quadrature(40)
    assert np.sum(weights * np.exp(0.5 * nodes)) == pytest.approx(math.exp(0.15 + 0.08), rel=1e-12)
    assert np.sum(weights * (nodes - 0.3) ** 4) == pytest.approx(3 * 0.8**4, rel=1e-12)


def test_shifted_normal_endpoints():
    assert d.ShiftedNormal(0.0).first_moment == 0.0 and d.ShiftedNormal(0.0).variance == 1.0
    one = d.ShiftedNormal(1.0)
    assert one.is_constant and one.first_moment == 1.0
    assert torch.equal(one.sample((5,)), torch.ones(5))
    # second moment is 1 for every p: the shift trades variance for mean
    for p in (0.0, 0.3, 0.6, 0.9):
        assert d.ShiftedNormal(p).second_moment == pytest.approx(1.0, abs=1e-15)


def test_bernoulli_values():
    x = d.Bernoulli(0.25, scale=True).sample((1000,), generator=torch.Generator().manual_seed(0))
    assert set(torch.unique(x).tolist()) <= {0.0, 4.0}
    y = d.Sign().sample((1000,), generator=torch.Generator().manual_seed(0))
    assert set(torch.unique(y).tolist()) == {-1.0, 1.0}


def test_sampling_is_reproducible_with_a_generator():
    for dist in DISTRIBUTIONS:
        a = dist.sample((50,), generator=torch.Generator().manual_seed(3))
        b = dist.sample((50,), generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b)


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=lambda x: x.spec)
def test_spec_round_trip(dist):
    assert parse_distribution(dist.spec) == dist


def test_parse_examples():
    assert parse_distribution("shifted-normal:0.3") == d.ShiftedNormal(0.3)
    assert parse_distribution("normal:0,1") == d.Normal(0, 1)
    assert parse_distribution("bernoulli:0.9") == d.Bernoulli(0.9)
    assert parse_distribution("bernoulli:0.9,scaled") == d.Bernoulli(0.9, scale=True)
    assert parse_distribution("ternary:0.25,0.5,0.25") == d.Ternary(0.25, 0.5, 0.25)
    assert parse_distribution("sign") == d.Sign()
    assert parse_distribution("constant:1") == d.Constant(1.0)
