"""The infinite-width prediction of a deep ensemble trained with augmentation, and its symmetry.

An infinitely wide MLP ensemble trained by gradient descent on MSE predicts, averaged over
initialisations, μ_t(x) = Θ(x, X) Θ(X, X)⁻¹ (1 − e^{−ηΘ(X,X)t}) Y with covariance Σ_t (talk, "Freezing of
NTK"; :mod:`deepens.kernels.predict`). When (X, Y) is orbit-augmented and ρ_X is orthogonal (so the MLP
kernels are invariant, Θ(ρ_X(g)x, ρ_X(g)x′) = Θ(x, x′)), μ_t(ρ_X(g)x) = ρ_Y(g) μ_t(x) for every t and every
x, in or out of distribution (talk, "Emergent equivariance of deep ensembles", by the permutation shift
Π(g) of the augmented training set). :class:`InfiniteWidthEnsemble` computes μ_t and Σ_t with the
analytic kernels of :mod:`deepens.kernels.analytic` in float64, so the statement can be checked to
round-off, and its failure without augmentation shown.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import DeepensError
from ..kernels.analytic import infinite_width_kernels
from ..kernels.network import Network
from ..kernels.predict import KernelPredictor
from .metrics import _np

__all__ = ["InfiniteWidthEnsemble"]


class InfiniteWidthEnsemble:
    """μ_t (and Σ_t) of an infinitely wide ensemble of ``network`` trained on (``x_train``, ``y_train``).

    ``network``: a :class:`deepens.kernels.Network` or the module itself (read by ``Network.from_module``;
    default a one-hidden-layer ReLU MLP). Inputs are flattened to vectors for a dense network and kept as
    images (N, C, H, W) / sequences (N, C, L) for a convolutional one. ``memory`` bounds the kernels'
    working memory (see :func:`deepens.kernels.infinite_width_kernels`). ``lr`` and ``loss`` follow
    :func:`deepens.kernels.kernel_predict`
    (``loss="mean"``: L = (1/2N) Σ_i ‖f(x_i) − y_i‖², the loss of a full-batch training loop that
    averages over samples); the time is a gradient-flow time ``t`` or a number of GD ``steps``
    (default t = ∞: kernel regression).
    """

    def __init__(self, x_train, y_train, network: Network | nn.Module | None = None, *, lr: float = 1.0,
                 loss: str = "mean", t: float | None = None, steps: int | None = None, with_covariance: bool = False,
                 memory: int | str = 2 * 1024**3) -> None:
        if t is not None and steps is not None:
            raise DeepensError("t: give a gradient-flow time t or a number of steps, not both")
        if isinstance(network, nn.Module):
            network = Network.from_module(network)
        self.network = network or Network.mlp(1)
        self.memory = memory
        self.x_train = self._inputs(x_train)
        y = _np(y_train)
        self.out_shape = y.shape[1:]
        self.y_train = y.reshape(len(y), -1)
        kernels = infinite_width_kernels(self.x_train, network=self.network, memory=memory)
        self.predictor = KernelPredictor(kernels.ntk_same, self.y_train, lr=lr, loss=loss,
                                         nngp_train=kernels.nngp_same if with_covariance else None)
        self.t = math.inf if t is None and steps is None else t
        self.steps = steps

    def _inputs(self, x) -> np.ndarray:
        x = _np(x)
        return x.reshape(len(x), -1) if self.network.spatial_dims is None else x

    def _kernels(self, x1, x2=None):
        return infinite_width_kernels(x1, x2, self.network, memory=self.memory)

    def _time(self, t, steps) -> dict:
        if t is None and steps is None:
            return {"t": self.t, "steps": self.steps}
        return {"t": t, "steps": steps}

    def mean(self, x, *, t: float | None = None, steps: int | None = None) -> np.ndarray:
        """μ at inputs ``x`` (B, ...), shaped (B, *target shape)."""
        xs = self._inputs(x)
        cross = self._kernels(xs, self.x_train).ntk_same
        out = self.predictor.mean(cross, **self._time(t, steps))
        return out.reshape(len(xs), *self.out_shape)

    def variance(self, x, *, t: float | None = None, steps: int | None = None) -> np.ndarray:
        """Σ(x, x) at each input (B,): the variance over initialisations of every output coordinate."""
        if self.predictor.nngp_train is None:
            raise DeepensError("with_covariance: build the InfiniteWidthEnsemble with with_covariance=True")
        xs = self._inputs(x)
        cross = self._kernels(xs, self.x_train)
        own = self._kernels(xs)
        cov = self.predictor.covariance(cross.ntk_same, cross.nngp_same, own.nngp_same, **self._time(t, steps))
        return np.clip(np.diag(cov), 0.0, None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """μ as a torch function of a batch (for the orbit metrics), float64."""
        return torch.from_numpy(self.mean(x))
