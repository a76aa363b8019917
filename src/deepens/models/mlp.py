"""The fully connected reference network (EE Eq. 15, App. B.1 Eq. 21 without modulations)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ..errors import check_int, check_widths
from ..layers.activations import default_gain, make_activation
from ..layers.parameterized import Linear

__all__ = ["MLP"]


class MLP(nn.Sequential):
    """A multilayer perceptron ``in_features → widths... → out_features``.

    Hidden layers are dense + activation (named ``fc1``, ``act1``, ...); the readout is a dense layer
    named ``readout``. Weights: ``weight_std`` σ_w for hidden layers (default: the activation's gain,
    √2 for ReLU), ``readout_std`` for the readout; biases (``bias=True``) with ``bias_std`` /
    ``readout_bias_std`` (default: ``bias_std``). ``parameterization="ntk"`` draws every parameter
    from N(0, 1) and multiplies the forward pass by σ/√fan_in (EE Eq. 15), so that the NTK stays finite as widths grow.
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int],
        out_features: int,
        activation: str = "relu",
        bias: bool = False,
        parameterization: str = "standard",
        *,
        weight_std: float | None = None,
        bias_std: float = 0.0,
        readout_std: float = 1.0,
        readout_bias_std: float | None = None,
    ) -> None:
        in_features = check_int("in_features", in_features, minimum=1)
        out_features = check_int("out_features", out_features, minimum=1)
        widths = check_widths("widths", widths)
        make_activation(activation)  # validates the name
        weight_std = default_gain(activation) if weight_std is None else weight_std
        readout_bias_std = bias_std if readout_bias_std is None else readout_bias_std
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        fan_in = in_features
        for i, width in enumerate(widths, start=1):
            layers[f"fc{i}"] = Linear(
                fan_in, width, bias, parameterization=parameterization, weight_std=weight_std, bias_std=bias_std
            )
            layers[f"act{i}"] = make_activation(activation)
            fan_in = width
        layers["readout"] = Linear(
            fan_in,
            out_features,
            bias,
            parameterization=parameterization,
            weight_std=readout_std,
            bias_std=readout_bias_std,
        )
        super().__init__(layers)
        self.in_features = in_features
        self.widths = tuple(widths)
        self.out_features = out_features
        self.activation = activation
        self.parameterization = parameterization
        self.input_shape: tuple[int | None, ...] = (in_features,)

    def reset_parameters(self) -> None:
        for module in self:
            if isinstance(module, Linear):
                module.reset_parameters()
