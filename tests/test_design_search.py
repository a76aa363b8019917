"""Algorithm 2: the primal / dual curves against their closed forms, integer rounding, strong duality,
and the CE paper's design numbers (Fig. 3, Tables 1 and 5)."""

import math

import numpy as np
import pytest

import deepens as d
from deepens.design import (
    BottleneckFamily,
    MLPFamily,
    ResNeXt29Family,
    alpha_interval_for_width,
    collegial_design,
    design_curves,
    plot_design,
)


def test_curves_follow_ce_equations_12_and_14():
    fam = MLPFamily(784, 10, 6)
    alpha = 3.0
    c = design_curves(fam, 500, alpha, widths=[10, 48, 200, 500])
    beta_s = 784 * 500 + 4 * 500**2 + 500 * 10
    for i, n in enumerate([10, 48, 200, 500]):
        beta = 784 * n + 4 * n * n + 10 * n
        v = math.expm1(alpha * 5 / n)
        assert c.primal_m[i] == pytest.approx(beta_s / beta, rel=1e-14)
        assert c.primal_variance[i] == pytest.approx(v * beta / beta_s, rel=1e-13)
        m_d = v / math.expm1(alpha * 5 / 500)
        assert c.dual_m[i] == pytest.approx(m_d, rel=1e-13)
        assert c.dual_efficiency[i] == pytest.approx(beta_s / (m_d * beta), rel=1e-13)
    assert c.primal_m[-1] == pytest.approx(1.0) and c.dual_efficiency[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("alpha", [0.5, 1.6, 3.5, 8.0])
@pytest.mark.parametrize("family", [MLPFamily(784, 10, 6), BottleneckFamily(256)])
def test_strong_duality_for_bare_blocks(family, alpha):
    """CE §3: with cost m·β(n) the primal and dual optima share n (they differ only in m)."""
    c = design_curves(family, 128, alpha)
    assert c.primal_optimum()[0] == c.dual_optimum()[0]


@pytest.mark.parametrize("objective", ["primal", "dual"])
@pytest.mark.parametrize("efficiency", ["params", "flops"])
def test_integer_designs_respect_the_constraint_and_are_ranked(objective, efficiency):
    fam = ResNeXt29Family()
    res = collegial_design(fam, 128, 1.6, objective=objective, efficiency=efficiency, terms="widths")
    budget = fam.parameters(1, 128) if efficiency == "params" else fam.flops(1, 128)
    v_s = res.baseline.variance
    for c in res.candidates:
        assert c.variance == pytest.approx(math.expm1(1.6 * 2 / c.n) / c.m, rel=1e-12)
        if objective == "primal":
            assert fam.cost(c.m, c.n, efficiency) <= budget and fam.cost(c.m + 1, c.n, efficiency) > budget
        else:
            assert c.variance <= v_s * (1 + 1e-12) and (c.m == 1 or math.expm1(1.6 * 2 / c.n) / (c.m - 1) > v_s)
    key = [c.variance for c in res.candidates] if objective == "primal" else [-c.efficiency for c in res.candidates]
    assert key == sorted(key)
    assert res.best is res.candidates[0] and res.runner_up is res.candidates[1]
    # a brute-force search over every (m, n) agrees with the ranked best
    best = None
    for n in range(1, 129):
        for m in range(1, 400):
            var = math.expm1(1.6 * 2 / n) / m
            cost = fam.cost(m, n, efficiency)
            if objective == "primal" and cost <= budget and (best is None or var < best[0]):
                best = (var, m, n)
            if objective == "dual" and var <= v_s * (1 + 1e-12):
                rho = budget / cost
                if best is None or rho > best[0]:
                    best = (rho, m, n)
                break  # larger m only lowers ρ
    assert (res.best.m, res.best.n) == best[1:]


def test_fully_connected_baseline_of_ce_figure_3():
    """CE Fig. 3 (L = 6, ñ = 500, 784 inputs): primal optimum n = 48, m ≈ 30; dual m ≈ 12, ρ ≈ 2.45.
    The α putting the optimum at n = 48 is an interval near 3.5 (terms: the 5 hidden widths, CE Eq. 9)."""
    fam = MLPFamily(784, 10, 6)
    lo, hi = alpha_interval_for_width(fam, 500, 48)
    assert 3.3 < lo < hi < 3.8
    alpha = 0.5 * (lo + hi)
    c = design_curves(fam, 500, alpha)
    n_p, m_p, _ = c.primal_optimum()
    n_d, m_d, rho = c.dual_optimum()
    assert n_p == 48 and round(m_p) in (29, 30) and n_d == 48
    assert round(m_d) == 12 and abs(rho - 2.45) < 0.1
    dual = alpha_interval_for_width(fam, 500, 48, objective="dual")
    assert dual == pytest.approx((lo, hi), rel=1e-6)  # strong duality
    with pytest.raises(d.DeepensError, match="target_width"):
        alpha_interval_for_width(fam, 500, 2, bounds=(1.0, 2.0))


def test_resnext29_designs_of_the_paper():
    """CE §4.2 with α = 1.60 on whole ResNeXt-29 networks: the primal 37×10d (Table 1) with S = 2/n
    (n = [n, n]); the FLOPs primal 44×8d (Table 5) with S = 1/(9n) + 1/n; the dual's m^d(10) ≈ 10
    (10×10d, ρ ≈ 3.3) only when S also holds the first conv's 1/256."""
    fam = ResNeXt29Family()
    p = collegial_design(fam, 128, 1.6, terms="widths")
    assert (p.best.m, p.best.n) == (37, 10) and p.continuous["n"] == 10
    assert p.best.params == 13_743_646
    f = collegial_design(fam, 128, 1.6, terms="fan-in", efficiency="flops")
    assert f.continuous["n"] == 8 and round(f.continuous["m"]) == 44
    c = design_curves(fam, 128, 1.6, terms="all")
    i = list(c.widths).index(10)
    assert round(c.dual_m[i]) == 10 and abs(c.dual_efficiency[i] - 3.3) < 0.1


def test_design_refusals_and_plot(tmp_path):
    fam = MLPFamily(784, 10, 6)
    with pytest.raises(d.DeepensError, match="alpha"):
        collegial_design(fam, 500, -1.0)
    with pytest.raises(d.DeepensError, match="widths"):
        collegial_design(fam, 500, 3.0, widths=[600])
    with pytest.raises(d.DeepensError, match="objective"):
        collegial_design(fam, 500, 3.0, objective="both")
    p = collegial_design(fam, 500, 3.5)
    q = collegial_design(fam, 500, 3.5, objective="dual")
    plot_design(p, q, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    out = p.to_dict(top=3, curves=True)
    assert len(out["candidates"]) == 3 and len(out["curves"]["widths"]) == 500
    assert np.isfinite(out["variance"]) and out["m"] * fam.member_parameters(out["n"]) == out["params"]
