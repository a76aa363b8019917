"""NTK drift under gradient flow (CE Theorem 1): the change depends on m·n."""

import math

import pytest
import torch
from sklearn.datasets import load_digits

import deepens as d
from deepens.ensembles.collegial import CollegialMLP
from deepens.kernels import ensemble_ntk, kernel_drift


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    x = x / x.norm(dim=1, keepdim=True) * 8  # ‖x‖² = 64 = input dimension
    targets = torch.nn.functional.one_hot(torch.tensor(y), 10).double()
    return x[:256], targets[:256], x[1000:1008]


def _drift(digits, m, n, seeds=6):
    x, y, probe = digits
    net = CollegialMLP(64, [n] * 3, 10, m, activation="erf", parameterization="ntk", seed=0).double()
    r = kernel_drift(d.vectorize(net, seeds, seed=1), x, y, probe, lr=0.5, steps=200)
    assert bool((r["loss_end"] < 0.5 * r["loss_start"]).all())  # it trained
    return float(r["relative"].mean())


@pytest.mark.slow
def test_kernel_change_scales_with_m_times_n(digits):
    """CE Fig. 9 analogue (erf, analytic as Theorem 1 assumes): the ensemble m = n = 8 and the single
    network of width 64 (equal m·n) move alike; the ensemble moves much less than one member of width 8,
    and both move less at m·n = 64 than at m·n = 16."""
    single8, ens8, wide64 = _drift(digits, 1, 8), _drift(digits, 8, 8), _drift(digits, 1, 64)
    ens4, wide16 = _drift(digits, 4, 4), _drift(digits, 1, 16)
    assert abs(math.log(ens8 / wide64)) < math.log(1.35), (ens8, wide64)
    assert ens8 < 0.75 * single8, (ens8, single8)
    assert ens8 < 0.8 * ens4 and wide64 < 0.8 * wide16, (ens4, ens8, wide16, wide64)


def test_drift_vanishes_for_a_negligible_step_and_starts_from_the_direct_ntk(digits):
    x, y, probe = digits
    net = CollegialMLP(64, [6, 6], 10, 3, parameterization="ntk", seed=0).double()
    k0 = ensemble_ntk(net, probe).total()[0, 0]
    r = kernel_drift(net, x[:32], y[:32], probe, lr=1e-12, steps=1)
    assert torch.allclose(r["initial"][0], k0, atol=1e-12)
    assert float(r["relative"][0]) < 1e-9
    with pytest.raises(d.DeepensError, match="y"):
        kernel_drift(net, x[:32], torch.zeros(32, dtype=torch.long), probe, lr=0.1, steps=1)
    with pytest.raises(d.DeepensError, match="lr"):
        kernel_drift(net, x[:32], y[:32] * 1e200, probe, lr=1e3, steps=50)


def test_the_ensemble_kernel_change_includes_the_cross_member_blocks(digits):
    """A deep ensemble's cross-member NTK blocks are zero before and after training, so the relative change of
    the whole (M, M, P, P) kernel is the members' changes pooled: ‖ΔΘ‖² = Σ_α ‖ΔK_α‖², ‖Θ₀‖² = Σ_α ‖K_α‖²;
    a BatchEnsemble's is not (shared weights couple the members)."""
    x, y, probe = digits
    ens = d.DeepEnsemble(d.MLP(64, [16, 16], 10, parameterization="ntk"), 3, seed=0).double()
    r = kernel_drift(ens, x[:64], y[:64], probe, lr=0.5, steps=5)
    delta = (r["final"] - r["initial"]).flatten(1).norm(dim=1)
    pooled = float(delta.norm() / r["initial"].flatten(1).norm(dim=1).norm())
    assert r["relative_ensemble"] == pytest.approx(pooled, rel=1e-10)
    be = d.BatchEnsemble(d.MLP(64, [16, 16], 10, parameterization="ntk"), 3, seed=0).double()
    full0 = ensemble_ntk(be, probe).total()
    r = kernel_drift(be, x[:64], y[:64], probe, lr=0.5, steps=5)
    full1 = ensemble_ntk(be, probe).total()
    assert r["relative_ensemble"] == pytest.approx(float((full1 - full0).norm() / full0.norm()), rel=1e-10)
    idx = torch.arange(3)
    assert float(full0[0, 1].abs().max()) > 1e-3 * float(full0[idx, idx].abs().max())  # coupled members
