"""Building blocks: modulation distributions, parameterized layers and member-aware layers."""

from .activations import Erf, make_activation
from .blockdiag import BlockDiagonalLinear
from .distributions import (
    Bernoulli,
    Constant,
    Distribution,
    Normal,
    ShiftedNormal,
    Sign,
    Ternary,
    parse_distribution,
)
from .members import MemberContext, ModulatedReadout, Modulation, StackedConv, StackedLinear, Tile
from .parameterized import Conv1d, Conv2d, Linear

__all__ = [
    "Distribution",
    "Normal",
    "ShiftedNormal",
    "Bernoulli",
    "Ternary",
    "Sign",
    "Constant",
    "parse_distribution",
    "Erf",
    "make_activation",
    "Linear",
    "Conv1d",
    "Conv2d",
    "MemberContext",
    "StackedLinear",
    "StackedConv",
    "Modulation",
    "ModulatedReadout",
    "Tile",
    "BlockDiagonalLinear",
]
