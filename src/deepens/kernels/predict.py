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

from ..errors import DeepensError, check_choice, check_int, check_real

__all__ = ["kernel_predict", "KernelPredictor", "ensemble_mean_kernel"]


def _as(name: str, a, ndim: int | None = None) -> np.ndarray:
    """``a`` as a finite float64 array (of ``ndim`` dimensions); NaN / inf refused naming the first row."""
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DeepensError(f"{name}: expected a numeric array ({exc})") from None
    if ndim is not None and arr.ndim != ndim:
        raise DeepensError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        row = int(np.argmax(~np.isfinite(arr.reshape(len(arr), -1)).all(1))) if arr.ndim else 0
        raise DeepensError(f"{name}: non-finite values (NaN or inf), first in row {row}")
    return arr


class KernelPredictor:
    """μ_t and Σ_t for many test sets from one eigendecomposition of Θ(X, X) (see the module docstring).

    ``steps``: the training time counted in discrete gradient-descent steps of size η instead of a
    gradient-flow time t: the linearised residual after k steps is (1 − ηΘ)^k (f_0(X) − Y), so the
    spectral filter (1 − e^{−ηλt})/λ becomes (1 − (1 − ηλ)^k)/λ (→ ηk as λ → 0).
    """

    def __init__(self, ntk_train, y_train, *, lr: float = 1.0, loss: str = "sum", nngp_train=None,
                 ridge: float = 0.0, rcond: float = 1e-12) -> None:
        check_choice("loss", loss, ("sum", "mean"))
        theta = _as("ntk_train", ntk_train, 2)
        y = _as("y_train", y_train)
        n = theta.shape[0]
        if theta.shape != (n, n) or y.shape[0] != n:
            raise DeepensError(f"kernels: expected ntk_train (N, N) and y_train (N, ...); got {theta.shape}, {y.shape}")
        self.squeeze = y.ndim == 1
        self.y = y[:, None] if self.squeeze else y
        self.eta = check_real("lr", lr, low=0.0, low_open=True) / (n if loss == "mean" else 1)
        ridge = check_real("ridge", ridge, low=0.0)
        self.lam, self.vec = np.linalg.eigh(0.5 * (theta + theta.T) + ridge * np.eye(n))
        self.cutoff = rcond * max(float(self.lam.max(initial=0.0)), 0.0)
        self.proj_y = self.vec.T @ self.y  # (N, C)
        self.nngp_train = None if nngp_train is None else _as("nngp_train", nngp_train, 2)
        self.n = n

    def filter(self, t: float | None = None, steps: int | None = None) -> np.ndarray:
        """h(λ) with Θ⁻¹(1 − e^{−ηΘt}) = V diag(h) Vᵀ (or its discrete-step form)."""
        lam = self.lam
        if steps is not None:
            k = check_int("steps", steps, minimum=0)
            safe = np.where(lam != 0, lam, 1.0)
            decay = (1.0 - self.eta * lam) ** k
            return np.where(np.abs(lam) * self.eta * max(k, 1) > 1e-12, (1.0 - decay) / safe, self.eta * k)
        time = math.inf if t is None else float(t)
        if time < 0 or math.isnan(time):
            raise DeepensError(f"t: expected times >= 0, got {time}")
        if math.isinf(time):
            return np.where(lam > self.cutoff, 1.0 / np.where(lam > self.cutoff, lam, 1.0), 0.0)
        x = self.eta * time
        safe = np.where(np.abs(lam) > 0, lam, 1.0)
        return np.where(np.abs(lam) * x > 1e-12, -np.expm1(-x * lam) / safe, x)  # → ηt as λ → 0

    def _cross(self, ntk_test_train) -> np.ndarray:
        cross = _as("ntk_test_train", ntk_test_train, 2)
        if cross.shape[1] != self.n:
            raise DeepensError(f"ntk_test_train: expected (T, {self.n}), got {cross.shape}")
        return cross @ self.vec

    def mean(self, ntk_test_train, t: float | None = None, steps: int | None = None) -> np.ndarray:
        """μ at the test points, (T, C) (or (T,) for 1-D targets)."""
        out = (self._cross(ntk_test_train) * self.filter(t, steps)) @ self.proj_y
        return out[:, 0] if self.squeeze else out

    def covariance(self, ntk_test_train, nngp_test_train, nngp_test, t: float | None = None,
                   steps: int | None = None) -> np.ndarray:
        """Σ between the test points, (T, T) (the same for every output coordinate)."""
        if self.nngp_train is None:
            raise DeepensError("nngp_train: the covariance needs the NNGP kernel of the training set")
        k_cross = _as("nngp_test_train", nngp_test_train, 2)
        k_test = _as("nngp_test", nngp_test, 2)
        a = (self._cross(ntk_test_train) * self.filter(t, steps)) @ self.vec.T
        return k_test + a @ self.nngp_train @ a.T - a @ k_cross.T - k_cross @ a.T


