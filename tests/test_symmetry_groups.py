"""Groups and their representations: ρ(g)ρ(h) = ρ(gh), ρ(e) = id, inverses, orbit sizes; vectorized
actions equal per-element / per-sample loops; augmentation permutes an augmented set exactly."""

import math

import numpy as np
import pytest
import torch

import deepens.symmetry as s
from deepens import DeepensError

FINITE = [
    (lambda: s.CyclicGroup(1), 1), (lambda: s.CyclicGroup(4), 4), (lambda: s.CyclicGroup(7), 7),
    (s.tetrahedral, 12), (s.octahedral, 24), (s.icosahedral, 60), (lambda: s.axis_rotations(4), 4),
    (lambda: s.symmetric(4), 24), (lambda: s.cyclic_shifts(5), 5),
    (lambda: s.PermutationGroup(4, [(1, 0, 2, 3), (0, 1, 3, 2)]), 4),
]


@pytest.mark.parametrize("make,order", FINITE)
def test_finite_group_axioms(make, order):
    g = make()
    assert g.order == order and g.elements() == list(range(order))
    table = g.cayley_table()
    e = g.identity()
    for a in range(order):
        assert sorted(table[a]) == list(range(order))  # Latin square: closure and cancellation
        assert table[a, e] == a and table[e, a] == a
        assert table[a, g.inverse(a)] == e and table[g.inverse(a), a] == e
    rng = np.random.default_rng(0)
    for a, b, c in rng.integers(0, order, size=(50, 3)):
        assert table[table[a, b], c] == table[a, table[b, c]]  # associativity


def test_rotation_groups_are_proper_rotations_and_nested():
    t, o = s.tetrahedral().matrices(), s.octahedral().matrices()
    for mats in (t, o, s.icosahedral().matrices()):
        assert np.allclose(np.einsum("gij,gkj->gik", mats, mats), np.eye(3), atol=1e-12)
        assert np.allclose(np.linalg.det(mats), 1.0)
    keys = {tuple(np.round(m, 6).ravel() + 0.0) for m in o}
    assert all(tuple(np.round(m, 6).ravel() + 0.0) in keys for m in t)  # T ⊂ O


def _x(shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape))


EXACT_ACTIONS = [
    (lambda: s.ImageRotation(4), (3, 2, 9, 9)),
    (lambda: s.ImageRotation(2), (3, 1, 6, 6)),
    (lambda: s.LatticeRotation(5), (4, 25)),
    (lambda: s.LatticeRotation(4, flat=False), (2, 3, 4, 4)),
    (lambda: s.VectorRotation(s.tetrahedral()), (5, 3)),
    (lambda: s.VectorRotation(s.octahedral(), copies=2), (5, 6)),
    (lambda: s.PermutationAction(s.symmetric(4)), (5, 4)),
    (lambda: s.PermutationAction(s.cyclic_shifts(6)), (2, 3, 6)),
]


@pytest.mark.parametrize("make,shape", EXACT_ACTIONS)
def test_exact_actions_are_representations(make, shape):
    act = make()
    g = act.group
    x = _x(shape)
    assert torch.equal(act(g.identity(), x), x)
    for a in g.elements():
        for b in g.elements():
            torch.testing.assert_close(act(a, act(b, x)), act(g.compose(a, b), x), rtol=0, atol=1e-12)
        torch.testing.assert_close(act(g.inverse(a), act(a, x)), x, rtol=0, atol=1e-12)
    orbit = act.orbit(x)
    assert orbit.shape == (g.order, *shape)
    distinct = {tuple(np.round(o[0].numpy().ravel(), 9)) for o in orbit}
    assert len(distinct) == g.order  # a generic input has a trivial stabiliser: the orbit has |G| points
    loop = torch.stack([act(a, x) for a in g.elements()])
    torch.testing.assert_close(orbit, loop, rtol=0, atol=1e-12)
    elements = g.sample(shape[0], seed=3)
    each = act.apply_each(elements, x)
    torch.testing.assert_close(each, torch.cat([act(a, x[i : i + 1]) for i, a in enumerate(elements)]),
                               rtol=0, atol=1e-12)


def test_permutation_action_convention():
    g = s.PermutationGroup(3, [(1, 2, 0)])
    act = s.PermutationAction(g)
    x = torch.tensor([[10.0, 20.0, 30.0]])
    # (ρ(g)x)_{g(i)} = x_i: the value at coordinate 0 moves to coordinate g(0) = 1
    assert act(1, x).tolist() == [[30.0, 10.0, 20.0]]


