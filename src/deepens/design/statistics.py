"""NTK statistics over random initialisations (CE Eqs. 5, 9, 11; Algorithm 1's Monte Carlo step).

For a member network of width n, T independent NTK-parameterized draws θ_t give empirical NTKs
K_n(θ_t) on a few inputs (CE §2: the empirical NTK of :func:`deepens.kernels.ensemble_ntk`). All draws
of a chunk run as the members of one vectorized deep ensemble, so one forward and one backward pass
per input give every draw's kernel (the structured layer-wise NTK for dense networks, member-summed
Jacobians for convolutions); chunks bound the memory.

From the draws: the Neural Mean Kernel E[K_n] (CE Eq. 5), Var(K_n), the normalised second moment
E[K²]/E[K]² = 1 + Var/E² (Proposition 1's quantity), and the collegial ensemble's kernel
K^e = (1/m) Σ_j K_n(θ_j) with Var(K^e) = Var(K_n)/m for independent members (CE Eq. 11).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..ensembles.deep import DeepEnsemble
from ..errors import DeepensError, check_choice, check_int, check_real
from ..kernels.empirical import ensemble_ntk
from .families import Family

__all__ = ["NTKStatistics", "ntk_draws", "ntk_statistics", "ENTRIES"]

ENTRIES = ("diagonal", "off-diagonal")


def _check_ntk(net: torch.nn.Module) -> None:
    for module in net.modules():
        par = getattr(module, "parameterization", None)
        if par is not None and par != "ntk":
            raise DeepensError("family: NTK statistics need members under NTK parameterization (CE Eq. 3)")


def ntk_draws(
    family: Family,
    width: int,
    *,
    draws: int = 1000,
    inputs: torch.Tensor | None = None,
    seed: int = 0,
    max_bytes: float = 256 * 2**20,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The empirical NTKs K_n(θ_t)(x_a, x_b) of ``draws`` independent initialisations, (T, N, N).

    ``inputs`` (N, ...) default to two seeded Gaussian inputs. Every parameter is redrawn from N(0, 1)
    (NTK parameterization) by a generator seeded from ``seed`` and the width, so the same arguments
    give the same numbers.
    """
    width = check_int("width", width, minimum=1)
    draws = check_int("draws", draws, minimum=2)
    check_real("max_bytes", max_bytes, low=0.0, low_open=True)
    x = family.default_inputs(2, seed, dtype) if inputs is None else inputs.to(dtype)
    if x.dim() < 2 or tuple(x.shape[1:]) != family.input_shape():
        raise DeepensError(f"inputs: expected shape (N, {', '.join(map(str, family.input_shape()))}), "
                           f"got {tuple(x.shape)}")
    net = family.member_network(width).to(dtype)
    _check_ntk(net)
    per_draw = sum(p.numel() for p in net.parameters())
    n = x.shape[0]
    chunk = int(max(1, min(draws, max_bytes // (8 * n * per_draw + 1))))
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + width)
    ens = DeepEnsemble.from_modules([net] * chunk)  # stacked copies: every parameter is redrawn below
    out = torch.empty((draws, n, n), dtype=dtype)
    done = 0
    while done < draws:
        k = min(chunk, draws - done)
        if k != ens.members:
            ens = ens.first(k)
        with torch.no_grad():
            for p in ens.parameters():
                # float32 normal draws (4× faster than float64 ones) cast to the working precision
                p.copy_(torch.randn(p.shape, generator=gen))
        out[done:done + k] = ensemble_ntk(ens, x).individual
        done += k
    return out


@dataclass
class NTKStatistics:
    """Moments of the empirical NTK of one member width over T draws, on N inputs.

    ``values`` holds the draws (T, N, N); ``mean`` is the Neural Mean Kernel (CE Eq. 5); ``variance``
    the unbiased Var(K_n) per entry.
    """

    width: int
    values: torch.Tensor

    @property
    def draws(self) -> int:
        return self.values.shape[0]

    @property
    def mean(self) -> np.ndarray:
        return self.values.mean(0).numpy()

    @property
    def variance(self) -> np.ndarray:
        return self.values.var(0, unbiased=True).numpy()

    @property
    def second_moment(self) -> np.ndarray:
        return self.values.pow(2).mean(0).numpy()

    def entry(self, entry: str = "diagonal") -> torch.Tensor:
        """The draws of one kernel entry: K(x₀, x₀) (``diagonal``) or K(x₀, x₁) (``off-diagonal``)."""
        check_choice("entry", entry, ENTRIES)
        if entry == "off-diagonal":
            if self.values.shape[1] < 2:
                raise DeepensError("entry: the off-diagonal entry needs at least two inputs")
            return self.values[:, 0, 1]
        return self.values[:, 0, 0]

    def ratio(self, entry: str = "diagonal") -> float:
        """E[K²]/E[K]² of one entry (Proposition 1's normalised second moment)."""
        k = self.entry(entry)
        return float(k.pow(2).mean() / k.mean() ** 2)

    def log_ratio_stderr(self, entry: str = "diagonal") -> float:
        """Standard error of log(E[K²]/E[K]²) by the delta method on the two sample means:
        Var ≈ (Var(K²)/m₂² − 4 Cov(K², K)/(m₁m₂) + 4 Var(K)/m₁²) / T."""
        k = self.entry(entry).double()
        t = k.shape[0]
        m1, m2 = k.mean(), k.pow(2).mean()
        c = torch.cov(torch.stack([k.pow(2), k]))
        var = (c[0, 0] / m2**2 - 4 * c[0, 1] / (m1 * m2) + 4 * c[1, 1] / m1**2) / t
        return float(torch.sqrt(var.clamp_min(0)))

    def normalised_variance(self, entry: str = "diagonal") -> float:
        """Var(K)/E[K]² = E[K²]/E[K]² − 1 (with the unbiased variance)."""
        k = self.entry(entry)
        return float(k.var(unbiased=True) / k.mean() ** 2)

    def ensemble_kernels(self, m: int) -> torch.Tensor:
        """K^e = (1/m) Σ_j K_n(θ_j) of ⌊T/m⌋ disjoint collegial ensembles of m draws, (⌊T/m⌋, N, N) (CE Eq. 4)."""
        m = check_int("m", m, minimum=1)
        groups = self.draws // m
        if groups < 1:
            raise DeepensError(f"m: expected at most {self.draws} (the number of draws), got {m}")
        return self.values[: groups * m].reshape((groups, m) + tuple(self.values.shape[1:])).mean(1)

    def summary(self, entry: str = "diagonal") -> dict:
        k = self.entry(entry)
        return {"width": self.width, "draws": self.draws, "entry": entry, "mean": float(k.mean()),
                "variance": float(k.var(unbiased=True)), "ratio": self.ratio(entry),
                "log_ratio_stderr": self.log_ratio_stderr(entry)}


def ntk_statistics(
    family: Family,
    width: int,
    *,
    draws: int = 1000,
    inputs: torch.Tensor | None = None,
    seed: int = 0,
    max_bytes: float = 256 * 2**20,
) -> NTKStatistics:
    """Monte Carlo NTK statistics of ``family``'s member of ``width`` (see :func:`ntk_draws`)."""
    values = ntk_draws(family, width, draws=draws, inputs=inputs, seed=seed, max_bytes=max_bytes)
    if not bool(torch.isfinite(values).all()):
        raise DeepensError(f"width {width}: non-finite NTK values; check the inputs")
    if math.isclose(float(values[:, 0, 0].abs().max()), 0.0):
        raise DeepensError(f"width {width}: the NTK diagonal is zero for every draw; check the inputs")
    return NTKStatistics(width, values)
