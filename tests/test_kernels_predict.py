"""Kernel predictions against a direct ODE integration of the linearised dynamics."""

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from deepens.kernels import Network, ensemble_mean_kernel, infinite_width_kernels, kernel_predict

RNG = np.random.default_rng(0)
XTR, XTE = RNG.normal(size=(6, 3)), RNG.normal(size=(4, 3))
Y = RNG.normal(size=(6, 2))


def kernels():
    xs = np.vstack([XTR, XTE])
    k = infinite_width_kernels(xs, network=Network.mlp(2, "relu", 1.4, 0.1, 1.0, 0.05))
    n = len(XTR)
    t, g = k.ntk_same, k.nngp_same
    return t[:n, :n], t[n:, :n], g[:n, :n], g[n:, :n], g[n:, n:], t, g


@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_mean_matches_ode_integration(loss):
    t_tr, t_te, *_ = kernels()
    eta, horizon = 0.3, 2.0
    scale = eta / (len(Y) if loss == "mean" else 1)

    def rhs(_, state):  # d f / dt = −η Θ(·, X) (f(X) − Y), from f_0 = 0 (the mean over initialisations)
        f_tr = state[:12].reshape(6, 2)  # the test outputs do not feed back
        return np.concatenate([(-scale * t_tr @ (f_tr - Y)).ravel(), (-scale * t_te @ (f_tr - Y)).ravel()])

    sol = solve_ivp(rhs, (0, horizon), np.zeros(20), rtol=1e-11, atol=1e-12, dense_output=True)
    for time in (0.0, 0.5, horizon):
        pred = kernel_predict(t_tr, t_te, Y, t=time, lr=eta, loss=loss)["mean"]
        assert np.allclose(pred, sol.sol(time)[12:].reshape(4, 2), atol=1e-8)


def test_covariance_matches_ode_integration():
    t_tr, t_te, k_tr, k_te_tr, k_te, t_all, k_all = kernels()
    eta, horizon = 0.5, 1.5
    n, m = 6, 4
    # deviations δ = f − μ obey dδ/dt = −B δ with B acting on [train; test]: covariance P' = −(B P + P Bᵀ)
    b = np.zeros((n + m, n + m))
    b[:n, :n] = eta * t_tr
    b[n:, :n] = eta * t_te

    def rhs(_, p):
        p = p.reshape(n + m, n + m)
        return (-(b @ p + p @ b.T)).ravel()

    sol = solve_ivp(rhs, (0, horizon), k_all.ravel(), rtol=1e-11, atol=1e-12, dense_output=True)
    for time in (0.0, 0.7, horizon):
        pred = kernel_predict(t_tr, t_te, Y, t=time, lr=eta, nngp_train=k_tr, nngp_test_train=k_te_tr,
                              nngp_test=k_te)
        p = sol.sol(time).reshape(n + m, n + m)
        assert np.allclose(pred["covariance"], p[n:, n:], atol=1e-8)


def test_limits():
    t_tr, t_te, k_tr, k_te_tr, k_te, *_ = kernels()
    zero = kernel_predict(t_tr, t_te, Y, t=0.0, nngp_train=k_tr, nngp_test_train=k_te_tr, nngp_test=k_te)
    assert np.allclose(zero["mean"], 0) and np.allclose(zero["covariance"], k_te)
    inf = kernel_predict(t_tr, t_te, Y, t=math.inf)["mean"]
    assert np.allclose(inf, t_te @ np.linalg.solve(t_tr, Y), atol=1e-10)
    # the trained network interpolates the training data at t = ∞ with zero variance there
    at_train = kernel_predict(t_tr, t_tr, Y, t=math.inf, nngp_train=k_tr, nngp_test_train=k_tr, nngp_test=k_tr)
    assert np.allclose(at_train["mean"], Y, atol=1e-9) and np.allclose(at_train["covariance"], 0, atol=1e-9)
    several = kernel_predict(t_tr, t_te, Y, t=[0.1, 1.0, math.inf])["mean"]
    assert several.shape == (3, 4, 2) and np.allclose(several[-1], inf)


def test_singular_kernel_and_ridge():
    t_tr, t_te, *_ = kernels()
    dup = np.vstack([t_tr, t_tr[:1]])
    dup = np.hstack([dup, dup[:, :1]])  # a duplicated training point: Θ(X, X) is singular
    y = np.vstack([Y, Y[:1]])
    cross = np.hstack([t_te, t_te[:, :1]])
    out = kernel_predict(dup, cross, y, t=math.inf)["mean"]
    assert np.all(np.isfinite(out))
    assert np.allclose(out, kernel_predict(t_tr, t_te, Y, t=math.inf)["mean"], atol=1e-6)
    ridge = kernel_predict(t_tr, t_te, Y, t=math.inf, ridge=1e3)["mean"]
    assert np.abs(ridge).max() < np.abs(kernel_predict(t_tr, t_te, Y, t=math.inf)["mean"]).max()


def test_coupled_members_follow_the_ensemble_mean_kernel():
    k = infinite_width_kernels(np.vstack([XTR, XTE]), network=Network.mlp(2, "relu", u="shifted-normal:0.6",
                                                                           v="shifted-normal:0.6"))
    same, cross, members, n = k.ntk_same, k.ntk_cross, 3, len(XTR)
    eta = 0.2

    def rhs(_, state):  # each member: d f_α/dt = −η Σ_β Θ_αβ(·, X) (f_β(X) − Y)  (EE Eq. 8)
        f = state.reshape(members, n + len(XTE), 2)
        out = np.zeros_like(f)
        for a in range(members):
            for b_ in range(members):
                kern = same if a == b_ else cross
                out[a] -= eta * kern[:, :n] @ (f[b_, :n] - Y)
        return out.ravel()

    sol = solve_ivp(rhs, (0, 1.0), np.zeros(members * (n + 4) * 2), rtol=1e-11, atol=1e-12)
    mean = sol.y[:, -1].reshape(members, n + 4, 2).mean(0)[n:]
    eff = ensemble_mean_kernel(same, cross, members)
    pred = kernel_predict(eff[:n, :n], eff[n:, :n], Y, t=1.0, lr=eta)["mean"]
    assert np.allclose(pred, mean, atol=1e-8)
