"""Algorithm 1 of CE: fit α in E[K²]/E[K]² ≈ exp(α S(n)) (Proposition 1, CE Eq. 2/9).

For each width n of a grid, Monte Carlo NTK statistics give the normalised second moment r(n) of one
kernel entry and the standard error of log r(n) (delta method). α comes from the log-linear model
log r = α S(n) (+ an intercept when ``intercept=True``), fitted by weighted least squares with
weights 1/se²; its standard error is the WLS one, σ̂·√((XᵀWX)⁻¹), with σ̂² the weighted residual
variance (so it reflects both the Monte Carlo noise and any departure from the exponential law).
The per-width "local" α = log r(n)/S(n) shows where the law holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DeepensError, check_choice, check_int
from .families import TERMS, BottleneckFamily, Family
from .statistics import ENTRIES, NTKStatistics, ntk_statistics

__all__ = ["AlphaFit", "fit_alpha", "fit_log_linear", "default_fit_widths", "plot_alpha_fit"]


@dataclass
class AlphaFit:
    """The fitted α with its standard error, and the points it was fitted on."""

    alpha: float
    stderr: float
    intercept: float
    intercept_stderr: float
    r2: float
    widths: list[int]
    exponents: list[float]
    ratios: list[float]
    log_ratio_stderr: list[float]
    terms: str = "fan-in"
    entry: str = "diagonal"
    draws: int = 0
    family: dict = field(default_factory=dict)
    statistics: list[NTKStatistics] = field(default_factory=list, repr=False)

    @property
    def local_alpha(self) -> list[float]:
        """log r(n) / S(n) per width."""
        return [math.log(r) / s for r, s in zip(self.ratios, self.exponents, strict=True)]

    def predict_ratio(self, exponent: float) -> float:
        """exp(intercept + α S): the fitted E[K²]/E[K]² at exponent S."""
        return math.exp(self.intercept + self.alpha * exponent)

    def to_dict(self) -> dict:
        return {
            "alpha": self.alpha, "stderr": self.stderr, "intercept": self.intercept,
            "intercept_stderr": self.intercept_stderr, "r2": self.r2, "terms": self.terms, "entry": self.entry,
            "draws": self.draws, "family": self.family,
            "points": [{"width": w, "exponent": s, "ratio": r, "log_ratio_stderr": e, "local_alpha": a}
                       for w, s, r, e, a in zip(self.widths, self.exponents, self.ratios, self.log_ratio_stderr,
                                                self.local_alpha, strict=True)],
        }


def fit_log_linear(
    exponents: Sequence[float],
    log_ratios: Sequence[float],
    stderr: Sequence[float] | None = None,
    *,
    intercept: bool = False,
) -> tuple[float, float, float, float, float]:
    """Weighted least squares of log r on S: returns (α, se(α), intercept, se(intercept), weighted R²).

    Without ``intercept`` the line goes through the origin (r → 1 as the widths grow, Proposition 1).
    """
    x = np.asarray(exponents, dtype=np.float64)
    y = np.asarray(log_ratios, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise DeepensError("exponents, log_ratios: expected two 1-D sequences of the same length")
    k = 2 if intercept else 1
    if x.size < k + 1:
        raise DeepensError(f"widths: a log-linear fit{' with intercept' if intercept else ''} needs at least "
                           f"{k + 1} widths, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise DeepensError("exponents, log_ratios: expected finite values")
    if np.ptp(x) == 0:
        raise DeepensError("widths: every width gives the same exponent; use several different widths")
    if stderr is None:
        w = np.ones_like(x)
    else:
        se = np.asarray(stderr, dtype=np.float64)
        if se.shape != x.shape or not np.all(se > 0):
            raise DeepensError("stderr: expected positive standard errors, one per point")
        w = 1.0 / se**2
    design = np.stack([x, np.ones_like(x)], axis=1) if intercept else x[:, None]
    xtw = design.T * w
    cov_unscaled = np.linalg.inv(xtw @ design)
    coef = cov_unscaled @ (xtw @ y)
    resid = y - design @ coef
    dof = x.size - k
    sigma2 = float(np.sum(w * resid**2) / dof)
    cov = cov_unscaled * sigma2
    ybar = np.sum(w * y) / np.sum(w) if intercept else 0.0
    total = float(np.sum(w * (y - ybar) ** 2))
    r2 = 1.0 - float(np.sum(w * resid**2)) / total if total > 0 else float("nan")
    alpha, se_alpha = float(coef[0]), float(math.sqrt(cov[0, 0]))
    if intercept:
        return alpha, se_alpha, float(coef[1]), float(math.sqrt(cov[1, 1])), r2
    return alpha, se_alpha, 0.0, 0.0, r2


def default_fit_widths(family: Family, baseline_width: int | None = None) -> list[int]:
    """Widths for Algorithm 1: powers of two up to 128 for MLPs (capped at the baseline width) and
    1..256 for the bottleneck (CE §4.2 fits widths 1..256)."""
    if isinstance(family, BottleneckFamily):
        return [1, 2, 4, 8, 16, 32, 64, 128, 256]
    cap = 128 if baseline_width is None else max(16, min(128, baseline_width))
    return [w for w in (8, 16, 32, 64, 128) if w <= cap]


def fit_alpha(
    family: Family,
    widths: Sequence[int] | None = None,
    *,
    draws: int = 1000,
    entry: str = "diagonal",
    terms: str = "fan-in",
    intercept: bool = False,
    inputs: torch.Tensor | None = None,
    seed: int = 0,
    max_bytes: float = 256 * 2**20,
    progress=None,
) -> AlphaFit:
    """Algorithm 1: Monte Carlo NTK statistics at each width, then the log-linear fit of α.

    ``progress(width)`` is called before each width (for progress bars).
    """
    check_choice("entry", entry, ENTRIES)
    check_choice("terms", terms, TERMS)
    draws = check_int("draws", draws, minimum=10)
    widths = default_fit_widths(family) if widths is None else [check_int("widths", w, minimum=1) for w in widths]
    if len(set(widths)) != len(widths):
        raise DeepensError(f"widths: expected distinct widths, got {list(widths)}")
    stats = []
    for width in widths:
        if progress is not None:
            progress(width)
        stats.append(ntk_statistics(family, width, draws=draws, inputs=inputs, seed=seed, max_bytes=max_bytes))
    exponents = [family.exponent(w, terms) for w in widths]
    ratios = [s.ratio(entry) for s in stats]
    if any(r <= 1.0 for r in ratios):
        bad = [w for w, r in zip(widths, ratios, strict=True) if r <= 1.0]
        raise DeepensError(f"widths {bad}: E[K²]/E[K]² <= 1 (no measurable variance); use smaller widths or more draws")
    errors = [s.log_ratio_stderr(entry) for s in stats]
    alpha, se, b, se_b, r2 = fit_log_linear(exponents, [math.log(r) for r in ratios], errors, intercept=intercept)
    return AlphaFit(alpha, se, b, se_b, r2, list(widths), exponents, ratios, errors, terms, entry, draws,
                    family.describe(), stats)


def plot_alpha_fit(fit: AlphaFit, path) -> None:
    """log(E[K²]/E[K]²) against S(n) with ±2 standard errors and the fitted line (a CE Fig. 8 analogue), PNG."""
    from ..io.figures import pyplot, save_png

    plt = pyplot()
    s = np.asarray(fit.exponents)
    y = np.log(np.asarray(fit.ratios))
    e = np.asarray(fit.log_ratio_stderr)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.errorbar(s, y, yerr=2 * e, fmt="o", ms=4, capsize=2, label="Monte Carlo (±2 se)")
    grid = np.linspace(0, s.max() * 1.05, 100)
    ax.plot(grid, fit.intercept + fit.alpha * grid, color="C3",
            label=f"α = {fit.alpha:.3f} ± {fit.stderr:.3f}")
    for w, x0, y0 in zip(fit.widths, s, y, strict=True):
        ax.annotate(str(w), (x0, y0), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel(f"S(n) = Σ 1/fan-in ({fit.terms})")
    ax.set_ylabel(f"log E[K²]/E[K]² ({fit.entry} entry)")
    ax.set_title(f"Algorithm 1: {fit.family.get('block', '')}, {fit.draws} draws per width")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path, dpi=110, bbox_inches=None)
