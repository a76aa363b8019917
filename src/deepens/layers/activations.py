"""Elementwise activations by name, and how the ensemble builders recognise an activation.

The BatchEnsemble builder places a layer's post-activation modulation u right after its activation
(EE Eq. 1: x = u ⊙ φ(v ⊙ z)), so it must know which graph nodes are elementwise activations: the
modules listed in ``ACTIVATION_MODULES`` (or any module with ``is_activation = True``), and the
functions / tensor methods listed in ``ACTIVATION_FUNCTIONS`` / ``ACTIVATION_METHODS``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import DeepensError

__all__ = ["Erf", "make_activation", "ACTIVATIONS", "is_activation_module"]


class Erf(nn.Module):
    """φ(z) = erf(z), whose NNGP and NTK have closed forms (Williams 1997)."""

    is_activation = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(x)


ACTIVATIONS = {
    "relu": nn.ReLU,
    "erf": Erf,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}

ACTIVATION_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Tanhshrink,
    Erf,
)

ACTIVATION_FUNCTIONS = {
    torch.relu,
    torch.tanh,
    torch.sigmoid,
    torch.erf,
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.celu,
    F.gelu,
    F.silu,
    F.mish,
    F.softplus,
    F.softsign,
    F.hardtanh,
    F.hardswish,
    F.hardsigmoid,
    F.tanh,
    F.sigmoid,
}

ACTIVATION_METHODS = {"relu", "tanh", "sigmoid", "erf"}


def is_activation_module(module: nn.Module) -> bool:
    return isinstance(module, ACTIVATION_MODULES) or bool(getattr(module, "is_activation", False))


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (``relu``, ``erf``, ``tanh``, ``gelu``, ``sigmoid``, ...)."""
    if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
        raise DeepensError(f"activation: expected one of {', '.join(ACTIVATIONS)}; got {name!r}")
    return ACTIVATIONS[name.lower()]()


def default_gain(name: str) -> float:
    """The weight std that preserves the signal's second moment through the activation (He/Xavier gain)."""
    name = name.lower()
    table = {"relu": "relu", "tanh": "tanh", "leaky_relu": "leaky_relu", "sigmoid": "sigmoid", "silu": "relu"}
    if name in table:
        return float(nn.init.calculate_gain(table[name]))
    return 1.0
