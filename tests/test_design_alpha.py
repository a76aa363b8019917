"""Algorithm 1: the weighted log-linear fit against closed forms and scipy, and Proposition 1's
exponential law checked on a held-out width."""

import math

import numpy as np
import pytest
from scipy.optimize import curve_fit

import deepens as d
from deepens.design import MLPFamily, fit_alpha, fit_log_linear, plot_alpha_fit


def test_log_linear_fit_recovers_exact_lines():
    s = np.array([0.5, 0.25, 0.1, 0.05, 0.01])
    a, se, b, se_b, r2 = fit_log_linear(s, 2.7 * s)
    assert a == pytest.approx(2.7, abs=1e-13) and se < 1e-12 and b == 0.0 and r2 == pytest.approx(1.0)
    a, se, b, se_b, r2 = fit_log_linear(s, 1.9 * s + 0.3, intercept=True)
    assert a == pytest.approx(1.9, abs=1e-12) and b == pytest.approx(0.3, abs=1e-12)


@pytest.mark.parametrize("intercept", [False, True])
def test_log_linear_fit_matches_weighted_least_squares_references(intercept):
    """Coefficients against the whitened least-squares solution (exact); standard errors against
    scipy's curve_fit with relative sigma (its iterative solution agrees to about 1e-8)."""
    rng = np.random.default_rng(0)
    s = np.linspace(0.01, 0.6, 9)
    se = 0.01 + 0.1 * s
    y = 3.1 * s + (0.05 if intercept else 0.0) + se * rng.standard_normal(9)
    a, a_se, b, b_se, _ = fit_log_linear(s, y, se, intercept=intercept)
    design = np.stack([s, np.ones_like(s)], 1) if intercept else s[:, None]
    exact = np.linalg.lstsq(design / se[:, None], y / se, rcond=None)[0]
    assert a == pytest.approx(exact[0], rel=1e-12)
    if intercept:
        assert b == pytest.approx(exact[1], rel=1e-12)
        popt, pcov = curve_fit(lambda x, k, c: k * x + c, s, y, sigma=se, absolute_sigma=False)
        assert b_se == pytest.approx(math.sqrt(pcov[1, 1]), rel=1e-6)
    else:
        popt, pcov = curve_fit(lambda x, k: k * x, s, y, sigma=se, absolute_sigma=False)
    assert a == pytest.approx(popt[0], rel=1e-7)
    assert a_se == pytest.approx(math.sqrt(pcov[0, 0]), rel=1e-6)


def test_fit_refusals():
    with pytest.raises(d.DeepensError, match="widths"):
        fit_log_linear([0.1], [0.2])
    with pytest.raises(d.DeepensError, match="widths"):
        fit_log_linear([0.1, 0.1, 0.1], [0.2, 0.3, 0.1])
    with pytest.raises(d.DeepensError, match="stderr"):
        fit_log_linear([0.1, 0.2], [0.2, 0.4], [0.1, 0.0])
    with pytest.raises(d.DeepensError, match="widths"):
        fit_alpha(MLPFamily(8, 1, 3), [4, 4], draws=20)


def test_exponential_law_fits_monte_carlo_moments(tmp_path):
    """Proposition 1's form on a ReLU MLP, widths 8..64: log E[K²]/E[K]² is linear in S(n) = Σ 1/n_l
    (weighted R² > 0.98), every width's local α = log r/S lies within 20% of the fitted α (measured
    spread ±10%: the law is asymptotic, local α creeps up with width), and a free intercept stays near 0
    (r → 1 as n → ∞)."""
    family = MLPFamily(16, 1, 4)
    fit = fit_alpha(family, [8, 16, 32, 64], draws=3000, seed=0)
    assert fit.r2 > 0.98 and 2.0 < fit.alpha < 4.5, fit.to_dict()
    assert all(abs(a / fit.alpha - 1) < 0.2 for a in fit.local_alpha), fit.local_alpha
    alpha, _, intercept, _, _ = fit_log_linear(fit.exponents, np.log(fit.ratios), fit.log_ratio_stderr,
                                               intercept=True)
    assert abs(intercept) < 0.05 and alpha == pytest.approx(fit.alpha, rel=0.1)
    assert fit.local_alpha[0] == pytest.approx(math.log(fit.ratios[0]) / fit.exponents[0])
    plot_alpha_fit(fit, tmp_path / "alpha.png")
    assert (tmp_path / "alpha.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fit.to_dict()["points"][1]["width"] == 16
