"""The EE paper's VGG-like convolutional reference network (EE §5, App. C)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ..errors import DeepensError, check_choice, check_int, check_real
from ..layers.activations import make_activation
from ..layers.parameterized import Conv2d, Linear

__all__ = ["ConvNet", "POOLS"]

POOLS = ("max", "avg")


class ConvNet(nn.Sequential):
    """Four 3×3 convolutions with 64-128-256-512 channels × ``width``, each followed by the activation
    and a max-pooling, then a linear head: no batch norm, no biases, Xavier-normal initialisation
    (EE App. C).

    The first three poolings are 2×2 (``ceil_mode``); the fourth is a global max-pooling, so the head
    sees ``round(512·width)`` features whatever the image size (8×8 digits as well as 32×32 CIFAR).
    Layers are named ``conv1, act1, pool1, ..., conv4, act4, pool4, flatten, readout``.

    ``pool="avg"`` replaces the max-poolings by 2×2 average poolings (floor mode: an odd row or column is
    dropped) and a global average pooling: the variant whose infinite-width kernel has a closed form
    (:meth:`deepens.kernels.Network.from_module`); max pooling has none.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: float = 1.0,
        *,
        channels: Sequence[int] = (64, 128, 256, 512),
        activation: str = "relu",
        parameterization: str = "standard",
        weight_std: float = 1.0,
        init: str = "xavier",
        pool: str = "max",
    ) -> None:
        in_channels = check_int("in_channels", in_channels, minimum=1)
        num_classes = check_int("num_classes", num_classes, minimum=1)
        width = check_real("width", width, low=0.0, low_open=True)
        if isinstance(channels, int) or len(channels) == 0:
            raise DeepensError(f"channels: expected a non-empty sequence of channel counts, got {channels!r}")
        pool = check_choice("pool", pool, POOLS)
        widths = [max(1, round(check_int(f"channels[{i}]", c, minimum=1) * width)) for i, c in enumerate(channels)]
        if parameterization == "ntk":
            init = "normal"
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for i, c_out in enumerate(widths, start=1):
            layers[f"conv{i}"] = Conv2d(
                c_in, c_out, 3, padding=1, parameterization=parameterization, weight_std=weight_std, init=init
            )
            layers[f"act{i}"] = make_activation(activation)
            last = i == len(widths)
            if pool == "max":
                layers[f"pool{i}"] = nn.AdaptiveMaxPool2d(1) if last else nn.MaxPool2d(2, ceil_mode=True)
            else:
                layers[f"pool{i}"] = nn.AdaptiveAvgPool2d(1) if last else nn.AvgPool2d(2)
            c_in = c_out
        layers["flatten"] = nn.Flatten(1)
        layers["readout"] = Linear(
            c_in, num_classes, parameterization=parameterization, weight_std=weight_std, init=init
        )
        super().__init__(layers)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.width = width
        self.channels = tuple(widths)
        self.pool = pool
        self.input_shape: tuple[int | None, ...] = (in_channels, None, None)

    def reset_parameters(self) -> None:
        for module in self:
            if isinstance(module, (Conv2d, Linear)):
                module.reset_parameters()
