"""Deep-ensemble equivalent (DEE, Ashukha et al. 2020): the size of a deep ensemble that matches a
method's calibrated metric.

DEE = min{ l ≥ 1 : DE(l) ≤ value } (≥ for accuracies) on the linearly interpolated deep-ensemble curve
DE(1), DE(2), ..., DE(K): the first crossing. Measured curves tie and turn up (accuracy ties on small test
sets, noisy CNLL of small pools); the first size where the interpolated curve reaches the value counts, however
the curve moves before or after it. A method no better than one network gets 1; a method better than every
measured size gets K with ``capped`` (the DEE is at least K).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DeepensError

__all__ = ["deep_ensemble_equivalent"]


def deep_ensemble_equivalent(value: float, deep_curve: Sequence[float], *, lower_is_better: bool = True) -> dict:
    """DEE of one metric ``value`` against ``deep_curve`` = (DE(1), ..., DE(K)) for sizes 1..K: the first l ≥ 1
    where the linearly interpolated curve is at least as good as ``value`` (lower NLL / error, or higher accuracy
    with ``lower_is_better=False``). Returns ``{"dee": l, "capped": False}``, or ``{"dee": K, "capped": True}``
    when no size reaches the value. A curve that crosses the value several times (ties, upticks) gives its first
    crossing. NaN or infinite entries and a non-finite value are refused with a :class:`DeepensError` naming the
    first offending size."""
    d = np.asarray(deep_curve, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise DeepensError("deep_curve: expected the metric of deep ensembles of sizes 1, 2, ..., K (a non-empty "
                           "list of numbers)")
    bad = np.flatnonzero(~np.isfinite(d))
    if bad.size:
        raise DeepensError(f"deep_curve: the value of size {int(bad[0]) + 1} is {d[bad[0]]}; expected finite numbers")
    if not np.isfinite(value):
        raise DeepensError(f"value: expected a finite metric value, got {value}")
    sign = 1.0 if lower_is_better else -1.0
    v, d = sign * float(value), sign * d  # now lower is better
    if d[0] <= v:
        return {"dee": 1.0, "capped": False}
    for j in range(len(d) - 1):  # every size up to j + 1 is worse than v: the first crossing is on this segment
        if d[j + 1] <= v:
            return {"dee": float((j + 1) + (d[j] - v) / (d[j] - d[j + 1])), "capped": False}
    return {"dee": float(len(d)), "capped": True}
