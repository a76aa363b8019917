"""Orbit metrics against hand computations and loops; the ensemble entries against explicit averaging."""

import numpy as np
import pytest
import torch

import deepens.symmetry as s
from deepens import DeepensError


def test_osp_counts_agreeing_orbit_predictions():
    # 3 orbit elements, 2 inputs, 3 classes; element 0 is the untransformed input
    out = torch.tensor([[[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]],
                        [[0.0, 2.0, 0.5], [0.0, 3.0, 0.0]],
                        [[5.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    assert s.orbit_same_predictions(out).tolist() == [2.0, 2.0]
    rng = np.random.default_rng(0)
    big = rng.normal(size=(8, 5, 30, 4))
    pred = big.argmax(-1)
    loop = np.array([[sum(pred[g, m, b] == pred[0, m, b] for g in range(8)) for b in range(30)] for m in range(5)])
    assert np.array_equal(s.orbit_same_predictions(big), loop)


def test_relative_orbit_std_and_equivariance_error_by_hand():
    v = np.array([[1.0, -2.0], [3.0, -2.0]])  # (G=2, B=2)
    assert np.allclose(s.relative_orbit_std(v), [1.0 / 2.0, 0.0])
    f_gx = np.array([[[1.0, 0.0]], [[0.0, 2.0]], [[3.0, 4.0]]])  # (G=3, B=1, D=2)
    expected = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]])
    ref = np.array([[1.0, 0.0]])
    assert np.allclose(s.equivariance_error(f_gx, expected, ref), [(1.0 + 5.0) / 2])  # identity skipped
    assert np.allclose(s.equivariance_error(f_gx, expected, ref, skip_first=False), [(0 + 1.0 + 5.0) / 3])


def test_invariant_and_equivariant_models_score_perfectly():
    sym = s.Symmetry(s.PermutationAction(s.symmetric(4)))
    x = torch.randn(20, 4, dtype=torch.float64)
    w = torch.randn(4, 3, dtype=torch.float64)

    def invariant(z):  # depends on the sorted coordinates only
        return torch.sort(z, dim=-1).values @ w

    orbit, elements = s.orbit_outputs(invariant, x, sym)
    assert orbit.shape == (24, 20, 3)
    assert s.orbit_same_predictions(orbit).tolist() == [24.0] * 20
    assert np.abs(s.relative_orbit_std(orbit[..., 0])).max() < 1e-12
    act = s.PermutationAction(s.symmetric(4))
    eq = s.Symmetry(act, act)
    orbit, elements = s.orbit_outputs(lambda z: z ** 3 + z.sum(-1, keepdim=True), x, eq)
    expected = torch.stack([act(g, orbit[0]) for g in elements])
    assert s.equivariance_error(orbit, expected, orbit[0]).max() < 1e-12


def test_orbit_outputs_prepends_the_identity_and_batches():
    so3 = s.SO3()
    sym = s.Symmetry(s.VectorRotation(so3))
    x = torch.randn(10, 3, dtype=torch.float64)
    rots = so3.sample(3, seed=0)
    out, elements = s.orbit_outputs(lambda z: z.norm(dim=-1, keepdim=True), x, sym, rots, batch_size=3)
    assert len(elements) == 4 and np.allclose(elements[0], np.eye(3))
    assert out.shape == (4, 10, 1) and float((out - out[0]).abs().max()) < 1e-12
    ens = lambda z: torch.stack([z, 2 * z])  # noqa: E731 - (M=2, B, D)
    out, _ = s.orbit_outputs(ens, x, sym, rots, batch_dim=1, batch_size=4)
    assert out.shape == (4, 2, 10, 3)
    torch.testing.assert_close(out[1, 1], 2 * sym.input(rots[0], x))


@pytest.mark.parametrize("combine", ["mean", "probabilities"])
def test_ensemble_metrics_equal_explicit_averages(combine):
    rng = np.random.default_rng(1)
    out = torch.from_numpy(rng.normal(size=(4, 6, 25, 5)))  # (G, M, B, C)
    res = s.ensemble_orbit_metrics(out, "osp", sizes=[1, 2, 3, 6], combine=combine)
    members = [s.orbit_same_predictions(out[:, a]).mean() for a in range(6)]
    assert np.allclose(res["members"], members) and np.isclose(res["member"]["mean"], np.mean(members))
    merged = torch.softmax(out, -1).mean(1) if combine == "probabilities" else out.mean(1)
    assert np.isclose(res["ensemble"]["mean"], s.orbit_same_predictions(merged).mean())
    by = {p["size"]: p for p in res["by_size"]}
    assert by[6]["mean"] == res["ensemble"]["mean"] and np.isclose(by[1]["mean"], res["member"]["mean"])
    pairs = [out[:, [0, 1]], out[:, [2, 3]], out[:, [4, 5]]]
    merge = (lambda c: torch.softmax(c, -1).mean(1)) if combine == "probabilities" else (lambda c: c.mean(1))
    assert np.isclose(by[2]["mean"], np.mean([s.orbit_same_predictions(merge(p)).mean() for p in pairs]))
    assert by[3]["groups"] == 2 and by[2]["groups"] == 3


def test_ensemble_equivariance_and_orbit_std():
    act = s.LatticeRotation(3)
    sym = s.Symmetry(act, act)
    x = torch.randn(7, 9, dtype=torch.float64)
    # members: equivariant part + member-specific non-equivariant noise that cancels on average
    noise = torch.randn(4, 9, 9, dtype=torch.float64)
    noise = noise - noise.mean(0)

    def members(z):
        return torch.stack([z ** 2 + z @ noise[a] for a in range(4)])

    orbit, elements = s.orbit_outputs(members, x, sym, batch_dim=1)
    res = s.ensemble_orbit_metrics(orbit, "equivariance", symmetry=sym, elements=elements)
    assert res["ensemble"]["mean"] < 1e-12 < min(res["members"])
    res = s.ensemble_orbit_metrics(orbit, "orbit_std", scalar=lambda v: v.sum(-1))
    assert res["ensemble"]["mean"] < 1e-12 < res["member"]["mean"]


@pytest.mark.parametrize("bad,match", [
    (lambda: s.ensemble_orbit_metrics(torch.zeros(2, 3, 4), "osp"), "outputs: expected member outputs"),
    (lambda: s.ensemble_orbit_metrics(torch.zeros(2, 3, 4, 2), "nope"), "metric: expected one of"),
    (lambda: s.ensemble_orbit_metrics(torch.zeros(2, 3, 4, 2), "equivariance"), "symmetry: the equivariance"),
    (lambda: s.ensemble_orbit_metrics(torch.zeros(2, 3, 4, 2), "osp", sizes=[4]), "sizes: expected"),
    (lambda: s.ensemble_orbit_metrics(torch.zeros(2, 3, 4, 2), "osp", combine="max"), "combine: expected"),
    (lambda: s.relative_orbit_std(np.zeros((1, 3))), "G >= 2"),
])
def test_metric_errors(bad, match):
    with pytest.raises(DeepensError, match=match):
        bad()
