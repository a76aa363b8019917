"""Monte Carlo estimates of a network's NNGP and NTK from random initialisations of the module itself.

For networks whose infinite-width kernel has no closed form (max pooling, batch norm, ...), or to check
the analytic kernels: the NNGP is estimated as the mean over ``draws`` fresh initialisations and over the
C output units of f_c(x) f_c(x′); the NTK as the mean over draws of the empirical NTK traced over outputs
(divided by C). Each estimate comes with its standard error over draws (draws are independent, so
mean ± 2·stderr covers the finite-width expectation with ~95 % probability). These are kernels of the
module at its own width: the infinite-width kernel is approached as the widths grow (the finite-width
correction is O(1/width)), so use a wide module (≥ 512 channels) to estimate the limit.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import DeepensError, check_int

__all__ = ["MonteCarloKernels", "monte_carlo_kernels"]


@dataclass
class MonteCarloKernels:
    """Estimated NNGP and NTK (N1, N2) with their standard errors over ``draws`` initialisations."""

    nngp: np.ndarray
    ntk: np.ndarray | None
    nngp_stderr: np.ndarray
    ntk_stderr: np.ndarray | None
    draws: int
    outputs: int

    @property
    def nngp_same(self) -> np.ndarray:
        return self.nngp

    @property
    def ntk_same(self) -> np.ndarray | None:
        return self.ntk


def _tensor(name: str, x, dtype, device) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    t = t.to(device=device, dtype=dtype)
    if t.dim() < 2:
        raise DeepensError(f"{name}: expected a batch of inputs (N, ...), got shape {tuple(t.shape)}")
    return t


def monte_carlo_kernels(
    module: nn.Module,
    x1,
    x2=None,
    *,
    draws: int = 32,
    seed: int = 0,
    ntk: bool = True,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> MonteCarloKernels:
    """NNGP and NTK of ``module`` estimated from ``draws`` initialisations (seeds ``seed``, ``seed`` + 1, ...),
    each drawn by the module's own ``reset_parameters``; see the module docstring for the error bars.
    The module is evaluated in evaluation mode (dropout off, batch-norm running statistics)."""
    from ..ensembles.base import Ensemble
    from ..ensembles.graph import reinitialize, seeded
    from .empirical import ensemble_ntk

    if not isinstance(module, nn.Module) or isinstance(module, Ensemble):
        raise DeepensError("module: the Monte Carlo estimate takes one network (an nn.Module that is not an "
                           "ensemble); ensembles' kernels come from the analytic path or ensemble_ntk")
    draws = check_int("draws", draws, minimum=2)
    device = torch.device(device or "cpu")
    a = _tensor("x1", x1, dtype, device)
    b = a if x2 is None else _tensor("x2", x2, dtype, device)
    nngp_samples, ntk_samples = [], []
    outputs = 0
    for d in range(draws):
        net = copy.deepcopy(module).cpu()
        with seeded(seed + d):  # drawn on the CPU: the same draws on every device
            reinitialize(net)
        net = net.to(device=device, dtype=dtype).eval()
        with torch.no_grad():
            fa = net(a).reshape(a.shape[0], -1)
            fb = fa if x2 is None else net(b).reshape(b.shape[0], -1)
        outputs = fa.shape[1]
        nngp_samples.append((fa @ fb.T / outputs).cpu())
        if ntk:
            k = ensemble_ntk(net, a, None if x2 is None else b, mode="trace").total()[0, 0]
            ntk_samples.append((k / outputs).cpu())
    nn_stack = torch.stack(nngp_samples).double()
    se = nn_stack.std(0) / draws**0.5
    if ntk:
        nt_stack = torch.stack(ntk_samples).double()
        return MonteCarloKernels(nn_stack.mean(0).numpy(), nt_stack.mean(0).numpy(), se.numpy(),
                                 (nt_stack.std(0) / draws**0.5).numpy(), draws, outputs)
    return MonteCarloKernels(nn_stack.mean(0).numpy(), None, se.numpy(), None, draws, outputs)
