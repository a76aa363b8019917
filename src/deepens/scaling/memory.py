"""CNLL against the memory budget, the Memory Split Advantage, and the optimal memory split
(power-laws paper §6-7, Appendix K).

A budget B is a total parameter count; a split is n networks of size B/n. Given pool curves at several
network sizes s (parameter counts):

* ``budget_envelope`` — every measured point (B = n·s, CNLL_n(s)) and their lower envelope: the points
  no other point beats with a budget no larger (a power law in B, §6).
* ``memory_split_table`` — for a budget, the measured splits whose n·s is within a tolerance of B, the
  best one, and whether the Memory Split Advantage holds (the best split has n > 1; undetermined when
  no single network of that budget was measured).
* ``predict_memory_split`` — for each n, the width multiplier k whose single-network count s(k) is B/n
  (closed-form root of a quadratic count a·k² + b·k + c, or bisection of any increasing count), and the
  CNLL predicted by power laws: per measured size (fitted on n <= k), with their parameters (a, b, c)
  interpolated in log s for sizes between measured ones; the best (n, k) and the runner-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DeepensError, check_int, check_real
from .powerlaw import PowerLaw, fit_power_law

__all__ = ["WidthFamily", "budget_envelope", "memory_split_table", "predict_memory_split"]


@dataclass
class WidthFamily:
    """Parameter count s(k) of a model family as a function of its width multiplier k (increasing)."""

    count: Callable[[float], float]
    quadratic: tuple[float, float, float] | None = None  # (a, b, c): s(k) = a k² + b k + c

    @classmethod
    def from_quadratic(cls, a: float, b: float, c: float) -> WidthFamily:
        return cls(lambda k: a * k * k + b * k + c, (a, b, c))

    @classmethod
    def mlp(cls, in_features: int, widths: Sequence[int], out_features: int, bias: bool = False) -> WidthFamily:
        """deepens.MLP with hidden widths w·k: s(k) = k² Σ w_i w_{i+1} + k (in·w_1 + w_L·out + bias Σ w_i) + c."""
        w = [float(x) for x in widths]
        a = sum(w[i] * w[i + 1] for i in range(len(w) - 1))
        b = in_features * w[0] + w[-1] * out_features + (sum(w) if bias else 0.0)
        c = float(out_features) if bias else 0.0
        return cls.from_quadratic(a, b, c)

    def solve(self, size: float) -> float:
        """The multiplier k with s(k) = size."""
        size = check_real("size", size, low=0.0, low_open=True)
        if self.quadratic is not None:
            a, b, c = self.quadratic
            if a == 0:
                return (size - c) / b
            disc = b * b - 4 * a * (c - size)
            if disc < 0:
                raise DeepensError(f"size: no width multiplier gives {size:g} parameters")
            return (-b + math.sqrt(disc)) / (2 * a)
        lo, hi = 0.0, 1.0
        while self.count(hi) < size:
            hi *= 2.0
            if hi > 1e12:
                raise DeepensError(f"size: no width multiplier gives {size:g} parameters")
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.count(mid) < size else (lo, mid)
        return 0.5 * (lo + hi)


def _points(curves: dict[float, list[dict]], key: str, reliable_only: bool) -> list[dict]:
    pts = []
    for size, rows in curves.items():
        if not math.isfinite(float(size)) or float(size) <= 0:
            raise DeepensError(f"curves: network sizes must be positive finite parameter counts, got {size!r}")
        for r in rows:
            if r["reliable"] or not reliable_only:
                value = r[key]
                if value is None or not math.isfinite(float(value)):
                    raise DeepensError(f"curves: {key} of n = {r['n']} at size {size:g} is {value}; expected a finite "
                                       "number (drop or recompute that point)")
                pts.append({"size": float(size), "n": int(r["n"]), "budget": float(size) * int(r["n"]),
                            "value": float(value)})
    return pts


def budget_envelope(curves: dict[float, list[dict]], *, key: str = "cnll_mean", reliable_only: bool = True,
                    fit: bool = True) -> dict:
    """Measured (budget, CNLL) points of pool curves keyed by network size, their lower envelope, and the
    power law of the envelope in the budget (when at least 3 envelope points decrease)."""
    pts = sorted(_points(curves, key, reliable_only), key=lambda p: (p["budget"], p["value"]))
    envelope, best = [], math.inf
    for p in pts:
        if p["value"] < best:
            envelope.append(p)
            best = p["value"]
    out: dict = {"points": pts, "envelope": envelope, "fit": None}
    if fit and len(envelope) >= 3:
        try:
            out["fit"] = fit_power_law([p["budget"] for p in envelope], [p["value"] for p in envelope]).to_dict()
        except DeepensError as exc:
            out["fit_error"] = str(exc)
    return out


def memory_split_table(curves: dict[float, list[dict]], budget: float, *, key: str = "cnll_mean",
                       tolerance: float = 0.1, reliable_only: bool = True) -> dict:
    """Measured splits of ``budget`` (n·s within ``tolerance`` of it), the best, and the MSA verdict."""
    budget = check_real("budget", budget, low=0.0, low_open=True)
    candidates = [p for p in _points(curves, key, reliable_only) if abs(p["budget"] - budget) <= tolerance * budget]
    candidates.sort(key=lambda p: p["value"])
    if not candidates:
        return {"budget": budget, "splits": [], "best": None, "msa": None}
    best = candidates[0]
    singles = [p for p in candidates if p["n"] == 1]
    return {
        "budget": budget,
        "splits": sorted(candidates, key=lambda p: p["n"]),
        "best": best,
        "single_network": singles[0] if singles else None,
        # the MSA effect compares splits with one network of the whole budget: undetermined without it
        "msa": (best["n"] > 1) if singles else None,
    }


def _interpolated_law(laws: dict[float, PowerLaw], size: float) -> tuple[float, float, float]:
    """(a, b, c) at a network size, linear in log s between measured sizes (held constant outside)."""
    sizes = np.array(sorted(laws))
    logs = np.log(sizes)
    params = np.array([[laws[s].a, laws[s].b, laws[s].c] for s in sizes])
    x = math.log(size)
    return tuple(float(np.interp(x, logs, params[:, j])) for j in range(3))


def predict_memory_split(
    curves: dict[float, list[dict]],
    budget: float,
    family: WidthFamily,
    *,
    key: str = "cnll_mean",
    fit_k: int = 4,
    max_members: int = 64,
    reliable_only: bool = True,
) -> dict:
    """The predicted optimal memory split of ``budget`` (see the module docstring).

    ``curves`` maps network size s (parameters) to its pool curve; power laws are fitted on n <= ``fit_k``
    of each. Candidates are n = 1..``max_members`` with width multiplier k(n) = s⁻¹(B/n) inside the
    measured size range (extrapolating the laws far beyond measured sizes is not trusted).
    """
    budget = check_real("budget", budget, low=0.0, low_open=True)
    fit_k = check_int("fit_k", fit_k, minimum=3)
    laws: dict[float, PowerLaw] = {}
    for size, rows in curves.items():
        used = [r for r in rows if (r["reliable"] or not reliable_only) and r["n"] <= fit_k]
        if len(used) >= 3:
            laws[float(size)] = fit_power_law([r["n"] for r in used], [r[key] for r in used])
    if not laws:
        raise DeepensError(f"curves: no network size has 3 reliable points with n <= {fit_k} to fit a power law")
    lo_size, hi_size = min(laws), max(laws)
    candidates = []
    for n in range(1, check_int("max_members", max_members, minimum=1) + 1):
        size = budget / n
        if size < lo_size * 0.999 or size > hi_size * 1.001:
            continue
        a, b, c = _interpolated_law(laws, size)
        candidates.append({"n": n, "size": size, "width_multiplier": family.solve(size),
                           "predicted": c + b * n**a})
    candidates.sort(key=lambda r: r["predicted"])
    return {
        "budget": budget,
        "laws": {str(s): law.to_dict() for s, law in sorted(laws.items())},
        "candidates": sorted(candidates, key=lambda r: r["n"]),
        "best": candidates[0] if candidates else None,
        "runner_up": candidates[1] if len(candidates) > 1 else None,
    }
