"""Deep-ensemble equivalent (DEE, Ashukha et al. 2020): the size of a deep ensemble that matches a
method's calibrated metric.

Walk along the deep-ensemble curve d(1), d(2), ... while the method is better; interpolate linearly
between the two bracketing sizes; 1 when the method is no better than one network. A method better
than the largest measured deep ensemble gets that size (``capped``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DeepensError

__all__ = ["deep_ensemble_equivalent"]


def deep_ensemble_equivalent(value: float, deep_curve: Sequence[float], *, lower_is_better: bool = True) -> dict:
    """DEE of one metric value against ``deep_curve`` = (d(1), d(2), ..., d(K)) for sizes 1..K."""
    d = np.asarray(deep_curve, dtype=np.float64)
    if d.ndim != 1 or d.size == 0 or not np.all(np.isfinite(d)):
        raise DeepensError("deep_curve: expected the finite metric of deep ensembles of sizes 1, 2, ..., K")
    sign = 1.0 if lower_is_better else -1.0
    v, d = sign * float(value), sign * d  # now lower is better
    if v >= d[0]:
        return {"dee": 1.0, "capped": False}
    for j in range(len(d) - 1):  # sizes j+1 and j+2
        if d[j] > v >= d[j + 1]:
            return {"dee": float((j + 1) + (d[j] - v) / (d[j] - d[j + 1])), "capped": False}
        if d[j + 1] >= d[j] and v < d[j]:  # the curve stopped improving: the method is better than every size
            break
    return {"dee": float(int(np.argmin(d)) + 1), "capped": True}
