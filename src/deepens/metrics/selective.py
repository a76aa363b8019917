"""Selective classification: predict only where the confidence is highest (Geifman & El-Yaniv 2017).

With the samples sorted by decreasing confidence, the risk at coverage k/N is the error rate of the k most
confident predictions; ``aurc`` is the mean of the risks over k = 1..N (the area under the risk–coverage curve
with the usual step rule), and ``accuracy_at`` the accuracy of the ⌈c·N⌉ most confident predictions for each
coverage c. Ties in confidence are broken by a stable sort (sample order). Vectorised over leading axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import DeepensError, check_real

__all__ = ["risk_coverage"]


def risk_coverage(confidence, correct, *, coverages: Sequence[float] = (0.5, 0.8, 0.9, 0.95, 1.0)) -> dict:
    """``coverage`` (N,), ``risk`` (..., N), ``aurc`` (...) and ``accuracy_at`` {c: (...)} from per-sample
    ``confidence`` and ``correct`` (0/1) of shape (..., N)."""
    conf = torch.as_tensor(confidence).double()
    ok = torch.as_tensor(correct).double()
    if conf.shape != ok.shape or conf.dim() < 1 or conf.shape[-1] < 1:
        raise DeepensError(f"confidence, correct: expected equal shapes (..., N), got {tuple(conf.shape)} and "
                           f"{tuple(ok.shape)}")
    n = conf.shape[-1]
    order = torch.argsort(conf, dim=-1, descending=True, stable=True)
    errors = (1 - torch.gather(ok, -1, order)).cumsum(-1)
    k = torch.arange(1, n + 1, dtype=torch.float64)
    risk = errors / k
    accuracy_at = {}
    for c in coverages:
        c = check_real("coverages", c, low=0.0, high=1.0, low_open=True)
        top = max(1, math.ceil(c * n - 1e-9))
        accuracy_at[c] = 1 - risk[..., top - 1]
    return {"coverage": k / n, "risk": risk, "aurc": risk.mean(-1), "accuracy_at": accuracy_at}
