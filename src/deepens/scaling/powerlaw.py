"""Power laws PL_m = c + b·m^a (a < 0, b > 0) fitted as in the power-laws paper, Eq. (6).

The fit minimises (1/M) Σ_m (log₂(ŷ_m − c) − log₂(b m^a))² over (a, b, c) with c below min ŷ. For a fixed
c it is a linear regression of log₂(ŷ_m − c) on log₂ m, so the loss is profiled over c = min ŷ − δ.

One caveat of Eq. (6): as c → −∞, log₂(ŷ − c) flattens and the absolute residuals shrink without
bound, so the loss has a spurious infimum at the edge (a → 0, b → ∞). deepens therefore chooses the
basin of c by the scale-invariant fraction of unexplained variance SS_res/SS_tot of that regression
(which the degenerate edge cannot drive to zero) over a grid of δ spanning many orders of magnitude,
refines it with a bounded scalar search, and then minimises Eq. (6) itself with L-BFGS-B over
(a, log₂ b, log δ) inside that basin. For genuine power laws both criteria share the minimum. The fit
reports a, b, c, the RMSE in log₂ space (the objective) and in linear space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from ..errors import DeepensError

__all__ = ["PowerLaw", "fit_power_law", "predict_from_prefix"]


@dataclass(frozen=True)
class PowerLaw:
    """c + b·m^a, with its fit quality."""

    a: float
    b: float
    c: float
    rmse_log2: float
    rmse: float
    points: int

    def __call__(self, m) -> np.ndarray | float:
        values = self.c + self.b * np.power(np.asarray(m, dtype=np.float64), self.a)
        return float(values) if np.ndim(values) == 0 else values

    def to_dict(self) -> dict:
        return asdict(self)


def _regress(lm: np.ndarray, ly: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ly ≈ intercept + slope·lm; returns (slope, intercept, mean squared residual)."""
    x = lm - lm.mean()
    slope = float((x * (ly - ly.mean())).sum() / (x * x).sum())
    intercept = float(ly.mean() - slope * lm.mean())
    resid = ly - intercept - slope * lm
    return slope, intercept, float((resid * resid).mean())


def fit_power_law(m: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """Fit PL_m = c + b·m^a to points (m, ŷ_m) (power-laws Eq. 6); see the module docstring.

    Raises :class:`DeepensError` for fewer than 3 points, non-positive or repeated m, non-finite values,
    or sequences that cannot follow a power law with a < 0 and b > 0 (e.g. increasing or constant).
    """
    m = np.asarray(m, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if m.ndim != 1 or y.shape != m.shape:
        raise DeepensError(f"points: expected two 1-D sequences of equal length, got shapes {m.shape} and {y.shape}")
    if m.size < 3:
        raise DeepensError(f"points: a power law c + b·m^a has 3 parameters; expected at least 3 points, got {m.size}")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(y))):
        raise DeepensError("points: expected finite values")
    if np.any(m <= 0) or np.unique(m).size != m.size:
        raise DeepensError("m: expected distinct positive arguments (ensemble sizes, network sizes or budgets)")
    order = np.argsort(m)
    m, y = m[order], y[order]
    lm = np.log2(m)
    span = float(y.max() - y.min())
    if span <= 0:
        raise DeepensError("values: a constant sequence cannot follow a power law with b > 0")
    slope_raw = _regress(lm, y)[0]
    if slope_raw >= 0 or y[-1] >= y[0]:
        raise DeepensError("values: the sequence does not decrease with m, so it cannot follow c + b·m^a with "
                           "a < 0 and b > 0")
    y_min = float(y.min())
    scale = max(span, 1e-12 * max(abs(y_min), 1.0))

    def regression(log_delta: float) -> tuple[float, float, float, float]:
        ly = np.log2(y - (y_min - math.exp(log_delta)))
        slope, intercept, mse = _regress(lm, ly)
        return slope, intercept, mse, float(ly.var())

    def unexplained(log_delta: float) -> float:
        _, _, mse, var = regression(log_delta)
        return mse / var if var > 0 else math.inf

    grid = np.linspace(math.log(1e-9 * scale), math.log(1e5 * scale), 240)
    losses = np.array([unexplained(g) for g in grid])
    best = int(np.argmin(losses))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    log_delta = minimize_scalar(unexplained, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}).x
    if best >= len(grid) - 2:
        raise DeepensError("values: over this range the sequence decays like a logarithm of m: the best fit has "
                           "c → −∞ (no finite asymptote), so no power law c + b·m^a can be identified")
    slope, intercept, _, _ = regression(log_delta)

    def loss(theta: np.ndarray) -> float:
        a, log2_b, ld = theta
        c = y_min - math.exp(ld)
        resid = np.log2(y - c) - (log2_b + a * lm)
        return float((resid * resid).mean())

    start = np.array([slope, intercept, log_delta])
    basin = (log_delta - 3.0, log_delta + 3.0)  # Eq. (6) within the chosen basin of c
    polished = minimize(loss, start, method="L-BFGS-B", bounds=[(None, None), (None, None), basin],
                        options={"ftol": 1e-15, "gtol": 1e-12})
    theta = polished.x if polished.fun <= loss(start) else start
    a, log2_b, ld = (float(v) for v in theta)
    c = y_min - math.exp(ld)
    if a >= 0:
        raise DeepensError("values: the best fit has a >= 0; the sequence does not follow a decreasing power law")
    law = PowerLaw(a, 2.0**log2_b, c, math.sqrt(loss(theta)), 0.0, int(m.size))
    rmse = float(np.sqrt(np.mean((law(m) - y) ** 2)))
    return PowerLaw(law.a, law.b, law.c, law.rmse_log2, rmse, law.points)


def predict_from_prefix(m: Sequence[float], y: Sequence[float], k: int = 4) -> dict:
    """Fit on the points with m <= k (power-laws §7 uses n = 1..4) and predict the rest.

    Returns the fitted law and, for every m > k, the prediction, the measured value and their error.
    """
    m = np.asarray(m, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    prefix = m <= k
    law = fit_power_law(m[prefix], y[prefix])
    rows = [{"m": float(mm), "predicted": law(mm), "measured": float(yy), "error": law(mm) - float(yy)}
            for mm, yy in zip(m[~prefix], y[~prefix], strict=True)]
    errors = np.array([r["error"] for r in rows])
    return {
        "fit": law.to_dict(),
        "predictions": rows,
        "rmse": float(np.sqrt(np.mean(errors**2))) if rows else None,
        "max_abs_error": float(np.abs(errors).max()) if rows else None,
    }
