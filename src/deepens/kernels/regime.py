"""The regime verdict of an embedded ensemble from its infinite-width kernels (EE §4.2, Theorems 1-2).

``independent``: the cross-member output covariance and NTK vanish — members are independent networks
(EE Theorem 1.2 / 2.2: it suffices that the last hidden layer's post-activation modulation is centred,
U₁ᴸ = 0). ``collective``: they do not — members are perturbations of one network. The per-layer
same- and cross-member values and their ratio show where independence is reached.
"""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from ..errors import DeepensError, check_real
from .analytic import infinite_width_kernels
from .network import Network

__all__ = ["regime", "PROBE_INPUTS"]

# two unit-norm inputs at 60 degrees: |x|²/d = 1 and x·x′/d = 0.5
PROBE_INPUTS = np.array([[math.sqrt(2.0), 0.0], [math.sqrt(2.0) * 0.5, math.sqrt(2.0) * math.sqrt(0.75)]])


def regime(network: Network | nn.Module, x: np.ndarray | None = None, *, members: int | None = None,
           gamma: float | str = "M", tol: float = 1e-10) -> dict:
    """Verdict, per-layer same / cross values (mean |kernel| over input pairs) and cross/same ratios.

    ``network``: a :class:`Network` or the ensemble module itself (read with ``Network.from_module``).
    ``x`` are the probe inputs (default for dense networks: two unit-norm inputs at 60°; convolutional
    networks need images). A kernel counts as vanishing when |cross| <= ``tol`` · |same|.
    """
    tol = check_real("tol", tol, low=0.0)
    if isinstance(network, nn.Module):
        network = Network.from_module(network)
    if x is None and network.spatial_dims is not None:
        raise DeepensError("x: a convolutional network's regime needs probe images (N, C, H, W) or (N, C, L)")
    probe = PROBE_INPUTS if x is None else x
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
    last = network.last_modulation()
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
