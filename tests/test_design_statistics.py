"""Monte Carlo NTK statistics (CE Eqs. 5, 9, 11): draws against separately built networks, the Neural
Mean Kernel against the analytic infinite-width NTK, Var(K^e) = Var(K_n)/m with real collegial
modules, and the delta-method standard error against the bootstrap."""

import math

import numpy as np
import pytest
import torch

import deepens as d
from deepens.design import BottleneckFamily, MLPFamily, ntk_draws, ntk_statistics
from deepens.ensembles.collegial import CollegialMLP
from deepens.kernels import Network, ensemble_ntk, infinite_width_kernels


def test_draws_are_reproducible():
    family = MLPFamily(6, 1, 3)
    a = ntk_draws(family, 5, draws=40, seed=3)
    b = ntk_draws(family, 5, draws=40, seed=3)
    c = ntk_draws(family, 5, draws=40, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (40, 2, 2) and torch.allclose(a, a.transpose(1, 2), atol=1e-13)


def test_each_draw_is_the_ntk_of_an_independent_network():
    """The chunked vectorized draws equal the NTK of the same weights in a standalone network, and the
    draws of the conv family are exactly the empirical NTK of a separately built block."""
    family = BottleneckFamily(4, 3)
    x = family.default_inputs(3, 0)
    net = family.member_network(2).double()
    ens = d.DeepEnsemble(net, 5, seed=0)
    got = ensemble_ntk(ens, x).individual
    for t in (0, 4):
        member = ens.member(t)
        want = ensemble_ntk(member, x).total()[0, 0]
        assert torch.allclose(got[t], want, atol=1e-12, rtol=1e-12)
    # small memory budget: many chunks, same statistics machinery
    values = ntk_draws(family, 2, draws=7, inputs=x, max_bytes=1)
    assert values.shape == (7, 3, 3) and bool(torch.isfinite(values).all())


def test_neural_mean_kernel_matches_infinite_width_ntk():
    """CE Fig. 2: the NMK barely depends on width and sits on the infinite-width NTK. For ReLU the
    diagonal's mean is width-independent, so it matches within Monte Carlo error even at width 16; the
    off-diagonal has an O(1/n) correction (measured ≈ −6.6% at n = 16, −1.5% at n = 64, −0.35% at n = 256)."""
    family = MLPFamily(16, 1, 4)
    x = family.default_inputs(2, 0)
    kinf = infinite_width_kernels(x, network=Network.mlp(3, "relu", math.sqrt(2), 0.0, 1.0, 0.0)).ntk_same
    for width in (16, 64):
        s = ntk_statistics(family, width, draws=4000, inputs=x)
        se = np.sqrt(s.variance / s.draws)
        assert np.all(np.abs(np.diag(s.mean) - np.diag(kinf)) < 4 * np.diag(se)), (width, s.mean, kinf)
        assert abs(s.mean[0, 1] / kinf[0, 1] - 1) < 0.1 * 16 / width + 4 * se[0, 1] / abs(kinf[0, 1])


def _variance_ratio_se(a: torch.Tensor, b: torch.Tensor) -> float:
    """Standard error of log(var(a)/var(b)) for two independent samples (kurtosis-aware)."""
    def rel_var(v):
        r = v.shape[0]
        c = v - v.mean()
        kurt = float((c**4).mean() / (c**2).mean() ** 2)
        return (kurt - (r - 3) / (r - 1)) / r
    return math.sqrt(rel_var(a) + rel_var(b))


def test_collegial_kernel_variance_is_member_variance_over_m():
    """CE Eq. 11 with real modules: the NTK of 3000 independently initialised collegial MLPs (m = 4,
    computed on the whole module, not from its members) against 4 × that many single networks."""
    family = MLPFamily(16, 1, 4)
    x = family.default_inputs(2, 0)
    m, width, reps = 4, 8, 3000
    col = CollegialMLP(16, [width] * 3, 1, m, parameterization="ntk").double()
    ens = d.vectorize(col, reps, seed=0)
    ke = ensemble_ntk(ens, x).individual[:, 0, 0]
    single = ntk_statistics(family, width, draws=reps * m, inputs=x, seed=1)
    kn = single.entry("diagonal")
    log_ratio = math.log(float(ke.var()) * m / float(kn.var()))
    assert abs(log_ratio) < 4 * _variance_ratio_se(ke, kn), log_ratio
    assert abs(float(ke.mean()) / float(kn.mean()) - 1) < 4 * math.sqrt(float(ke.var()) / reps) / float(kn.mean())
    # grouping the single draws gives the same K^e statistics (Lemma 1's averages)
    grouped = single.ensemble_kernels(m)[:, 0, 0]
    assert grouped.shape == (reps,)
    assert torch.allclose(grouped[0], kn[:m].mean(), rtol=1e-14)
    assert abs(math.log(float(grouped.var()) / float(ke.var()))) < 4 * _variance_ratio_se(grouped, ke)


def test_delta_method_standard_error_matches_bootstrap():
    s = ntk_statistics(MLPFamily(16, 1, 4), 16, draws=3000)
    k = s.entry("diagonal")
    g = torch.Generator().manual_seed(0)
    boots = []
    for _ in range(400):
        idx = torch.randint(0, k.shape[0], (k.shape[0],), generator=g)
        kb = k[idx]
        boots.append(math.log(float(kb.pow(2).mean() / kb.mean() ** 2)))
    boot_se = float(np.std(boots, ddof=1))
    assert abs(s.log_ratio_stderr() / boot_se - 1) < 0.2  # 400 resamples: se of the se ≈ 4%
    assert s.ratio() == pytest.approx(1 + s.normalised_variance() * (s.draws - 1) / s.draws, rel=1e-12)


def test_statistics_refusals():
    family = MLPFamily(6, 1, 3)
    with pytest.raises(d.DeepensError, match="inputs"):
        ntk_draws(family, 4, draws=10, inputs=torch.randn(2, 5))
    with pytest.raises(d.DeepensError, match="draws"):
        ntk_draws(family, 4, draws=1)
    s = ntk_statistics(family, 4, draws=10)
    with pytest.raises(d.DeepensError, match="m"):
        s.ensemble_kernels(11)
    with pytest.raises(d.DeepensError, match="entry"):
        s.ratio("corner")
