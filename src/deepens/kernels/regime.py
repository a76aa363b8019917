"""The regime verdict of an embedded ensemble from its infinite-width kernels (EE §4.2, Theorems 1-2).

``independent``: the cross-member output covariance and NTK vanish — members are independent networks
(EE Theorem 1.2 / 2.2: it suffices that the last hidden layer's post-activation modulation is centred,
U₁ᴸ = 0). ``collective``: they do not — members are perturbations of one network. The per-layer
same- and cross-member values and their ratio show where independence is reached.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import check_real
from .analytic import Network, infinite_width_kernels

__all__ = ["regime", "PROBE_INPUTS"]

# two unit-norm inputs at 60 degrees: |x|²/d = 1 and x·x′/d = 0.5
PROBE_INPUTS = np.array([[math.sqrt(2.0), 0.0], [math.sqrt(2.0) * 0.5, math.sqrt(2.0) * math.sqrt(0.75)]])


def regime(network: Network, x: np.ndarray | None = None, *, members: int | None = None, gamma: float | str = "M",
           tol: float = 1e-10) -> dict:
    """Verdict, per-layer same / cross values (mean |kernel| over input pairs) and cross/same ratios.

    ``x`` are the probe inputs (default: two unit-norm inputs at 60°). A kernel counts as vanishing when
    |cross| <= ``tol`` · |same|.
    """
    tol = check_real("tol", tol, low=0.0)
    probe = PROBE_INPUTS if x is None else np.asarray(x, dtype=np.float64)
    k = infinite_width_kernels(probe, network=network, members=members, gamma=gamma)
    rows = []
    for row in k.layers:
        rows.append({
            **row,
            "nngp_ratio": row["nngp_cross"] / row["nngp_same"] if row["nngp_same"] else float("nan"),
            "ntk_ratio": row["ntk_cross"] / row["ntk_same"] if row["ntk_same"] else float("nan"),
        })
    out = rows[-1]
    independent = out["nngp_cross"] <= tol * out["nngp_same"] and out["ntk_cross"] <= tol * out["ntk_same"]
    last = network.layers[-1].u
    u_mean = 1.0 if last is None else last.first_moment
    if independent:
        reason = "the cross-member output covariance and NTK vanish"
    elif u_mean == 0.0 and network.readout_bias_std > 0:
        reason = "U₁ᴸ = 0, but the shared readout bias couples the members (σ_b² in every cross kernel)"
    else:
        reason = f"the last hidden layer's post-activation modulation has mean U₁ᴸ = {u_mean:g} ≠ 0"
    return {
        "verdict": "independent" if independent else "collective",
        "reason": reason,
        "last_layer_u_mean": u_mean,
        "nngp_ratio": out["nngp_ratio"],
        "ntk_ratio": out["ntk_ratio"],
        "layers": rows,
    }
