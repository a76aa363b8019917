"""Power-law fits (power-laws Eq. 6), prediction, pools, memory splits and DEE."""

import math

import numpy as np
import pytest
import torch

import deepens as d
from deepens.errors import DeepensError
from deepens.models import MLP
from deepens.scaling import (
    WidthFamily,
    budget_envelope,
    deep_ensemble_equivalent,
    fit_pool_curve,
    fit_power_law,
    memory_split_table,
    pool_curve,
    pool_ensembles,
    predict_from_prefix,
    predict_memory_split,
)

# CNLL-like sequences: a slightly above −1 (the paper), gains b a sizeable fraction of the asymptote c
TRIPLES = [(-0.8, 0.5, 1.0), (-1.0, 0.3, 0.6), (-0.6, 1.0, 2.0), (-0.9, 0.25, 1.6), (-0.7, 0.4, 0.45)]


@pytest.mark.parametrize("a,b,c", TRIPLES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_sequences_with_relative_noise_are_recovered(a, b, c, seed):
    rng = np.random.default_rng(seed)
    m = np.arange(1, 25)
    y = (c + b * m**a) * (1 + 1e-4 * rng.standard_normal(m.size))
    law = fit_power_law(m, y)
    assert abs(law.a - a) < 0.02
    assert abs(law.c - c) < 1e-3 * c
    assert law.rmse < 5e-4 and law.points == 24


def test_exact_power_law_and_the_objective():
    m = np.arange(1, 16)
    y = 0.7 + 0.4 * m**-0.9
    law = fit_power_law(m, y)
    assert law.a == pytest.approx(-0.9, abs=1e-6) and law.b == pytest.approx(0.4, rel=1e-5)
    assert law.c == pytest.approx(0.7, abs=1e-7) and law.rmse_log2 < 1e-6
    assert law(100) == pytest.approx(0.7 + 0.4 * 100**-0.9, abs=1e-6)


def test_fit_is_a_local_minimum_of_eq6():
    rng = np.random.default_rng(5)
    m = np.arange(1, 13)
    y = (1.1 + 0.35 * m**-0.75) * (1 + 3e-3 * rng.standard_normal(m.size))
    law = fit_power_law(m, y)

    def eq6(a, b, c):
        return np.mean((np.log2(y - c) - np.log2(b * m**a)) ** 2)

    best = eq6(law.a, law.b, law.c)
    assert best == pytest.approx(law.rmse_log2**2, rel=1e-9)
    for da, db, dc in [(1e-3, 0, 0), (-1e-3, 0, 0), (0, 1e-3, 0), (0, -1e-3, 0), (0, 0, 1e-4), (0, 0, -1e-4)]:
        assert eq6(law.a + da, law.b * (1 + db), law.c + dc) >= best - 1e-15


@pytest.mark.parametrize("m,y,word", [
    ([1, 2], [1.0, 0.9], "at least 3"),
    ([1, 2, 3, 4], [1.0, 1.1, 1.2, 1.3], "does not decrease"),
    ([1, 2, 3], [1.0, 1.0, 1.0], "constant"),
    ([0, 1, 2], [1.0, 0.9, 0.85], "positive"),
    ([1, 1, 2], [1.0, 0.9, 0.85], "distinct"),
    ([1, 2, 3], [1.0, float("nan"), 0.8], "finite"),
    (list(range(1, 10)), [2.0 - 0.1 * math.log(k) for k in range(1, 10)], "logarithm"),
])
def test_clear_errors(m, y, word):
    with pytest.raises(d.DeepensError, match=word):
        fit_power_law(m, y)


def test_prediction_from_the_first_four_points():
    m = np.arange(1, 25)
    y = 0.9 + 0.3 * m**-0.8
    pred = predict_from_prefix(m, y, 4)
    assert [r["m"] for r in pred["predictions"]] == list(range(5, 25))
    assert pred["max_abs_error"] < 1e-6


def test_pool_ensembles_are_disjoint_and_seeded():
    groups = pool_ensembles(10, 3, seed=2)
    assert groups.shape == (3, 3) and len(set(groups.ravel())) == 9
    assert np.array_equal(groups, pool_ensembles(10, 3, seed=2))
    assert not np.array_equal(groups, pool_ensembles(10, 3, seed=3))
    with pytest.raises(d.DeepensError, match="n: an ensemble of 11"):
        pool_ensembles(10, 11)


def test_pool_curve_averages_over_disjoint_ensembles():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    pool = rng.normal(size=(12, 300, 5))
    pool[:, np.arange(300), y] += 1.5
    rows = pool_curve(pool, y, sizes=[1, 2, 3, 4, 6], dtype=torch.float64)
    assert [r["ensembles"] for r in rows] == [12, 6, 4, 3, 2]
    assert [r["reliable"] for r in rows] == [True, True, True, True, False]
    from deepens.scaling import calibrated_nll

    groups = pool_ensembles(12, 3, seed=0)
    direct = [calibrated_nll(pool[g], y, dtype=torch.float64)["cnll"] for g in groups]
    assert rows[2]["cnll_mean"] == pytest.approx(np.mean(direct), abs=1e-9)
    assert rows[2]["cnll_std"] == pytest.approx(np.std(direct, ddof=1), abs=1e-9)
    assert rows[0]["cnll_mean"] > rows[3]["cnll_mean"]  # ensembles help


def synthetic_curves(laws: dict[float, tuple[float, float, float]], ns=range(1, 17)):
    return {s: [{"n": n, "reliable": True, "cnll_mean": c + b * n**a} for n in ns] for s, (a, b, c) in laws.items()}


def test_width_family_matches_mlp_parameter_counts():
    fam = WidthFamily.mlp(40, [16, 16], 10)
    for k in (1, 2, 3, 8):
        count = sum(p.numel() for p in MLP(40, [16 * k, 16 * k], 10).parameters())
        assert fam.count(k) == count
        assert fam.solve(count) == pytest.approx(k, abs=1e-9)
    biased = WidthFamily.mlp(40, [16, 16], 10, bias=True)
    assert biased.count(2) == sum(p.numel() for p in MLP(40, [32, 32], 10, bias=True).parameters())
    numeric = WidthFamily(lambda k: fam.count(k))  # any increasing count, inverted by bisection
    assert numeric.solve(5000.0) == pytest.approx(fam.solve(5000.0), rel=1e-9)


def test_budget_envelope_and_memory_split_advantage():
    # small networks ensemble well, large ones barely: the best split of a large budget has n > 1
    curves = synthetic_curves({1000.0: (-0.8, 0.6, 1.0), 4000.0: (-0.8, 0.2, 1.05), 16000.0: (-0.8, 0.05, 1.1)})
    env = budget_envelope(curves)
    values = [p["value"] for p in env["envelope"]]
    assert values == sorted(values, reverse=True)
    assert all(not (q["budget"] <= p["budget"] and q["value"] < p["value"]) for p in env["envelope"]
               for q in env["points"])
    table = memory_split_table(curves, 16000.0)
    assert table["single_network"]["n"] == 1 and table["best"]["size"] == 1000.0 and table["msa"] is True
    assert memory_split_table(curves, 3000.0)["msa"] is None  # no single network of 3000 measured
    flat = synthetic_curves({1000.0: (-0.8, 0.01, 2.0), 4000.0: (-0.8, 0.01, 1.0)})
    assert memory_split_table(flat, 4000.0)["msa"] is False


def test_predicted_memory_split_recovers_the_best_split():
    laws = {1000.0: (-0.8, 0.6, 1.0), 4000.0: (-0.8, 0.3, 0.9), 16000.0: (-0.8, 0.1, 0.95)}
    curves = synthetic_curves(laws, ns=range(1, 5))  # only n <= 4 measured
    fam = WidthFamily.from_quadratic(1000.0, 0.0, 0.0)  # s(k) = 1000 k²
    pred = predict_memory_split(curves, 16000.0, fam, max_members=16)
    by_n = {c["n"]: c for c in pred["candidates"]}
    assert by_n[1]["predicted"] == pytest.approx(0.95 + 0.1, abs=1e-6)  # the measured size 16000 at n = 1
    assert by_n[4]["predicted"] == pytest.approx(0.9 + 0.3 * 4**-0.8, abs=1e-6)  # size 4000 at n = 4
    assert by_n[16]["predicted"] == pytest.approx(1.0 + 0.6 * 16**-0.8, abs=1e-6)  # size 1000 at n = 16
    assert by_n[4]["width_multiplier"] == pytest.approx(2.0)
    best = min(pred["candidates"], key=lambda c: c["predicted"])
    assert pred["best"] == best and pred["runner_up"]["predicted"] >= best["predicted"]


def test_deep_ensemble_equivalent():
    curve = [1.0, 0.8, 0.7, 0.65]
    assert deep_ensemble_equivalent(1.2, curve) == {"dee": 1.0, "capped": False}
    assert deep_ensemble_equivalent(0.9, curve)["dee"] == pytest.approx(1.5)
    assert deep_ensemble_equivalent(0.7, curve)["dee"] == pytest.approx(3.0)
    assert deep_ensemble_equivalent(0.675, curve)["dee"] == pytest.approx(3.5)
    assert deep_ensemble_equivalent(0.5, curve) == {"dee": 4.0, "capped": True}
    acc = [0.90, 0.92, 0.93]
    assert deep_ensemble_equivalent(0.925, acc, lower_is_better=False)["dee"] == pytest.approx(2.5)


@pytest.mark.parametrize("value,curve,lower,expected", [
    (0.93, [0.90, 0.92, 0.92, 0.94], False, 3.5),       # a tie on the way: the crossing after the plateau
    (0.75, [1.0, 0.80, 0.85, 0.70], True, 3 + 0.1 / 0.15),  # an uptick before the crossing
    (0.82, [1.0, 0.80, 0.85, 0.70], True, 1 + 0.18 / 0.2),  # several crossings: the first
    (0.85, [1.0, 0.80, 0.85, 0.70], True, 1.75),         # a value the curve touches again later: still the first
    (0.80, [1.0, 0.80, 0.80, 0.70], True, 2.0),          # a plateau at the value: its first size
    (0.92, [0.90, 0.92, 0.92, 0.94], False, 2.0),
    (1.00, [1.0, 0.9], True, 1.0),                       # equal to one network
    (1.50, [1.0, 0.9], True, 1.0),                       # worse than one network
    (0.85, [0.90, 0.92], False, 1.0),
    (0.60, [1.0, 0.80, 0.85, 0.70], True, None),         # better than every size: capped at K
    (0.99, [0.90, 0.92, 0.92], False, None),
])
def test_deep_ensemble_equivalent_is_the_first_crossing(value, curve, lower, expected):
    """DEE = min{l ≥ 1: DE(l) ≤ value} (≥ for accuracies) on the interpolated curve, checked against a dense grid
    of l: the first grid point where the interpolated curve reaches the value."""
    result = deep_ensemble_equivalent(value, curve, lower_is_better=lower)
    if expected is None:
        assert result == {"dee": float(len(curve)), "capped": True}
        return
    assert result["capped"] is False and result["dee"] == pytest.approx(expected, abs=1e-12)
    grid = np.linspace(1, len(curve), 300_001)
    interpolated = np.interp(grid, np.arange(1, len(curve) + 1), curve)
    reached = interpolated <= value + 1e-12 if lower else interpolated >= value - 1e-12
    assert grid[np.argmax(reached)] == pytest.approx(expected, abs=2e-5)


@pytest.mark.parametrize("value,curve,match", [
    (0.5, [1.0, float("nan"), 0.7], "deep_curve: the value of size 2 is nan"),
    (0.5, [1.0, 0.8, float("inf")], "deep_curve: the value of size 3 is inf"),
    (float("nan"), [1.0, 0.8], "value: expected a finite metric value"),
    (0.5, [], "deep_curve: expected the metric"),
])
def test_deep_ensemble_equivalent_refuses_non_finite_input(value, curve, match):
    with pytest.raises(DeepensError, match=match):
        deep_ensemble_equivalent(value, curve)


def test_fit_pool_curve_uses_reliable_points_and_predicts():
    rows = [{"n": n, "reliable": n <= 12, "cnll_mean": 0.6 + 0.3 * n**-0.7 + (0.05 if n > 12 else 0.0)}
            for n in range(1, 17)]
    fitted = fit_pool_curve(rows)
    assert fitted["points"] == list(range(1, 13))  # points from fewer than 3 ensembles left out
    assert fitted["fit"]["a"] == pytest.approx(-0.7, abs=1e-5) and fitted["fit"]["c"] == pytest.approx(0.6, abs=1e-6)
    predictions = fitted["prediction"]["predictions"]
    assert [r["m"] for r in predictions] == list(range(5, 17))  # compared with every measured n > 4
    assert all(abs(r["error"]) < 1e-6 for r in predictions if r["reliable"])
    assert all(r["error"] == pytest.approx(-0.05, abs=1e-6) for r in predictions if not r["reliable"])
    everything = fit_pool_curve(rows, reliable_only=False, predict_k=None)
    assert everything["points"] == list(range(1, 17)) and "prediction" not in everything


def test_pool_curve_at_fixed_temperatures_follows_a_power_law():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 400)
    pool = rng.normal(size=(24, 400, 5)) * 1.5
    pool[:, np.arange(400), y] += 1.2
    rows = pool_curve(pool, y, sizes=range(1, 9), fixed_temperatures=(1.0, 2.0))
    from deepens.scaling import nll_at_temperature

    groups = pool_ensembles(24, 2, seed=0)
    assert rows[1]["nll_tau2_mean"] == pytest.approx(np.mean(nll_at_temperature(pool[groups], y, 2.0)), abs=1e-9)
    assert rows[1]["nll_tau1_mean"] == pytest.approx(rows[1]["nll_mean"], abs=1e-5)
    law = fit_pool_curve(rows, key="nll_tau2_mean", predict_k=None)["fit"]
    assert law["a"] < 0 and law["rmse"] < 0.01
