"""CNLL against the SciPy reference, cross-validation folds, calibrated metrics, LE-NLL."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

import deepens as d
from deepens.scaling import calibrated_nll, cv_folds, lower_envelope_nll, reference_cnll
from deepens.training.metrics import expected_calibration_error


def members(n, points=600, classes=7, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, points)
    z = rng.normal(size=(n, points, classes)) * 1.5
    z[:, np.arange(points), y] += rng.uniform(0, 3, (n, points))
    return z * rng.uniform(1.0, 3.0, size=(n, 1, 1)), y  # overconfident: τ > 1 helps


@pytest.mark.parametrize("temperature", ["before", "after"])
@pytest.mark.parametrize("n", [1, 3])
def test_cv_none_equals_scipy_reference(temperature, n):
    z, y = members(n)
    ours = calibrated_nll(z, y, temperature=temperature, cv="none")
    assert ours["cnll"] == pytest.approx(reference_cnll(z, y, temperature=temperature, cv="none"), abs=1e-5)
    # ... and the reference is the minimum over τ of the whole-set NLL
    assert ours["cnll"] <= ours["nll"] + 1e-12


@pytest.mark.parametrize("temperature", ["before", "after"])
def test_cv_halves_follows_the_reference_procedure(temperature):
    z, y = members(3, seed=1)
    ours = calibrated_nll(z, y, temperature=temperature, cv="halves", repeats=5, seed=4)
    assert ours["cnll"] == pytest.approx(reference_cnll(z, y, temperature=temperature, repeats=5, seed=4), abs=1e-4)
    assert len(ours["cnll_folds"]) == 10
    assert np.mean(ours["cnll_folds"]) == pytest.approx(ours["cnll"], abs=1e-12)


def test_folds_are_seeded_complementary_halves():
    folds = cv_folds(11, 3, seed=7)
    assert len(folds) == 6
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(folds, cv_folds(11, 3, seed=7), strict=True))
    for k in range(0, 6, 2):
        fit, evaluate = folds[k]
        assert np.array_equal(folds[k + 1][0], evaluate) and np.array_equal(folds[k + 1][1], fit)
        assert sorted(np.concatenate([fit, evaluate])) == list(range(11)) and len(fit) == 5
    assert not np.array_equal(folds[0][0], cv_folds(11, 3, seed=8)[0][0])


def test_many_ensembles_at_once_equal_one_at_a_time():
    zs = np.stack([members(2, seed=s)[0] for s in range(5)])
    _, y = members(2, seed=0)
    kw = dict(dtype=torch.float64)
    batch = calibrated_nll(zs, y, max_bytes=1.0, **kw)  # one ensemble per chunk
    together = calibrated_nll(zs, y, **kw)
    for e in range(5):
        single = calibrated_nll(zs[e], y, **kw)
        for key in ("nll", "cnll", "temperature", "accuracy", "brier", "ece"):
            assert batch[key][e] == pytest.approx(single[key], abs=1e-9)
            assert together[key][e] == pytest.approx(single[key], abs=1e-9)
    # in float32 (the default, for speed) the agreement is ~1e-6
    fast = calibrated_nll(zs, y)
    assert np.abs(fast["cnll"] - together["cnll"]).max() < 1e-5


def test_before_and_after_agree_for_one_network_and_differ_for_ensembles():
    z, y = members(1, seed=2)
    a = calibrated_nll(z, y, temperature="before", cv="none", dtype=torch.float64)
    b = calibrated_nll(z, y, temperature="after", cv="none", dtype=torch.float64)
    assert a["cnll"] == pytest.approx(b["cnll"], abs=1e-9) and a["temperature"] == pytest.approx(b["temperature"],
                                                                                                 rel=1e-4)
    z3, y3 = members(3, seed=2)
    assert calibrated_nll(z3, y3, temperature="before")["cnll"] != calibrated_nll(z3, y3, temperature="after")["cnll"]


def test_calibrated_metrics_brute_force():
    z, y = members(3, seed=3)
    out = calibrated_nll(z, y, cv="none", dtype=torch.float64)
    tau = out["temperature"]
    probs = np.mean(np.exp(log_softmax(z / tau, axis=-1)), axis=0)
    assert out["cnll"] == pytest.approx(-np.mean(np.log(probs[np.arange(len(y)), y])), abs=1e-9)
    assert out["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
    onehot = np.eye(z.shape[2])[y]
    assert out["brier"] == pytest.approx(np.mean(((probs - onehot) ** 2).sum(1)), abs=1e-9)
    assert out["ece"] == pytest.approx(expected_calibration_error(torch.tensor(probs), torch.tensor(y)), abs=1e-9)
    uncal = np.mean(np.exp(log_softmax(z, axis=-1)), axis=0)
    assert out["nll"] == pytest.approx(-np.mean(np.log(uncal[np.arange(len(y)), y])), abs=1e-6)


def test_lower_envelope_nll_minimises_the_mean_over_ensembles():
    zs = np.stack([members(2, seed=s)[0] for s in range(4)])
    _, y = members(2, seed=0)

    def mean_nll(log_tau):
        tau = math.exp(log_tau)
        vals = []
        for z in zs:
            lp = logsumexp(log_softmax(z / tau, axis=-1)[:, np.arange(len(y)), y], axis=0) - math.log(2)
            vals.append(-lp.mean())
        return float(np.mean(vals))

    ref = minimize_scalar(mean_nll, bounds=(math.log(0.01), math.log(100)), method="bounded",
                          options={"xatol": 1e-10})
    le = lower_envelope_nll(zs, y)
    assert le["le_nll"] == pytest.approx(ref.fun, abs=1e-9)
    assert le["temperature"] == pytest.approx(math.exp(ref.x), rel=1e-4)


def test_bad_input():
    z, y = members(2)
    with pytest.raises(d.DeepensError, match="logits"):
        calibrated_nll(z[0, 0], y)
    with pytest.raises(d.DeepensError, match="labels"):
        calibrated_nll(z, y[:-1])
    with pytest.raises(d.DeepensError, match="labels"):
        calibrated_nll(z, y + 100)
    with pytest.raises(d.DeepensError, match="temperature"):
        calibrated_nll(z, y, temperature="during")
    with pytest.raises(d.DeepensError, match="cv"):
        calibrated_nll(z, y, cv="thirds")
    with pytest.raises(d.DeepensError, match="repeats"):
        calibrated_nll(z, y, repeats=0)


@pytest.mark.parametrize("temperature", ["before", "after"])
def test_point_derivatives_match_finite_differences(temperature):
    from deepens.scaling.calibration import _Objective

    z, y = members(3, points=50, seed=6)
    obj = _Objective(torch.tensor(z).unsqueeze(0), torch.tensor(y), temperature)
    t0 = 0.3

    def f(t):
        return obj.terms(torch.tensor([t], dtype=torch.float64), derivatives=False)[0]

    _, g, h, k3 = (v[0] for v in obj.terms(torch.tensor([t0], dtype=torch.float64), third=True))
    e1, e2, e3 = 1e-5, 1e-4, 1e-3  # steps balancing truncation and rounding for each order
    assert torch.allclose(g, (f(t0 + e1) - f(t0 - e1)) / (2 * e1), rtol=1e-6, atol=1e-9)
    assert torch.allclose(h, (f(t0 + e2) - 2 * f(t0) + f(t0 - e2)) / e2**2, rtol=1e-4, atol=1e-7)
    third = (f(t0 + 2 * e3) - 2 * f(t0 + e3) + 2 * f(t0 - e3) - f(t0 - 2 * e3)) / (2 * e3**3)
    assert torch.allclose(k3, third, rtol=1e-3, atol=1e-5)


def test_small_test_sets_fall_back_to_exact_folds():
    z, y = members(2, points=40, seed=8)  # fold temperatures far from the whole-set one
    ours = calibrated_nll(z, y, dtype=torch.float64)
    assert ours["cnll"] == pytest.approx(reference_cnll(z, y), abs=1e-6)


@pytest.mark.parametrize("temperature", ["before", "after"])
def test_nll_at_fixed_temperature(temperature):
    from deepens.scaling import nll_at_temperature

    z, y = members(3, seed=9)
    tau = 1.7
    if temperature == "before":
        lp = logsumexp(log_softmax(z / tau, axis=-1)[:, np.arange(len(y)), y], axis=0) - math.log(3)
    else:
        pooled = logsumexp(log_softmax(z, axis=-1), axis=0) - math.log(3)
        lp = log_softmax(pooled / tau, axis=-1)[np.arange(len(y)), y]
    assert nll_at_temperature(z, y, tau, temperature=temperature) == pytest.approx(-lp.mean(), abs=1e-12)
    many = nll_at_temperature(np.stack([z, z]), y, tau, temperature=temperature)
    assert many.shape == (2,) and many[0] == pytest.approx(-lp.mean(), abs=1e-12)


def _one_error(points=24, classes=10, members=3, seed=0):
    """Confident, correct predictions but for one point (predicted wrong by every member)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, points)
    z = rng.normal(size=(members, points, classes))
    z[:, np.arange(points), y] += 6.0
    z[:, 0, y[0]] -= 9.0  # the error
    return z, y


