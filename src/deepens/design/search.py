"""Algorithm 2 of CE: the primal (optimally smooth) and dual (optimally compact) collegial designs.

With Var(K_n) = e^{α S(n)} − 1 (CE Eq. 9) and independent members, Var(K^e) = (e^{α S(n)} − 1)/m
(CE Eq. 11). For a baseline of width ñ (one member, m = 1) with cost β_s (parameters, or FLOPs for
the FLOPs efficiency of CE App. C) and a family whose cost is fixed + m·β(n):

* primal (CE Eqs. 10, 12): m^p(n) = (β_s − fixed)/β(n) keeps ρ = 1; minimise (e^{α S(n)} − 1)/m^p(n);
* dual (CE Eqs. 13, 14): m^d(n) = (e^{α S(n)} − 1)/(e^{α S(ñ)} − 1) keeps the baseline's variance;
  maximise ρ(m^d, n) = β_s/(fixed + m^d(n) β(n)) (CE Eq. 8).

The continuous curves are evaluated on a grid of integer widths; integer designs then round m (down
for the primal so the budget holds, up for the dual so the variance does, each optionally relaxed by
``tolerance``), re-match the budget, and are ranked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import DeepensError, check_choice, check_int, check_real
from .families import TERMS, Family

__all__ = ["Candidate", "DesignCurves", "CollegialDesign", "design_curves", "collegial_design",
           "alpha_interval_for_width", "plot_design", "OBJECTIVES", "EFFICIENCIES"]

OBJECTIVES = ("primal", "dual")
EFFICIENCIES = ("params", "flops")


@dataclass
class Candidate:
    """An integer design: m members of width n, with Var(K^e), its costs and efficiencies ρ."""

    m: int
    n: int
    variance: float
    params: int
    flops: int
    efficiency: float
    params_efficiency: float
    flops_efficiency: float
    exponent: float

    @property
    def label(self) -> str:
        return f"{self.m}×{self.n}"

    def to_dict(self) -> dict:
        return {"label": self.label, **asdict(self)}


@dataclass
class DesignCurves:
    """The continuous primal and dual curves on a grid of widths."""

    widths: np.ndarray
    exponents: np.ndarray
    primal_m: np.ndarray
    primal_variance: np.ndarray
    dual_m: np.ndarray
    dual_efficiency: np.ndarray
    baseline_variance: float

    def primal_optimum(self) -> tuple[int, float, float]:
        """(n^p, m^p(n^p), its variance): the minimiser of the primal curve."""
        i = int(np.argmin(self.primal_variance))
        return int(self.widths[i]), float(self.primal_m[i]), float(self.primal_variance[i])

    def dual_optimum(self) -> tuple[int, float, float]:
        """(n^d, m^d(n^d), its efficiency ρ): the maximiser of the dual curve."""
        i = int(np.argmax(self.dual_efficiency))
        return int(self.widths[i]), float(self.dual_m[i]), float(self.dual_efficiency[i])

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


@dataclass
class CollegialDesign:
    """The result of Algorithm 2: the best integer design, the runner-up, all ranked candidates and the curves."""

    objective: str
    efficiency_metric: str
    alpha: float
    terms: str
    family: dict
    baseline: Candidate
    best: Candidate
    candidates: list[Candidate]
    curves: DesignCurves
    continuous: dict = field(default_factory=dict)

    @property
    def runner_up(self) -> Candidate | None:
        return self.candidates[1] if len(self.candidates) > 1 else None

    def to_dict(self, top: int | None = 10, curves: bool = False) -> dict:
        best = self.best
        out = {
            "objective": self.objective, "efficiency_metric": self.efficiency_metric, "alpha": self.alpha,
            "terms": self.terms, "family": self.family,
            "n": best.n, "m": best.m, "efficiency": best.efficiency, "variance": best.variance,
            "params": best.params, "flops": best.flops,
            "params_efficiency": best.params_efficiency, "flops_efficiency": best.flops_efficiency,
            "baseline": self.baseline.to_dict(), "continuous": self.continuous,
            "candidates": [c.to_dict() for c in (self.candidates if top is None else self.candidates[:top])],
        }
        if curves:
            out["curves"] = self.curves.to_dict()
        return out


def _check(family: Family, baseline_width: int, alpha: float, efficiency: str, terms: str,
           widths: Sequence[int] | None) -> tuple[int, float, np.ndarray]:
    if not isinstance(family, Family):
        raise DeepensError(f"family: expected a deepens.design Family, got {type(family).__name__}")
    baseline_width = check_int("baseline_width", baseline_width, minimum=1)
    alpha = check_real("alpha", alpha, low=0.0, low_open=True)
    check_choice("efficiency", efficiency, EFFICIENCIES)
    check_choice("terms", terms, TERMS)
    if widths is None:
        grid = np.arange(1, baseline_width + 1)
    else:
        grid = np.array(sorted({check_int("widths", w, minimum=1) for w in widths}))
        if grid.size == 0:
            raise DeepensError("widths: expected at least one width")
        if grid[-1] > baseline_width:
            raise DeepensError(f"widths: expected widths up to the baseline width {baseline_width}, got {grid[-1]}")
    return baseline_width, alpha, grid


def _expm1(alpha: float, s: np.ndarray | float):
    with np.errstate(over="ignore"):  # an infinite variance (huge α·S) simply loses every comparison
        return np.expm1(alpha * np.asarray(s, dtype=np.float64))


def design_curves(
    family: Family,
    baseline_width: int,
    alpha: float,
    *,
    efficiency: str = "params",
    terms: str = "fan-in",
    widths: Sequence[int] | None = None,
) -> DesignCurves:
    """The continuous primal (CE Eq. 12) and dual (CE Eq. 14) curves over integer widths (default 1..ñ)."""
    baseline_width, alpha, grid = _check(family, baseline_width, alpha, efficiency, terms, widths)
    budget = family.cost(1, baseline_width, efficiency)
    fixed = family.fixed_cost(efficiency)
    member = np.array([family.member_cost(int(n), efficiency) for n in grid], dtype=np.float64)
    s = np.array([family.exponent(int(n), terms) for n in grid])
    v_n = _expm1(alpha, s)
    v_s = float(_expm1(alpha, family.exponent(baseline_width, terms)))
    if v_s <= 0:
        raise DeepensError("alpha: the baseline's variance e^{α S} − 1 is zero; expected α > 0 and a finite width")
    primal_m = (budget - fixed) / member
    dual_m = v_n / v_s
    return DesignCurves(grid, s, primal_m, v_n / primal_m, dual_m, budget / (fixed + dual_m * member), v_s)


def _candidate(family: Family, m: int, n: int, alpha: float, terms: str, efficiency: str, p_s: int,
               f_s: int) -> Candidate:
    s = family.exponent(n, terms)
    params, flops = family.parameters(m, n), family.flops(m, n)
    rho_p, rho_f = p_s / params, f_s / flops
    return Candidate(m, n, float(_expm1(alpha, s)) / m, params, flops, rho_p if efficiency == "params" else rho_f,
                     rho_p, rho_f, s)


def collegial_design(
    family: Family,
    baseline_width: int,
    alpha: float,
    *,
    objective: str = "primal",
    efficiency: str = "params",
    terms: str = "fan-in",
    widths: Sequence[int] | None = None,
    tolerance: float = 0.0,
) -> CollegialDesign:
    """Algorithm 2: the optimal collegial design for a baseline of width ``baseline_width``.

    Primal: for every width n the largest integer m whose cost is within (1 + ``tolerance``) of the
    baseline's; ranked by Var(K^e) (then by cost). Dual: the smallest integer m whose Var(K^e) is
    within (1 + ``tolerance``) of the baseline's; ranked by ρ (then by variance).
    """
    check_choice("objective", objective, OBJECTIVES)
    tolerance = check_real("tolerance", tolerance, low=0.0, high=1.0)
    curves = design_curves(family, baseline_width, alpha, efficiency=efficiency, terms=terms, widths=widths)
    alpha = float(alpha)
    p_s, f_s = family.parameters(1, baseline_width), family.flops(1, baseline_width)
    budget = p_s if efficiency == "params" else f_s
    baseline = _candidate(family, 1, baseline_width, alpha, terms, efficiency, p_s, f_s)
    cands: list[Candidate] = []
    for i, n in enumerate(curves.widths.tolist()):
        if objective == "primal":
            m = math.floor(curves.primal_m[i] * (1 + tolerance) + 1e-9)
            while m >= 1 and family.cost(m, n, efficiency) > budget * (1 + tolerance):
                m -= 1
            if m >= 1:
                cands.append(_candidate(family, m, n, alpha, terms, efficiency, p_s, f_s))
        else:
            m = max(1, math.ceil(curves.dual_m[i] - 1e-9))
            while m > 1 and float(_expm1(alpha, curves.exponents[i])) / (m - 1) <= curves.baseline_variance * (
                    1 + tolerance):
                m -= 1
            cands.append(_candidate(family, m, n, alpha, terms, efficiency, p_s, f_s))
    if not cands:
        raise DeepensError("widths: no width admits a design within the baseline's budget")
    if objective == "primal":
        cands.sort(key=lambda c: (c.variance, -c.efficiency))
        n_c, m_c, v_c = curves.primal_optimum()
        continuous = {"n": n_c, "m": m_c, "variance": v_c}
    else:
        cands.sort(key=lambda c: (-c.efficiency, c.variance))
        n_c, m_c, r_c = curves.dual_optimum()
        continuous = {"n": n_c, "m": m_c, "efficiency": r_c}
    return CollegialDesign(objective, efficiency, alpha, terms, family.describe(), baseline, cands[0], cands, curves,
                           continuous)


def alpha_interval_for_width(
    family: Family,
    baseline_width: int,
    target_width: int,
    *,
    objective: str = "primal",
    efficiency: str = "params",
    terms: str = "fan-in",
    widths: Sequence[int] | None = None,
    bounds: tuple[float, float] = (1e-3, 1e3),
) -> tuple[float, float]:
    """The interval of α for which the continuous optimum (CE Eq. 12 or 14) lies at ``target_width``.

    The optimal width grows with α (a larger α penalises narrow members more), so the interval is
    found by bisection on the two edges. Raises when no α in ``bounds`` gives the target.
    """
    check_choice("objective", objective, OBJECTIVES)
    target_width = check_int("target_width", target_width, minimum=1)

    def optimum(alpha: float) -> int:
        c = design_curves(family, baseline_width, alpha, efficiency=efficiency, terms=terms, widths=widths)
        return c.primal_optimum()[0] if objective == "primal" else c.dual_optimum()[0]

    lo, hi = bounds

    def first_alpha_reaching(width: int) -> float | None:
        if optimum(lo) >= width:
            return lo
        if optimum(hi) < width:
            return None
        a, b = lo, hi
        for _ in range(80):
            mid = math.sqrt(a * b)
            if optimum(mid) >= width:
                b = mid
            else:
                a = mid
        return b

    start = first_alpha_reaching(target_width)
    end = first_alpha_reaching(target_width + 1)
    if start is None or (end is not None and end <= start) or optimum(start) != target_width:
        raise DeepensError(f"target_width: no α in [{lo:g}, {hi:g}] puts the {objective} optimum at width "
                           f"{target_width}")
    return start, (end if end is not None else hi)


def plot_design(primal: CollegialDesign, dual: CollegialDesign | None, path) -> None:
    """The primal curve Var(K^e)(n) at ρ = 1 and the dual curve ρ(n) at the baseline's variance, with
    the optima and the best integer designs (a CE Fig. 3 analogue), saved as a PNG."""
    from ..io.figures import pyplot, save_png

    plt = pyplot()
    c = primal.curves
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    ax.plot(c.widths, c.primal_variance, color="C0")
    n_p, m_p, v_p = c.primal_optimum()
    ax.plot([n_p], [v_p], "o", color="C3", label=f"optimum n={n_p}, m={m_p:.1f}")
    b = primal.best if primal.objective == "primal" else None
    if b is not None:
        ax.plot([b.n], [b.variance], "s", mfc="none", color="k", label=f"integer {b.label}")
    ax.axhline(c.baseline_variance, color="gray", ls="--", lw=1, label="baseline")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("member width n")
    ax.set_ylabel("Var(K^e) at ρ = 1")
    ax.set_title(f"primal ({primal.efficiency_metric}), α = {primal.alpha:.3g}")
    ax.legend(fontsize=8)
    ax = axes[1]
    d = (dual or primal).curves
    ax.plot(d.widths, d.dual_efficiency, color="C1")
    n_d, m_d, r_d = d.dual_optimum()
    ax.plot([n_d], [r_d], "o", color="C3", label=f"optimum n={n_d}, m={m_d:.1f}, ρ={r_d:.2f}")
    if dual is not None and dual.objective == "dual":
        ax.plot([dual.best.n], [dual.best.efficiency], "s", mfc="none", color="k",
                label=f"integer {dual.best.label}, ρ={dual.best.efficiency:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("member width n")
    ax.set_ylabel("efficiency ρ at the baseline's variance")
    ax.set_title("dual")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path, dpi=110, bbox_inches=None)
