"""The infinite-width statement (talk, "Emergent equivariance of deep ensembles"), checked in float64:
with orbit augmentation μ_t (and Σ_t) is invariant / equivariant for every t and every input, also out of
distribution; without augmentation it is not. And the discrete-step kernel prediction against the
explicit linearised gradient-descent recursion."""

import math

import numpy as np
import pytest
import torch

import deepens.symmetry as s
from deepens.kernels import KernelPredictor, Network, infinite_width_kernels
from deepens.study.equivariance import ising_energies

NETS = {
    "relu-2": Network.mlp(2, "relu", weight_std=math.sqrt(2)),
    "erf-3-bias": Network.mlp(3, "erf", weight_std=1.5, bias_std=0.3, readout_bias_std=0.1),
}
TIMES = [dict(t=0.3), dict(t=7.0), dict(t=math.inf), dict(steps=25)]


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("net", list(NETS))
def test_permutation_invariance_at_every_time_out_of_distribution(net):
    group = s.symmetric(4)
    sym = s.Symmetry(s.PermutationAction(group))
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(12, 4)))
    y = torch.sort(x, -1).values @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)  # invariant target
    xa, ya = s.augment_orbits(x, y[:, None], sym)
    ood = torch.from_numpy(rng.standard_t(2, size=(9, 4)) * 4 + 2)  # heavy-tailed, shifted, scaled
    aug = s.InfiniteWidthEnsemble(xa, ya, NETS[net], lr=0.5, with_covariance=True)
    plain = s.InfiniteWidthEnsemble(x, y[:, None], NETS[net], lr=0.5, with_covariance=True)
    for time in TIMES:
        worst_aug = worst_plain = 0.0
        base, var = aug.mean(ood, **time), aug.variance(ood, **time)
        for g in group.elements():
            moved = sym.input(g, ood)
            worst_aug = max(worst_aug, _rel(aug.mean(moved, **time), base), _rel(aug.variance(moved, **time), var))
            worst_plain = max(worst_plain, _rel(plain.mean(moved, **time), plain.mean(ood, **time)))
        assert worst_aug < 1e-8, (time, worst_aug)
        assert worst_plain > 1e-3, (time, worst_plain)  # the symmetry comes from the augmentation


@pytest.mark.parametrize("net", list(NETS))
def test_c4_lattice_equivariance_of_local_energies(net):
    size = 4
    act = s.LatticeRotation(size)
    sym = s.Symmetry(act, act)
    gen = torch.Generator().manual_seed(0)
    spins = torch.randint(0, 2, (20, size * size), generator=gen).double() * 2 - 1
    xa, ya = s.augment_orbits(spins, ising_energies(spins, size), sym)
    ood = torch.randn(10, size * size, generator=gen, dtype=torch.float64)  # spins from N(0, 1)
    aug = s.InfiniteWidthEnsemble(xa, ya, NETS[net], lr=1.0, loss="mean")
    plain = s.InfiniteWidthEnsemble(spins, ising_energies(spins, size), NETS[net], lr=1.0, loss="mean")
    for time in TIMES:
        for model, bound in ((aug, 1e-8), (plain, None)):
            orbit, elements = s.orbit_outputs(lambda z, m=model, kw=time: torch.from_numpy(m.mean(z, **kw)), ood, sym)
            expected = torch.stack([act(g, orbit[0]) for g in elements])
            err = float(s.equivariance_error(orbit, expected, orbit[0]).max())
            if bound is None:
                assert err > 1e-3, (time, err)
            else:
                assert err < bound, (time, err)