def kernel_predict(
    ntk_train: np.ndarray,
    ntk_test_train: np.ndarray,
    y_train: np.ndarray,
    *,
    t: float | Sequence[float] = math.inf,
    steps: int | Sequence[int] | None = None,
    lr: float = 1.0,
    loss: str = "sum",
    nngp_train: np.ndarray | None = None,
    nngp_test_train: np.ndarray | None = None,
    nngp_test: np.ndarray | None = None,
    ridge: float = 0.0,
    rcond: float = 1e-12,
) -> dict:
    """Mean (and, given the NNGP blocks, covariance) of the prediction at time(s) ``t``, or after
    ``steps`` discrete gradient-descent steps (see :class:`KernelPredictor`).

    Shapes: ``ntk_train`` (N, N), ``ntk_test_train`` (T, N), ``y_train`` (N,) or (N, C); NNGP blocks (N, N),
    (T, N), (T, T). Returns ``mean`` (T, C) or (len(t), T, C) for several times, and ``covariance``
    (T, T) or (len(t), T, T) when the NNGP blocks are given.
    """
    predictor = KernelPredictor(ntk_train, y_train, lr=lr, loss=loss, nngp_train=nngp_train, ridge=ridge,
                                rcond=rcond)
    if _as("ntk_test_train", ntk_test_train, 2).shape[1] != predictor.n:
        raise DeepensError(f"kernels: expected ntk_train (N, N), ntk_test_train (T, N), y_train (N, ...); got "
                           f"{np.shape(ntk_train)}, {np.shape(ntk_test_train)}, {np.shape(y_train)}")
    discrete = steps is not None
    single = np.isscalar(steps) if discrete else np.isscalar(t)
    times = ([steps] if single else list(steps)) if discrete else ([t] if single else list(t))
    have_cov = nngp_train is not None and nngp_test_train is not None and nngp_test is not None
    means, covs = [], []
    for time in times:
        kw = {"steps": time} if discrete else {"t": time}
        means.append(predictor.mean(ntk_test_train, **kw))
        if have_cov:
            covs.append(predictor.covariance(ntk_test_train, nngp_test_train, nngp_test, **kw))
    mean = np.stack(means)
    result = {"mean": mean[0] if single else mean, "times": times}
    if discrete:
        result["steps"] = result.pop("times")
    if have_cov:
        cov = np.stack(covs)
        result["covariance"] = cov[0] if single else cov
    return result


def ensemble_mean_kernel(same: np.ndarray, cross: np.ndarray, members: int) -> np.ndarray:
    """The kernel that drives the mean of M coupled members: Θ_same + (M − 1) Θ_cross.

    With Θ_{αα} = Θ_same and Θ_{αβ} = Θ_cross for α ≠ β (EE Eq. 8), the mean f̄ = (1/M) Σ_α f_α obeys
    df̄/dt = −η (Θ_same + (M − 1) Θ_cross)(f̄(X) − Y); in the independent regime (Θ_cross = 0) every member
    follows its own kernel, in the collective regime the coupling speeds training up M-fold at large M
    unless γ(M) = 1 compensates (EE §4.2).
    """
    return np.asarray(same, dtype=np.float64) + (int(members) - 1) * np.asarray(cross, dtype=np.float64)
