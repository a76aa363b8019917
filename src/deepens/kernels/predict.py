"""Predictions of infinitely wide networks and ensembles trained by gradient flow on MSE.

Time convention: the loss is a **sum** over the N training points, L = ½ Σ_i ‖f(x_i) − y_i‖², so the
linearised dynamics is df(x)/dt = −η Σ_i Θ(x, x_i) (f(x_i) − y_i) (the convention of the emergent-
equivariance talk). With ``loss="mean"`` (L = (1/2N) Σ_i ...) the same formulas hold with η → η/N.

Over initialisations the prediction at time t is Gaussian with

    μ_t(x) = Θ(x, X) Θ(X, X)⁻¹ (1 − e^{−ηΘ(X,X)t}) Y
    Σ_t(x, x′) = K(x, x′) + A K(X, X) Aᵀ − (A K(X, x′) + K(x, X) Aᵀ),   A = Θ(x, X) Θ⁻¹ (1 − e^{−ηΘt})

(K the NNGP kernel). Computed from the eigendecomposition Θ(X, X) = V Λ Vᵀ: Θ⁻¹(1 − e^{−ηΘt}) =
V diag((1 − e^{−ηλt})/λ) Vᵀ, which tends to ηt for λ → 0 at finite t; at t = ∞ eigenvalues below
``rcond``·λ_max are dropped (pseudo-inverse). ``ridge`` adds a multiple of the identity to Θ(X, X).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import DeepensError, check_choice, check_real

__all__ = ["kernel_predict", "ensemble_mean_kernel"]


def _as(name: str, a, ndim: int | None = None) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise DeepensError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    return arr


def kernel_predict(
    ntk_train: np.ndarray,
    ntk_test_train: np.ndarray,
    y_train: np.ndarray,
    *,
    t: float | Sequence[float] = math.inf,
    lr: float = 1.0,
    loss: str = "sum",
    nngp_train: np.ndarray | None = None,
    nngp_test_train: np.ndarray | None = None,
    nngp_test: np.ndarray | None = None,
    ridge: float = 0.0,
    rcond: float = 1e-12,
) -> dict:
    """Mean (and, given the NNGP blocks, covariance) of the prediction at time(s) ``t``.

    Shapes: ``ntk_train`` (N, N), ``ntk_test_train`` (T, N), ``y_train`` (N,) or (N, C); NNGP blocks (N, N),
    (T, N), (T, T). Returns ``mean`` (T, C) or (len(t), T, C) for several times, and ``covariance``
    (T, T) or (len(t), T, T) when the NNGP blocks are given.
    """
    check_choice("loss", loss, ("sum", "mean"))
    theta = _as("ntk_train", ntk_train, 2)
    cross = _as("ntk_test_train", ntk_test_train, 2)
    y = _as("y_train", y_train)
    n = theta.shape[0]
    if theta.shape != (n, n) or cross.shape[1] != n or y.shape[0] != n:
        raise DeepensError(f"kernels: expected ntk_train (N, N), ntk_test_train (T, N), y_train (N, ...); got "
                           f"{theta.shape}, {cross.shape}, {y.shape}")
    squeeze = y.ndim == 1
    y2 = y[:, None] if squeeze else y
    eta = check_real("lr", lr, low=0.0, low_open=True) / (n if loss == "mean" else 1)
    ridge = check_real("ridge", ridge, low=0.0)
    times = [t] if np.isscalar(t) else list(t)
    lam, vec = np.linalg.eigh(0.5 * (theta + theta.T) + ridge * np.eye(n))
    cutoff = rcond * max(float(lam.max(initial=0.0)), 0.0)
    proj_cross = cross @ vec  # (T, N)
    proj_y = vec.T @ y2  # (N, C)
    have_cov = nngp_train is not None and nngp_test_train is not None and nngp_test is not None
    if have_cov:
        k_train = _as("nngp_train", nngp_train, 2)
        k_cross = _as("nngp_test_train", nngp_test_train, 2)
        k_test = _as("nngp_test", nngp_test, 2)
    means, covs = [], []
    for time in times:
        time = float(time)
        if time < 0:
            raise DeepensError(f"t: expected times >= 0, got {time}")
        if math.isinf(time):
            h = np.where(lam > cutoff, 1.0 / np.where(lam > cutoff, lam, 1.0), 0.0)
        else:
            x = eta * time
            safe = np.where(np.abs(lam) > 0, lam, 1.0)
            h = np.where(np.abs(lam) * x > 1e-12, -np.expm1(-x * lam) / safe, x)  # → ηt as λ → 0
        a = (proj_cross * h) @ vec.T  # A = Θ(x, X) V diag(h) Vᵀ, (T, N)
        means.append((proj_cross * h) @ proj_y)
        if have_cov:
            covs.append(k_test + a @ k_train @ a.T - a @ k_cross.T - k_cross @ a.T)
    mean = np.stack(means)
    if squeeze:
        mean = mean[..., 0]
    result = {"mean": mean[0] if np.isscalar(t) else mean, "times": times}
    if have_cov:
        cov = np.stack(covs)
        result["covariance"] = cov[0] if np.isscalar(t) else cov
    return result


def ensemble_mean_kernel(same: np.ndarray, cross: np.ndarray, members: int) -> np.ndarray:
    """The kernel that drives the mean of M coupled members: Θ_same + (M − 1) Θ_cross.

    With Θ_{αα} = Θ_same and Θ_{αβ} = Θ_cross for α ≠ β (EE Eq. 8), the mean f̄ = (1/M) Σ_α f_α obeys
    df̄/dt = −η (Θ_same + (M − 1) Θ_cross)(f̄(X) − Y); in the independent regime (Θ_cross = 0) every member
    follows its own kernel, in the collective regime the coupling speeds training up M-fold at large M
    unless γ(M) = 1 compensates (EE §4.2).
    """
    return np.asarray(same, dtype=np.float64) + (int(members) - 1) * np.asarray(cross, dtype=np.float64)
