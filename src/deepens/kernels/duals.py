"""Gaussian expectations of a modulated activation φ(v·z): the "dual" maps of the kernel recursion.

For a bivariate Gaussian (z, z′) with variances q1, q2 and covariance c, and a pre-activation
modulation v (the same draw v₁ = v₂ = v for one member, independent draws for two members):

    Φ  = E[φ(v₁z) φ(v₂z′)]                 (NNGP of the post-activation, EE Eq. 29)
    Ṫ  = E[v₁ v₂ φ′(v₁z) φ′(v₂z′)]          (propagates the NTK; EE Eq. 35 writes V₂·Φ̇, which is
                                            only right when v can be pulled out of φ′)
    Φz = E[z z′ φ′(vz) φ′(vz′)]             (trainable v; EE Eq. 43 has φ where φ′ belongs:
                                            ∂[u φ(v z)]/∂v = u z φ′(v z))

Closed forms: ReLU (arc-cosine kernels; random-sign modulations handled exactly through the sign
moments E[|v| 1{v>0}], E[|v| 1{v<0}], since relu(v z) = |v| relu(sign(v) z)), erf (Williams 1997, with
Gauss–Hermite quadrature over v's distribution), identity. Any other elementwise φ: Gauss–Hermite
quadrature of the Hermite coefficients of φ(v√q ξ) and Mehler's formula
E[f(ξ) g(ξ′)] = Σ_n f_n g_n ρⁿ (ξ, ξ′ standard normals with correlation ρ), which is separable over
inputs (O(N²·terms) per layer); entries with identical inputs use direct 1-D quadrature.

All inputs broadcast: ``q1`` and ``q2`` are the variances of the two points, ``c`` their covariance.
Correlations are clamped to [−1, 1] and zero variances handled, so (nearly) parallel inputs and the
diagonal never give NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..errors import DeepensError
from ..layers.activations import ACTIVATIONS
from ..layers.distributions import Bernoulli, Constant, Distribution, Normal, ShiftedNormal, Sign, Ternary

__all__ = ["Moments", "dual_for", "Dual", "ReluDual", "ErfDual", "IdentityDual", "QuadratureDual"]

_TWO_PI = 2.0 * math.pi


class Moments(Distribution):
    """A modulation known only by its first two moments E[u] and E[u²].

    Enough for post-activation modulations u (EE Props. 3-4 use only U₁, U₂). A pre-activation v given
    by moments is assumed non-negative, so that it can be pulled out of a positively homogeneous φ
    (ReLU, identity); other activations need v's distribution.
    """

    def __init__(self, first: float, second: float) -> None:
        if second < first**2 - 1e-12:
            raise DeepensError(f"Moments: expected E[u²] >= E[u]², got {second} < {first}²")
        self._first, self._second = float(first), float(second)

    @property
    def first_moment(self) -> float:
        return self._first

    @property
    def second_moment(self) -> float:
        return self._second

    @property
    def spec(self) -> str:
        return f"moments:{self._first:g},{self._second:g}"

    def __repr__(self) -> str:
        return f"Moments({self._first:g}, {self._second:g})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Moments) and (self._first, self._second) == (other._first, other._second)

    def __hash__(self) -> int:
        return hash(("Moments", self._first, self._second))


def _tensor(a, like: torch.Tensor | None = None) -> torch.Tensor:
    """``a`` as a floating tensor (float64 unless it already is a floating tensor; on ``like``'s device)."""
    if isinstance(a, torch.Tensor):
        t = a if a.is_floating_point() else a.double()
    else:
        t = torch.as_tensor(np.asarray(a, dtype=np.float64))
    if like is not None:
        t = t.to(device=like.device, dtype=like.dtype)
    return t


def _grid(q1, q2, c):
    """Tensors (q1, q2, c) that broadcast together: variances (N1,), (N2,) against a covariance (N1, N2) become
    (N1, 1) and (1, N2); variances already shaped to broadcast (the spatial kernels of
    :mod:`deepens.kernels.analytic`) pass through."""
    c = _tensor(c)
    q1, q2 = _tensor(q1, c), _tensor(q2, c)
    if c.dim() == 2 and q1.dim() == 1 and q2.dim() == 1:
        return q1[:, None], q2[None, :], c
    return q1, q2, c


def _rho(q1, q2, c):
    """Correlation c/√(q1 q2) clamped to [−1, 1] (0 where a variance vanishes), and √q1, √q2 (as shaped)."""
    s1, s2 = torch.sqrt(torch.clamp(q1, min=0.0)), torch.sqrt(torch.clamp(q2, min=0.0))
    r1 = torch.where(s1 > 0, 1.0 / torch.where(s1 > 0, s1, torch.ones_like(s1)), torch.zeros_like(s1))
    r2 = torch.where(s2 > 0, 1.0 / torch.where(s2 > 0, s2, torch.ones_like(s2)), torch.zeros_like(s2))
    rho = (c * r1 * r2).clamp_(-1.0, 1.0)
    # within rounding of ±1 (e.g. x = x′): snap, since arccos turns an error ε into √(2ε)
    eps = 4e-15 if rho.dtype == torch.float64 else 2e-7
    rho.masked_fill_(rho > 1.0 - eps, 1.0)
    rho.masked_fill_(rho < -1.0 + eps, -1.0)
    return rho, s1, s2


def v_rule(dist: Distribution | None, q_max: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for E_v[F(v)] when F is an activation's kernel as a function of v.

    Such kernels have singularities off the real axis at distance ~1/√q from v = 0 (erf's closed form has
    branch points at v = ±i/√(2q)), so Gauss–Hermite converges slowly for large pre-activation variances
    q (2e-3 relative error with 256 nodes at q = 4). Gaussian v uses a composite Gauss–Legendre rule
    (8 nodes per panel) over mean ± 10 std, with panels graded geometrically towards v = 0 from
    0.3/√q_max and at most 2.5 std wide: about 170 nodes and ~1e-10 relative error for q up to 20.
    Discrete distributions are exact.
    """
    if dist is None:
        return np.array([1.0]), np.array([1.0])
    if isinstance(dist, Moments):
        raise DeepensError("v: this activation needs the distribution of the pre-activation modulation, "
                           "not only its moments")
    if isinstance(dist, (Normal, ShiftedNormal)):
        mean, std = float(dist.mean), float(dist.std)
        if std == 0.0:
            return np.array([mean]), np.array([1.0])
        lo, hi = mean - 10.0 * std, mean + 10.0 * std
        points = {lo, hi}
        if lo < 0.0 < hi:
            points.add(0.0)
        g = 0.3 / math.sqrt(max(q_max, 1e-6))
        while g < max(abs(lo), abs(hi)):
            points.update(p for p in (g, -g) if lo < p < hi)
            g *= 2.5
        u = lo + 2.5 * std
        while u < hi:
            points.add(u)
            u += 2.5 * std
        edges = np.array(sorted(points))
        gx, gw = np.polynomial.legendre.leggauss(8)
        half, mid = 0.5 * np.diff(edges), 0.5 * (edges[1:] + edges[:-1])
        x = (half[:, None] * gx[None, :] + mid[:, None]).ravel()
        w = (half[:, None] * gw[None, :]).ravel() * np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(_TWO_PI))
        keep = w > 1e-18 * w.max()
        return x[keep], w[keep]
    return dist.quadrature(64)


def _sign_moments(dist: Distribution | None) -> tuple[float, float, float, float]:
    """(E[|v| 1{v>0}], E[|v| 1{v<0}], E[v²], P(v = 0))."""
    if dist is None:
        return 1.0, 0.0, 1.0, 0.0
    if isinstance(dist, Moments):
        return dist.first_moment, 0.0, dist.second_moment, 0.0  # assumed v >= 0
    if isinstance(dist, (Normal, ShiftedNormal)):
        mean, std = dist.mean, dist.std
        if std == 0:
            return max(mean, 0.0), max(-mean, 0.0), mean * mean, float(mean == 0)
        a = mean / std
        cdf = 0.5 * (1.0 + math.erf(a / math.sqrt(2.0)))
        pdf = math.exp(-0.5 * a * a) / math.sqrt(_TWO_PI)
        pos = mean * cdf + std * pdf
        return pos, pos - mean, dist.second_moment, 0.0
    if isinstance(dist, (Bernoulli, Ternary, Sign, Constant)):
        nodes, weights = dist.quadrature()
        pos = float(np.sum(weights * np.where(nodes > 0, nodes, 0.0)))
        neg = float(np.sum(weights * np.where(nodes < 0, -nodes, 0.0)))
        zero = float(np.sum(weights[nodes == 0]))
        return pos, neg, dist.second_moment, zero
    nodes, weights = dist.quadrature(400)  # smooth enough distributions only
    pos = float(np.sum(weights * np.maximum(nodes, 0)))
    return pos, float(np.sum(weights * np.maximum(-nodes, 0))), dist.second_moment, 0.0


class Dual:
    """The three expectations of one activation, for one member (same v) or two (independent v).

    Arguments broadcast (torch tensors or arrays; results are float tensors on the inputs' device): ``q1`` and
    ``q2`` are the variances of the two points, ``c`` their covariance. Variances (N1,), (N2,) with a
    covariance (N1, N2) are read as a grid; the spatial kernels pass variances already shaped to broadcast.
    """

    name = "dual"

    def same(self, q1, q2, c, v: Distribution | None, *, tdot: bool = True, phiz: bool = True):
        """(Φ, Ṫ, Φz) with v₁ = v₂ = v; ``tdot`` / ``phiz`` False skip those (None in their place)."""
        raise NotImplementedError

    def cross(self, q1, q2, c, v: Distribution | None):
        """(Φ, Ṫ) with v₁, v₂ independent draws of v."""
        raise NotImplementedError


class ReluDual(Dual):
    """Arc-cosine kernels (Cho & Saul 2009) with θ = arccos ρ computed once per call:
    k1 = √(q1q2)/(2π) (sin θ + (π − θ) cos θ), k0 = (π − θ)/(2π); the mirrored terms at −c follow from
    θ(−ρ) = π − θ: k1(−c) = √(q1q2)/(2π) (sin θ − θ cos θ), k0(−ρ) = θ/(2π)."""

    name = "relu"

    @staticmethod
    def _arc(q1, q2, c):
        """(ρ, θ = arccos ρ, sin θ, √q1, √q2); ρ is not used after θ and sin θ are formed."""
        rho, s1, s2 = _rho(q1, q2, c)
        theta = torch.arccos(rho)
        sin = (rho * rho).neg_().add_(1.0).clamp_(min=0.0).sqrt_()
        return rho, theta, sin, s1, s2

    @staticmethod
    def _scaled(t, s1, s2):
        """t · √(q1 q2) / (2π), in place when the shapes allow."""
        out = t * s1 if t.shape != torch.broadcast_shapes(t.shape, s1.shape) else t.mul_(s1)
        out = out * s2 if out.shape != torch.broadcast_shapes(out.shape, s2.shape) else out.mul_(s2)
        return out.div_(_TWO_PI)

    @classmethod
    def k1(cls, q1, q2, c):
        rho, theta, sin, s1, s2 = cls._arc(*_grid(q1, q2, c))
        return cls._scaled(theta.neg_().add_(math.pi).mul_(rho).add_(sin), s1, s2)

    @classmethod
    def k0(cls, q1, q2, c):
        _, theta, _, _, _ = cls._arc(*_grid(q1, q2, c))
        return theta.neg_().add_(math.pi).div_(_TWO_PI)

    def same(self, q1, q2, c, v=None, *, tdot=True, phiz=True):
        q1, q2, c = _grid(q1, q2, c)
        _, _, v2, p0 = _sign_moments(v)
        rho, theta, sin, s1, s2 = self._arc(q1, q2, c)
        angle = theta.neg_().add_(math.pi)  # π − θ
        t = angle * (v2 / _TWO_PI) if tdot else None
        k1 = self._scaled(angle.mul_(rho).add_(sin), s1, s2)  # √(q1q2)/(2π) (sin θ + (π − θ) ρ)
        z = (1.0 - p0) * k1 if phiz else None
        return (k1.mul_(v2) if v2 != 1.0 else k1), t, z

    def cross(self, q1, q2, c, v=None):
        q1, q2, c = _grid(q1, q2, c)
        pos, neg, _, _ = _sign_moments(v)
        aligned, opposed = pos * pos + neg * neg, 2.0 * pos * neg
        rho, theta, sin, s1, s2 = self._arc(q1, q2, c)
        phi = aligned * self._scaled((math.pi - theta) * rho + sin, s1, s2)
        tdot = aligned * (math.pi - theta) / _TWO_PI
        if opposed:
            phi = phi + opposed * self._scaled(sin - theta * rho, s1, s2)
            tdot = tdot - opposed * theta / _TWO_PI
        return phi, tdot


class IdentityDual(Dual):
    name = "identity"

    def same(self, q1, q2, c, v=None, *, tdot=True, phiz=True):
        v2 = 1.0 if v is None else v.second_moment
        c = _tensor(c)
        return v2 * c, torch.full_like(c, v2) if tdot else None, c if phiz else None

    def cross(self, q1, q2, c, v=None):
        v1 = 1.0 if v is None else v.first_moment
        c = _tensor(c)
        return v1 * v1 * c, torch.full_like(c, v1 * v1)


class ErfDual(Dual):
    """φ = erf: closed forms given v₁, v₂ (Williams 1997); averaged over v by its quadrature rule."""

    name = "erf"

    @staticmethod
    def _phi(q1, q2, c, a, b):
        return (2.0 / math.pi) * torch.arcsin(
            torch.clamp(2.0 * a * b * c / torch.sqrt((1.0 + 2.0 * a * a * q1) * (1.0 + 2.0 * b * b * q2)), -1.0, 1.0)
        )

    @staticmethod
    def _det(q1, q2, c, a, b):
        tiny = 1e-300 if c.dtype == torch.float64 else 1e-37
        return torch.clamp((1.0 + 2.0 * a * a * q1) * (1.0 + 2.0 * b * b * q2) - 4.0 * (a * b * c) ** 2, min=tiny)

    def _tdot(self, q1, q2, c, a, b):
        return (4.0 / math.pi) * a * b / torch.sqrt(self._det(q1, q2, c, a, b))

    def same(self, q1, q2, c, v=None, *, tdot=True, phiz=True):
        q1, q2, c = _grid(q1, q2, c)
        nodes, weights = v_rule(v, float(max(q1.max(), q2.max())))
        phi = tdot = phiz = 0.0
        for a, w in zip(nodes.tolist(), weights.tolist(), strict=True):
            det = self._det(q1, q2, c, a, a)
            phi = phi + w * self._phi(q1, q2, c, a, a)
            tdot = tdot + w * (4.0 / math.pi) * a * a / torch.sqrt(det)
            phiz = phiz + w * (4.0 / math.pi) * c / det**1.5
        return phi, tdot, phiz

    def cross(self, q1, q2, c, v=None):
        if v is None or v.is_constant:
            a = 1.0 if v is None else v.first_moment
            g1, g2, gc = _grid(q1, q2, c)
            return self._phi(g1, g2, gc, a, a), self._tdot(g1, g2, gc, a, a)
        # independent draws: E_z[φ̄(z) φ̄(z′)] with the v-averaged activation φ̄(z) = E_v erf(v z)
        return _ERF_MEHLER.cross(q1, q2, c, v)


def _hermite(x: np.ndarray, terms: int) -> np.ndarray:
    """Normalised probabilists' Hermite polynomials He_n(x)/√(n!) for n < terms, shape (terms, len(x))."""
    h = np.zeros((terms, x.size))
    h[0] = 1.0
    if terms > 1:
        h[1] = x
    for n in range(1, terms - 1):
        h[n + 1] = (x * h[n] - math.sqrt(n) * h[n - 1]) / math.sqrt(n + 1)
    return h


_CHUNK = 2**22  # activation values evaluated at once by the quadrature duals


def _contract(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_v a[..., v] b[..., v] over the broadcast of the leading axes, as one einsum: axes where only one
    operand varies become the rows / columns of a matrix product (no broadcast copy of size grid × V)."""
    r = a.dim() - 1
    letters = "abcdefghijklmnopqrstuvwxy"[:r]
    sub_a = "".join(L for L, n in zip(letters, a.shape[:-1], strict=True) if n > 1)
    sub_b = "".join(L for L, n in zip(letters, b.shape[:-1], strict=True) if n > 1)
    out = "".join(L for L, n, m in zip(letters, a.shape[:-1], b.shape[:-1], strict=True) if max(n, m) > 1)
    shape = [max(n, m) for n, m in zip(a.shape[:-1], b.shape[:-1], strict=True)]
    value = torch.einsum(f"{sub_a}z,{sub_b}z->{out}", _squeeze(a), _squeeze(b))
    return value.reshape(shape)


def _squeeze(a: torch.Tensor) -> torch.Tensor:
    """Drop the size-1 leading axes of ``a`` (keeping its last axis)."""
    return a.reshape([n for n in a.shape[:-1] if n > 1] + [a.shape[-1]])


class QuadratureDual(Dual):
    """Any elementwise activation: Hermite coefficients by Gauss–Hermite quadrature + Mehler's formula.

    E[f(z) g(z′)] = Σ_n f_n(q1) g_n(q2) ρⁿ, with f_n(q) the coefficients of f(√q ξ) in normalised Hermite
    polynomials: the coefficients are computed once per point (per input and pixel, the broadcast shapes of
    ``q1`` and ``q2``) and the series is summed by Horner's rule over the broadcast grid, so the cost is
    O(terms) per kernel entry. Entries with identical points (ρ = 1, q1 = q2) use direct 1-D quadrature.

    ``terms`` Hermite terms (96) and ``nodes`` quadrature nodes (200) give ~1e-9 relative accuracy for
    tanh at unit variance; accuracy degrades for very large pre-activation variances (a saturating φ
    becomes step-like), to ~1e-4 near ρ = 1 at variance 8.
    """

    name = "quadrature"

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str = "quadrature",
                 terms: int = 96, nodes: int = 200) -> None:
        self.fn = fn
        self.name = name
        self.terms = terms
        x, w = np.polynomial.hermite_e.hermegauss(nodes)
        self.xi = torch.from_numpy(x)
        self.w = torch.from_numpy(w / math.sqrt(_TWO_PI))
        self.h = torch.from_numpy(_hermite(x, terms)) * self.w  # weighted: coefficient_n = h[n] · f(ξ)

    def _values(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            t = z.detach().requires_grad_(True)
            y = self.fn(t)
            (g,) = torch.autograd.grad(y.sum(), t)
        return y.detach(), g

    def _coefficients(self, q: torch.Tensor, vn: torch.Tensor):
        """Per point (shape of q) and v node m: coefficients of φ(v√q ξ), v φ′(v√q ξ), √q ξ φ′(v√q ξ),
        each of shape q.shape + (V, T); evaluated over chunks of points so the (points, V, K) grid of
        activation values stays under ~32 MiB."""
        xi, ht = self.xi.to(q), self.h.T.to(q)  # (K,), (K, T)
        flat = q.reshape(-1)
        step = max(1, _CHUNK // (vn.numel() * xi.numel()))
        parts = []
        for start in range(0, flat.numel(), step):
            s = torch.sqrt(torch.clamp(flat[start:start + step], min=0.0))[:, None, None]
            z = vn[:, None] * s * xi  # (n, V, K)
            f, df = self._values(z)
            parts.append((f @ ht, (vn[:, None] * df) @ ht, (s * xi * df) @ ht))
        shape = tuple(q.shape) + (vn.numel(), ht.shape[1])
        return tuple(torch.cat(column).reshape(shape) for column in zip(*parts, strict=True))

    def _direct(self, q: torch.Tensor, v: Distribution | None, same: bool):
        """Exact (1-D quadrature) values at identical points x = x′ with variance q (any shape)."""
        xi = self.xi.to(q)
        vn, vw = (torch.from_numpy(a).to(q) for a in v_rule(v, float(q.max()) if q.numel() else 1.0))
        flat = q.reshape(-1)
        step = max(1, _CHUNK // (vn.numel() * xi.numel()))
        parts = [self._direct_chunk(flat[i:i + step], vn, vw, same) for i in range(0, flat.numel(), step)]
        return tuple(torch.cat(column).reshape(q.shape) for column in zip(*parts, strict=True))

    def _direct_chunk(self, q: torch.Tensor, vn: torch.Tensor, vw: torch.Tensor, same: bool):
        xi, wk = self.xi.to(q), self.w.to(q)
        s = torch.sqrt(torch.clamp(q, min=0.0))
        z = vn[:, None] * s[..., None, None] * xi  # (..., V, K)
        f, df = self._values(z)
        g = vn[:, None] * df
        if same:  # E_v E_ξ[...]
            zz = (s[..., None, None] * xi) ** 2
            return tuple(((a * vw[:, None]).sum(-2) * wk).sum(-1) for a in (f * f, g * g, zz * df * df))
        fm, gm = (f * vw[:, None]).sum(-2), (g * vw[:, None]).sum(-2)  # E_v inside, squared over ξ
        return (fm * fm * wk).sum(-1), (gm * gm * wk).sum(-1)

    def _series(self, coef1, coef2, rho, weights, same: bool) -> torch.Tensor:
        """Σ_n ρⁿ M_n with M_n = Σ_m w_m f_n(·, m) g_n(·, m) (same member: one v for both points) or
        (Σ_m w_m f_n(·, m)) (Σ_m w_m g_n(·, m)) (two members: independent v); Horner's rule over n."""
        if same and weights.numel() > 1:
            left = coef1 * weights[:, None]

            def term(n):
                return _contract(left[..., n], coef2[..., n])
        else:
            m1 = (coef1 * weights[:, None]).sum(-2)  # (..., T)
            m2 = (coef2 * weights[:, None]).sum(-2)

            def term(n):
                return m1[..., n] * m2[..., n]
        out = term(self.terms - 1) + torch.zeros_like(rho)
        for n in range(self.terms - 2, -1, -1):
            out = out * rho + term(n)
        return out

    def _matrix(self, q1, q2, c, v, same, tdot=True, phiz=True):
        q1, q2, c = _grid(q1, q2, c)
        rho = _rho(q1, q2, c)[0]
        q_max = float(max(q1.max(), q2.max())) if q1.numel() and q2.numel() else 1.0
        vn, vw = (torch.from_numpy(a).to(c) for a in v_rule(v, q_max))
        a1, b1, c1 = self._coefficients(q1, vn)
        a2, b2, c2 = (a1, b1, c1) if q2 is q1 else self._coefficients(q2, vn)
        results = [self._series(a1, a2, rho, vw, same), self._series(b1, b2, rho, vw, same) if tdot else None]
        if same:
            results.append(self._series(c1, c2, rho, vw, same) if phiz else None)
        tol = 1e-13 if c.dtype == torch.float64 else 1e-6
        identical = (rho >= 1.0 - tol) & torch.isclose(q1, q2, rtol=1e-12 if c.dtype == torch.float64 else 1e-6,
                                                          atol=0.0)
        if bool(identical.any()):  # x = x′: the truncated series is least accurate there; direct quadrature
            exact = self._direct(q1, v, same)  # depends on q1 = q2 only: broadcasts
            results = [None if r is None else torch.where(identical, e, r) for r, e in zip(results, exact, strict=True)]
        return tuple(results)

    def same(self, q1, q2, c, v=None, *, tdot=True, phiz=True):
        return self._matrix(q1, q2, c, v, True, tdot, phiz)

    def cross(self, q1, q2, c, v=None):
        return self._matrix(q1, q2, c, v, False)


_ERF_MEHLER = QuadratureDual(torch.erf, "erf")


def dual_for(activation: str | Callable[[torch.Tensor], torch.Tensor]) -> Dual:
    """The dual of an activation given by name (relu, erf, identity in closed form; tanh, gelu, sigmoid,
    silu, softplus, elu, leaky_relu by quadrature) or by an elementwise torch function."""
    if callable(activation) and not isinstance(activation, str):
        return QuadratureDual(activation, getattr(activation, "__name__", "custom"))
    name = str(activation).lower()
    if name == "relu":
        return ReluDual()
    if name == "erf":
        return ErfDual()
    if name in ("identity", "linear"):
        return IdentityDual()
    if name in ACTIVATIONS:
        module = ACTIVATIONS[name]()
        return QuadratureDual(module, name)
    raise DeepensError(f"activation: expected one of {', '.join(ACTIVATIONS)} or a callable, got {activation!r}")