def test_lattice_rotation_maps_neighbours_to_neighbours():
    size = 5
    act = s.LatticeRotation(size)
    idx = torch.arange(size * size, dtype=torch.float64)[None]
    for g in range(4):
        moved = act(g, idx)[0].long()  # moved[site] = the site whose value lands there
        pos = {int(v): k for k, v in enumerate(moved)}
        for a in range(size * size):
            r, c = divmod(a, size)
            for nb in (((r + 1) % size) * size + c, r * size + (c + 1) % size):
                ra, ca = divmod(pos[a], size)
                rb, cb = divmod(pos[nb], size)
                assert min((ra - rb) % size, (rb - ra) % size) + min((ca - cb) % size, (cb - ca) % size) == 1


def test_interpolated_rotation_matches_rot90_and_composes_on_smooth_images():
    side = 21
    yy, xx = torch.meshgrid(torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64),
                            indexing="ij")
    bump = torch.exp(-((yy - 8.0) ** 2 + (xx - 12.0) ** 2) / 8.0)[None, None]  # smooth, inside the disc
    so2 = s.ImageRotation(s.SO2())
    for q in range(4):  # a quarter-turn angle through grid_sample reproduces the exact permutation
        torch.testing.assert_close(so2._rotate(bump, torch.tensor([q * math.pi / 2], dtype=torch.float64)),
                                   torch.rot90(bump, q, dims=(-2, -1)), rtol=0, atol=1e-12)
    c8 = s.ImageRotation(8)
    assert not c8.exact and s.ImageRotation(4).exact
    torch.testing.assert_close(c8(2, bump), torch.rot90(bump, 1, dims=(-2, -1)), rtol=0, atol=0)
    errors = []
    big = torch.arange(41, dtype=torch.float64)
    by, bx = torch.meshgrid(big, big, indexing="ij")
    for width in (2.0, 4.0):  # bump std in pixels; both vanish (< 1e-9) outside the inscribed disc
        smooth = torch.exp(-((by - 18.0) ** 2 + (bx - 22.0) ** 2) / (2 * width ** 2))[None, None]
        errors.append(float((c8(1, c8(1, smooth)) - c8(2, smooth)).abs().max() / smooth.max()))
    # interpolation: approximately, not exactly, a representation; bilinear error is second order in
    # pixel size / feature size, so doubling the feature size divides it by about 4
    assert 1e-3 < errors[0] < 0.1 and errors[1] < errors[0] / 3
    back = bump
    for _ in range(8):
        back = c8(1, back)
    assert float((back - bump).norm() / bump.norm()) < 0.25
    assert float((so2(math.pi / 4, bump) - c8(1, bump)).abs().max()) < 1e-12  # SO(2) and C8 agree
    const = torch.full((1, 1, side, side), 0.7, dtype=torch.float64)
    torch.testing.assert_close(s.ImageRotation(8, fill=0.7)(3, const), const, rtol=0, atol=1e-12)


def test_pad_for_rotation_sizes_and_fill():
    x = torch.ones(2, 1, 8, 8)
    out = s.pad_for_rotation(x, scale=2, fill=-1.0)
    assert out.shape == (2, 1, 23, 23)  # ⌈16√2⌉ = 23, odd
    assert float(out[0, 0, 0, 0]) == -1.0 and float(out[0, 0, 11, 11]) == 1.0
    assert s.pad_for_rotation(torch.ones(1, 8, 8)).shape == (1, 13, 13)


def test_so3_sampling_is_haar_and_reproducible():
    g = s.SO3()
    mats = np.stack(g.sample(4000, seed=1))
    assert np.allclose(np.einsum("nij,nkj->nik", mats, mats), np.eye(3), atol=1e-10)
    assert np.allclose(np.linalg.det(mats), 1.0)
    # Haar: E[R] = 0 and E[R_ij²] = 1/3 (Monte Carlo, 4000 draws: std of a mean ≈ 0.009)
    assert np.abs(mats.mean(0)).max() < 0.04
    assert np.abs((mats ** 2).mean(0) - 1 / 3).max() < 0.03
    assert np.array_equal(np.stack(g.sample(3, seed=1)), mats[:3])
    drawn = np.stack(s.draw_elements(g, 4000, torch.Generator().manual_seed(0)))
    assert np.allclose(np.einsum("nij,nkj->nik", drawn, drawn), np.eye(3), atol=1e-10)
    assert np.allclose(np.linalg.det(drawn), 1.0) and np.abs(drawn.mean(0)).max() < 0.04
    a, b = g.sample(2, seed=5)
    torch.testing.assert_close(torch.from_numpy(g.compose(a, g.inverse(a))), torch.eye(3, dtype=torch.float64))
    act = s.VectorRotation(g, copies=2)
    x = _x((4, 6))
    torch.testing.assert_close(act(a, act(b, x)), act(g.compose(a, b), x), rtol=0, atol=1e-12)


