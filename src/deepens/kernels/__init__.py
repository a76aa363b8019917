"""Kernels: empirical ensemble NTKs (torch.func), analytic infinite-width kernels of dense and convolutional
networks (read from the trained module), regimes, predictions."""

from .analytic import InfiniteWidthKernels, infinite_width_kernels, kernel_memory
from .drift import kernel_drift
from .duals import Moments, dual_for
from .empirical import (
    EnsembleNTK,
    cross_to_same_ratio,
    ensemble_ntk,
    gradient_cosine_vs_width,
    gradient_cosines,
    interaction_ratio,
    loss_ntk,
    member_gradients,
)
from .montecarlo import MonteCarloKernels, monte_carlo_kernels
from .network import Activation, AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Modulate, Network
from .predict import KernelPredictor, ensemble_mean_kernel, kernel_predict
from .regime import regime

__all__ = [
    "EnsembleNTK",
    "ensemble_ntk",
    "loss_ntk",
    "cross_to_same_ratio",
    "interaction_ratio",
    "gradient_cosines",
    "member_gradients",
    "gradient_cosine_vs_width",
    "Network",
    "Dense",
    "Conv",
    "Activation",
    "Modulate",
    "AvgPool",
    "GlobalAvgPool",
    "Flatten",
    "InfiniteWidthKernels",
    "infinite_width_kernels",
    "kernel_memory",
    "MonteCarloKernels",
    "monte_carlo_kernels",
    "Moments",
    "dual_for",
    "regime",
    "kernel_predict",
    "KernelPredictor",
    "ensemble_mean_kernel",
    "kernel_drift",
]
