"""Distributions of modulations and dropout masks (EE Eq. 1, App. B.1 Eqs. 22-23).

Every distribution exposes its first two moments (``first_moment`` = E[u], ``second_moment`` =
E[u²]), which is all the infinite-width recursions of EE Props. 3-4 need for post-activation
modulations, and a quadrature rule (nodes and weights) for expectations over pre-activation
modulations. Sampling takes an explicit ``torch.Generator`` so every draw is reproducible.

The text form (``spec``) is the syntax used everywhere in the CLI::

    normal:MEAN,STD   shifted-normal:P   bernoulli:KEEP[,scaled]
    ternary:P_MINUS,P_ZERO,P_PLUS   sign   constant:VALUE
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DeepensError, check_real

__all__ = [
    "Distribution",
    "Normal",
    "ShiftedNormal",
    "Bernoulli",
    "Ternary",
    "Sign",
    "Constant",
    "parse_distribution",
]


def _fmt(x: float) -> str:
    return f"{x:g}" if float(x) == float(f"{x:g}") else repr(float(x))


class Distribution:
    """Base class: a real distribution of modulation values with known first two moments."""

    @property
    def first_moment(self) -> float:  # E[u]
        raise NotImplementedError

    @property
    def second_moment(self) -> float:  # E[u²]
        raise NotImplementedError

    @property
    def variance(self) -> float:
        return max(self.second_moment - self.first_moment**2, 0.0)

    @property
    def is_constant(self) -> bool:
        return self.variance == 0.0

    @property
    def spec(self) -> str:
        """The CLI text form; ``parse_distribution(d.spec) == d``."""
        raise NotImplementedError

    def _sample(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def sample(
        self,
        shape: tuple[int, ...] | list[int],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw i.i.d. values of the given shape (on the CPU, in float64, then cast to ``dtype``)."""
        shape = tuple(int(s) for s in shape)
        return self._sample(shape, generator).to(dtype)

    def quadrature(self, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
        """Nodes and weights (float64, weights sum to 1) with E[g(u)] ≈ Σ w_k g(x_k).

        Exact for discrete distributions; Gauss–Hermite with ``n`` nodes for Gaussians.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class Normal(Distribution):
    """Gaussian N(mean, std²)."""

    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", check_real("Normal.mean", self.mean))
        object.__setattr__(self, "std", check_real("Normal.std", self.std, low=0.0))

    @property
    def first_moment(self) -> float:
        return self.mean

    @property
    def second_moment(self) -> float:
        return self.mean**2 + self.std**2

    @property
    def spec(self) -> str:
        return f"normal:{_fmt(self.mean)},{_fmt(self.std)}"

    def _sample(self, shape, generator):
        return self.mean + self.std * torch.randn(shape, generator=generator, dtype=torch.float64)

    def quadrature(self, n: int = 40):
        if self.std == 0.0:
            return np.array([self.mean]), np.array([1.0])
        x, w = np.polynomial.hermite_e.hermegauss(n)
        return self.mean + self.std * x, w / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class ShiftedNormal(Distribution):
    """N(p, 1 − p²) for p ∈ [0, 1] (EE §5, Fig. 2): p = 0 is N(0, 1), p = 1 is the constant 1.

    Its second moment is 1 for every p, so the shift moves weight from the variance to the mean and
    drives the transition from the independent to the collective regime (near p ≈ 0.6 in EE Fig. 2).
    """

    p: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", check_real("ShiftedNormal.p", self.p, low=0.0, high=1.0))

    @property
    def mean(self) -> float:
        return self.p

    @property
    def std(self) -> float:
        return math.sqrt(max(1.0 - self.p * self.p, 0.0))

    def as_normal(self) -> Normal:
        return Normal(self.mean, self.std)

    @property
    def first_moment(self) -> float:
        return self.p

    @property
    def second_moment(self) -> float:
        return self.p**2 + self.std**2

    @property
    def spec(self) -> str:
        return f"shifted-normal:{_fmt(self.p)}"

    def _sample(self, shape, generator):
        return self.as_normal()._sample(shape, generator)

    def quadrature(self, n: int = 40):
        return self.as_normal().quadrature(n)


@dataclass(frozen=True)
class Bernoulli(Distribution):
    """0/1 dropout masks kept with probability ``keep``; with ``scale=True`` the value kept is 1/keep."""

    keep: float = 0.5
    scale: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "keep", check_real("Bernoulli.keep", self.keep, low=0.0, high=1.0, low_open=True)
        )
        object.__setattr__(self, "scale", bool(self.scale))

    @property
    def _value(self) -> float:
        return 1.0 / self.keep if self.scale else 1.0

    @property
    def first_moment(self) -> float:
        return self.keep * self._value

    @property
    def second_moment(self) -> float:
        return self.keep * self._value**2

    @property
    def spec(self) -> str:
        return f"bernoulli:{_fmt(self.keep)}" + (",scaled" if self.scale else "")

    def _sample(self, shape, generator):
        r = torch.rand(shape, generator=generator, dtype=torch.float64)
        return (r < self.keep).to(torch.float64) * self._value

    def quadrature(self, n: int = 40):
        if self.keep == 1.0:
            return np.array([self._value]), np.array([1.0])
        return np.array([0.0, self._value]), np.array([1.0 - self.keep, self.keep])


@dataclass(frozen=True)
class Ternary(Distribution):
    """Masks in {−1, 0, +1} with probabilities (p_minus, p_zero, p_plus); symmetric when p_minus = p_plus."""

    p_minus: float = 0.25
    p_zero: float = 0.5
    p_plus: float = 0.25

    def __post_init__(self) -> None:
        for name in ("p_minus", "p_zero", "p_plus"):
            object.__setattr__(
                self, name, check_real(f"Ternary.{name}", getattr(self, name), low=0.0, high=1.0)
            )
        total = self.p_minus + self.p_zero + self.p_plus
        if abs(total - 1.0) > 1e-9:
            raise DeepensError(
                f"Ternary: expected p_minus + p_zero + p_plus = 1, got {total:g} "
                f"({self.p_minus:g} + {self.p_zero:g} + {self.p_plus:g})"
            )

    @property
    def first_moment(self) -> float:
        return self.p_plus - self.p_minus

    @property
    def second_moment(self) -> float:
        return self.p_plus + self.p_minus

    @property
    def spec(self) -> str:
        return f"ternary:{_fmt(self.p_minus)},{_fmt(self.p_zero)},{_fmt(self.p_plus)}"

    def _sample(self, shape, generator):
        r = torch.rand(shape, generator=generator, dtype=torch.float64)
        out = torch.zeros(shape, dtype=torch.float64)
        out = torch.where(r < self.p_minus, -1.0, out)
        return torch.where(r >= 1.0 - self.p_plus, 1.0, out) if self.p_plus > 0 else out

    def quadrature(self, n: int = 40):
        return np.array([-1.0, 0.0, 1.0]), np.array([self.p_minus, self.p_zero, self.p_plus])


@dataclass(frozen=True)
class Sign(Distribution):
    """Random signs ±1 with probability 1/2 each (Rademacher)."""

    @property
    def first_moment(self) -> float:
        return 0.0

    @property
    def second_moment(self) -> float:
        return 1.0

    @property
    def spec(self) -> str:
        return "sign"

    def _sample(self, shape, generator):
        r = torch.rand(shape, generator=generator, dtype=torch.float64)
        return torch.where(r < 0.5, -1.0, 1.0).to(torch.float64)

    def quadrature(self, n: int = 40):
        return np.array([-1.0, 1.0]), np.array([0.5, 0.5])


@dataclass(frozen=True)
class Constant(Distribution):
    """The constant ``value`` (``Constant(1)`` is the same as no modulation)."""

    value: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", check_real("Constant.value", self.value))

    @property
    def first_moment(self) -> float:
        return self.value

    @property
    def second_moment(self) -> float:
        return self.value**2

    @property
    def spec(self) -> str:
        return f"constant:{_fmt(self.value)}"

    def _sample(self, shape, generator):
        return torch.full(shape, self.value, dtype=torch.float64)

    def quadrature(self, n: int = 40):
        return np.array([self.value]), np.array([1.0])


def _numbers(name: str, text: str, count: int, spec: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")] if text else []
    if len(parts) != count:
        raise DeepensError(f"modulation {spec!r}: {name} expects {count} number(s), got {len(parts)}")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise DeepensError(f"modulation {spec!r}: {name} expects numbers, got {text!r}") from None


def parse_distribution(spec: str) -> Distribution:
    """Parse the CLI text form of a distribution, e.g. ``"shifted-normal:0.3"`` or ``"normal:0,1"``."""
    if isinstance(spec, Distribution):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise DeepensError(f"modulation: expected a distribution such as 'shifted-normal:0.3', got {spec!r}")
    text = spec.strip().lower()
    name, _, args = text.partition(":")
    name = name.strip().replace("_", "-")
    if name in ("normal", "gaussian"):
        if not args:
            return Normal()
        mean, std = _numbers(name, args, 2, spec)
        return Normal(mean, std)
    if name in ("shifted-normal", "shifted"):
        (p,) = _numbers(name, args, 1, spec)
        return ShiftedNormal(p)
    if name == "bernoulli":
        parts = [p.strip() for p in args.split(",")] if args else []
        scaled = False
        if parts and parts[-1] in ("scaled", "scale"):
            scaled = True
            parts = parts[:-1]
        (keep,) = _numbers(name, ",".join(parts), 1, spec)
        return Bernoulli(keep, scale=scaled)
    if name == "ternary":
        return Ternary(*_numbers(name, args, 3, spec))
    if name in ("sign", "rademacher"):
        if args:
            raise DeepensError(f"modulation {spec!r}: sign takes no arguments")
        return Sign()
    if name == "constant":
        (value,) = _numbers(name, args, 1, spec)
        return Constant(value)
    raise DeepensError(
        f"modulation {spec!r}: unknown distribution {name!r}; expected one of normal, shifted-normal, "
        "bernoulli, ternary, sign, constant"
    )