def test_so2_group():
    g = s.SO2()
    a, b = g.sample(2, seed=0)
    assert math.isclose(g.compose(a, g.inverse(a)) % (2 * math.pi), 0.0, abs_tol=1e-12) or math.isclose(
        g.compose(a, g.inverse(a)), 2 * math.pi, abs_tol=1e-12)
    img = _x((1, 1, 15, 15))
    act = s.ImageRotation(g)
    each = act.apply_each([a, b], torch.cat([img, img]))
    torch.testing.assert_close(each[0:1], act(a, img), rtol=0, atol=1e-12)
    torch.testing.assert_close(each[1:2], act(b, img), rtol=0, atol=1e-12)


def test_augment_orbits_and_permutation_shift():
    size = 4
    act = s.LatticeRotation(size)
    sym = s.Symmetry(act, act)
    x = _x((5, size * size))
    y = x ** 2
    xa, ya = s.augment_orbits(x, y, sym)
    assert xa.shape == (20, 16)
    for g in range(4):
        torch.testing.assert_close(xa[g * 5 : (g + 1) * 5], act(g, x), rtol=0, atol=0)
        torch.testing.assert_close(ya[g * 5 : (g + 1) * 5], act(g, y), rtol=0, atol=0)
        perm = s.orbit_permutation(sym, g, 5)  # ρ_X(g) permutes the augmented set (talk: Π(g))
        assert torch.equal(act(g, xa), xa[perm]) and torch.equal(act(g, ya), ya[perm])
    labels = torch.tensor([3, 1, 4, 1, 5])
    xi, yi = s.augment_orbits(x, labels, s.Symmetry(act))
    assert yi.tolist() == labels.tolist() * 4


def test_random_augmentation_is_reproducible_from_the_generator():
    sym = s.image_augmentation("so2")[0]
    aug = s.RandomAugmentation(sym)
    x = _x((6, 1, 9, 9)).float()
    y = torch.arange(6)
    a, ya = aug(x, y, torch.Generator().manual_seed(3))
    b, _ = aug(x, y, torch.Generator().manual_seed(3))
    c, _ = aug(x, y, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(ya, y)


@pytest.mark.parametrize("bad,match", [
    (lambda: s.CyclicGroup(0), "k: expected an integer >= 1"),
    (lambda: s.CyclicGroup(4).compose(4, 0), "g: expected an element 0..3"),
    (lambda: s.MatrixGroup("x", [np.ones((3, 3))]), "orthogonal"),
    (lambda: s.PermutationGroup(3, [(0, 0, 1)]), "permutation of 0..2"),
    (lambda: s.symmetric(9), "n <= 8"),
    (lambda: s.SO3().elements(), "continuous"),
    (lambda: s.ImageRotation(s.tetrahedral()), "CyclicGroup or SO2"),
    (lambda: s.ImageRotation(4)(1, torch.zeros(2, 3, 4)), "square images"),
    (lambda: s.LatticeRotation(3)(1, torch.zeros(2, 8)), "9 lattice sites"),
    (lambda: s.VectorRotation(s.octahedral())(1, torch.zeros(2, 4)), "R³"),
    (lambda: s.Symmetry(s.LatticeRotation(3), s.LatticeRotation(3)), "same group object"),
    (lambda: s.image_augmentation("c0"), "augment: expected cK"),
    (lambda: s.image_augmentation("rot"), "augment: expected cK"),
    (lambda: s.augment_orbits(torch.zeros(3, 2), torch.zeros(2), s.Symmetry(s.PermutationAction(s.symmetric(2)))),
     "y: expected 3 labels"),
    (lambda: s.rotation_matrix((0, 0, 0), 1.0), "axis"),
])
def test_errors_name_the_argument(bad, match):
    with pytest.raises(DeepensError, match=match):
        bad()