@pytest.mark.parametrize("temperature", ["before", "after"])
def test_a_fitting_half_without_errors_fits_at_the_bound_on_every_path(temperature):
    """A half with every point ranked right has NLL(τ) strictly decreasing as τ → 0: its bounded optimum is
    τ = 0.01, and the held-out half (with the error) is evaluated there. float64, float32 and the independent
    reference (grid + Brent in NumPy) agree, and each such fold equals the NLL at τ = 0.01 computed directly."""
    from deepens.scaling import nll_at_temperature

    z, y = _one_error()
    folds = cv_folds(len(y), 5, 0)
    clean = [k for k, (fit, _) in enumerate(folds) if 0 not in fit]
    assert 0 < len(clean) < len(folds)
    f64 = calibrated_nll(z, y, temperature=temperature, dtype=torch.float64)
    f32 = calibrated_nll(z, y, temperature=temperature, dtype=torch.float32)
    ref = reference_cnll(z, y, temperature=temperature)
    for result in (f64, f32):
        assert [result["fold_temperatures"][k] for k in clean] == [0.01] * len(clean)
        assert result["folds_at_bound"] >= len(clean)
        for k in clean:
            evaluate = folds[k][1]
            direct = nll_at_temperature(z[:, evaluate], y[evaluate], 0.01, temperature=temperature)
            assert result["cnll_folds"][k] == pytest.approx(direct, rel=1e-5)
    assert f64["cnll"] == pytest.approx(ref, rel=1e-9)
    assert f32["cnll"] == pytest.approx(ref, rel=1e-5)
    assert f64["cnll"] > 2 * f64["nll"]  # the bounded definition: the held-out error at τ = 0.01 dominates


def test_the_whole_set_temperature_reports_its_bound():
    z, y = _one_error()
    z = np.delete(z, 0, axis=1)  # no error left: the optimum is the bound, τ = 0.01 exactly
    y = np.delete(y, 0)
    result = calibrated_nll(z, y, cv="none", dtype=torch.float32)
    assert result["temperature"] == 0.01 and result["temperature_at_bound"] is True
    assert result["cnll"] == pytest.approx(reference_cnll(z, y, cv="none"), rel=1e-4, abs=1e-30)
    z, y = members(3, points=300, seed=3)
    inside = calibrated_nll(z, y, cv="none")
    assert inside["temperature_at_bound"] is False and inside["folds_at_bound"] == 0