def test_rotation_group_equivariance_of_the_cross_product_prediction():
    group = s.octahedral()
    sym = s.Symmetry(s.VectorRotation(group, 2), s.VectorRotation(group, 1))
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(6, 6)))
    y = torch.linalg.cross(x[:, :3], x[:, 3:])
    xa, ya = s.augment_orbits(x, y, sym)
    model = s.InfiniteWidthEnsemble(xa, ya, NETS["relu-2"], lr=1.0, steps=40)
    ood = torch.from_numpy(rng.normal(size=(5, 6)) * 3)
    orbit, elements = s.orbit_outputs(model, ood, sym)
    expected = torch.stack([sym.output(g, orbit[0]) for g in elements])
    assert float(s.equivariance_error(orbit, expected, orbit[0]).max()) < 1e-8
    so3 = s.SO3()  # a finite subgroup's augmentation does not make it SO(3)-equivariant
    test = s.Symmetry(s.VectorRotation(so3, 2), s.VectorRotation(so3, 1))
    orbit, elements = s.orbit_outputs(model, ood, test, so3.sample(4, seed=0))
    expected = torch.stack([test.output(g, orbit[0]) for g in elements])
    assert float(s.equivariance_error(orbit, expected, orbit[0]).mean()) > 1e-3


def test_discrete_steps_equal_the_linearised_gradient_descent_recursion():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(15, 5))
    xt = rng.normal(size=(4, 5))
    y = rng.normal(size=(15, 2))
    net = NETS["erf-3-bias"]
    theta = infinite_width_kernels(x, network=net).ntk_same
    cross = infinite_width_kernels(xt, x, net).ntk_same
    eta = 1.0 / np.linalg.eigvalsh(theta).max()
    pred = KernelPredictor(theta, y, lr=eta)
    f_train, f_test = np.zeros_like(y), np.zeros((4, 2))
    for k in range(1, 31):
        resid = f_train - y
        f_train, f_test = f_train - eta * theta @ resid, f_test - eta * cross @ resid
        if k in (1, 7, 30):
            assert np.abs(pred.mean(cross, steps=k) - f_test).max() < 1e-10
            assert np.abs(pred.mean(theta, steps=k) - f_train).max() < 1e-10
    assert np.abs(pred.mean(cross, steps=0)).max() == 0.0
    # many small steps approach gradient flow at t = steps · (step size)
    fine = KernelPredictor(theta, y, lr=eta / 1000)
    assert np.abs(fine.mean(cross, steps=5000) - pred.mean(cross, t=5.0)).max() < 1e-3 * np.abs(f_test).max() * 10


@pytest.mark.parametrize("readout", ["gap", "flatten"])
def test_infinite_width_cnn_ensemble_becomes_c4_invariant_with_orbit_augmentation(readout):
    """A CNN (zero padding, odd kernels) read from its module: trained on C4-orbit-augmented square images its
    infinite-width ensemble predicts rotated test images as the originals to 1e-8; without augmentation not."""
    from torch import nn

    from deepens.layers import Conv2d, Linear

    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), Linear(8, 3, parameterization="ntk")] if readout == "gap" else \
        [nn.Flatten(), Linear(8 * 25, 3, parameterization="ntk")]
    cnn = nn.Sequential(Conv2d(1, 8, 3, padding=1, parameterization="ntk", weight_std=1.4, bias=True, bias_std=0.1),
                        nn.ReLU(), Conv2d(8, 8, 3, padding=1, parameterization="ntk", weight_std=1.4), nn.ReLU(),
                        *head)
    sym = s.Symmetry(s.LatticeRotation(5, flat=False))
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(6, 1, 5, 5)))
    y = torch.from_numpy(np.eye(3)[rng.integers(0, 3, 6)])
    xa, ya = s.augment_orbits(x, y, sym)
    test = torch.from_numpy(rng.normal(size=(4, 1, 5, 5)) * 2 + 0.5)  # out of distribution
    aug = s.InfiniteWidthEnsemble(xa, ya, cnn, lr=0.5, with_covariance=True)
    plain = s.InfiniteWidthEnsemble(x, y, cnn, lr=0.5)
    for time in (dict(t=3.0), dict(t=math.inf)):
        base, var, base_plain = aug.mean(test, **time), aug.variance(test, **time), plain.mean(test, **time)
        for g in (1, 2, 3):
            moved = sym.input(g, test)
            assert _rel(aug.mean(moved, **time), base) < 1e-8
            assert _rel(aug.variance(moved, **time), var) < 1e-8
            assert _rel(plain.mean(moved, **time), base_plain) > 1e-3
