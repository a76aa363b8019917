"""Dense and convolutional layers in standard or NTK parameterization (EE App. A, Eq. 15).

* ``"standard"``: W ~ N(0, σ_w²/fan_in), b ~ N(0, σ_b²); the forward pass is the plain one.
* ``"ntk"``: W ~ N(0, 1), b ~ N(0, 1); the forward pass multiplies W by σ_w/√fan_in and b by σ_b
  (σ_b = 0 makes the bias inert, as in neural-tangents).

Both give the same output distribution at initialisation; they differ in the gradient dynamics
(under "ntk" the NTK has a finite infinite-width limit with a width-independent learning rate).
The multipliers are kept in ``weight_scale`` / ``bias_scale``, which the ensemble layers honour, so a
deepens ensemble of these layers is exactly the ensemble of the reference layers.

``init="xavier"`` replaces the Gaussian fan-in initialisation by Xavier-normal with gain σ_w
(std = σ_w·√(2/(fan_in + fan_out))), the initialisation of the EE paper's ConvNet (App. C).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import DeepensError, check_choice, check_real

__all__ = ["Linear", "Conv1d", "Conv2d", "PARAMETERIZATIONS", "scaled_weight", "scaled_bias"]

PARAMETERIZATIONS = ("standard", "ntk")
INITS = ("normal", "xavier")


def scaled_weight(layer: nn.Module) -> torch.Tensor:
    """The weight a layer uses in its forward pass (σ_w/√fan_in · W under NTK parameterization)."""
    scale = getattr(layer, "weight_scale", 1.0)
    return layer.weight if scale == 1.0 else layer.weight * scale


def scaled_bias(layer: nn.Module) -> torch.Tensor | None:
    """The bias a layer uses in its forward pass (σ_b · b under NTK parameterization), or None."""
    if layer.bias is None:
        return None
    scale = getattr(layer, "bias_scale", 1.0)
    return layer.bias if scale == 1.0 else layer.bias * scale


class _Parameterized:
    """Mixin holding the parameterization, σ_w, σ_b and the resulting forward multipliers."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _setup(self, parameterization: str, weight_std: float, bias_std: float, init: str) -> None:
        self.parameterization = check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        self.weight_std = check_real("weight_std", weight_std, low=0.0)
        self.bias_std = check_real("bias_std", bias_std, low=0.0)
        self.init = check_choice("init", init, INITS)
        if self.parameterization == "ntk" and self.init != "normal":
            raise DeepensError("init: NTK parameterization draws W ~ N(0, 1); expected init='normal'")
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(self.weight)
        self.fan_in = fan_in
        self.fan_out = fan_out
        if self.parameterization == "ntk":
            self.weight_scale = self.weight_std / math.sqrt(fan_in)
            self.bias_scale = self.bias_std
        else:
            self.weight_scale = 1.0
            self.bias_scale = 1.0
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not hasattr(self, "weight_scale"):  # called by the torch constructor before _setup
            return
        with torch.no_grad():
            if self.parameterization == "ntk":
                self.weight.normal_(0.0, 1.0)
                if self.bias is not None:
                    self.bias.normal_(0.0, 1.0)
                return
            if self.init == "xavier":
                nn.init.xavier_normal_(self.weight, gain=self.weight_std)
            else:
                self.weight.normal_(0.0, self.weight_std / math.sqrt(self.fan_in))
            if self.bias is not None:
                self.bias.normal_(0.0, self.bias_std) if self.bias_std > 0 else self.bias.zero_()

    def extra_repr(self) -> str:  # type: ignore[override]
        base = super().extra_repr()  # type: ignore[misc]
        return f"{base}, parameterization={self.parameterization}, weight_std={self.weight_std:g}"


class Linear(_Parameterized, nn.Linear):
    """``nn.Linear`` in standard or NTK parameterization with weight std σ_w and bias std σ_b."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        *,
        parameterization: str = "standard",
        weight_std: float = 1.0,
        bias_std: float = 0.0,
        init: str = "normal",
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._setup(parameterization, weight_std, bias_std, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, scaled_weight(self), scaled_bias(self))


def _parameterized_conv(base: type[nn.Module], name: str, fan_in: str) -> type[nn.Module]:
    """``base`` (nn.Conv1d / nn.Conv2d) in standard or NTK parameterization."""

    class Conv(_Parameterized, base):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            in_channels: int,
            out_channels: int,
            kernel_size: int,
            stride: int = 1,
            padding: int | str = 0,
            bias: bool = False,
            *,
            groups: int = 1,
            dilation: int = 1,
            padding_mode: str = "zeros",
            parameterization: str = "standard",
            weight_std: float = 1.0,
            bias_std: float = 0.0,
            init: str = "normal",
        ) -> None:
            check_choice("padding_mode", padding_mode, ("zeros", "circular"))
            base.__init__(
                self, in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias,
                groups=groups, dilation=dilation, padding_mode=padding_mode,
            )
            self._setup(parameterization, weight_std, bias_std, init)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._conv_forward(x, scaled_weight(self), scaled_bias(self))

    Conv.__name__ = Conv.__qualname__ = name
    Conv.__doc__ = (f"``nn.{name}`` in standard or NTK parameterization (fan_in = {fan_in}); ``padding_mode`` "
                    "``'zeros'`` or ``'circular'``.")
    return Conv


Conv1d = _parameterized_conv(nn.Conv1d, "Conv1d", "in_channels/groups · kernel size")
Conv2d = _parameterized_conv(nn.Conv2d, "Conv2d", "in_channels/groups · k_h · k_w")
