"""Module families for collegial design: exact counts, fan-ins and the variance exponent.

A family maps a member width n to one member network F_n and a multiplicity m to the collegial
module m^{-1/2} Σ_j F_n(θ_j) (CE Eq. 4). The design search needs, for each n,

* β(n): one member's parameters and β^flop(n) its forward FLOPs per sample (CE Eq. 8, App. C Eq. 15),
  plus whatever the topology holds outside the members (``fixed_*``: a network's stem, projection
  shortcuts and classifier); totals are fixed + m·β(n), affine in m;
* the exponent S(n) of Proposition 1, Var(K_n) ~ e^{α S(n)} − 1 (CE Eq. 9), as a sum of 1/fan_in.

FLOPs follow ``torch.utils.flop_counter`` (2 per multiply-accumulate of dense layers and convolutions;
additions of biases, normalisation and activations are not counted); tests check every closed form
against the counter on the real modules.

Which layers enter S(n) (``terms``):

* ``"fan-in"`` (default) — every layer whose fan-in depends on the member width: for an MLP the layers
  after the first (fan-in n each; the first layer's fan-in is the fixed input size); for the bottleneck
  the 3×3 conv (fan-in k²·n: input channels per group times the kernel area) and the last 1×1 conv
  (fan-in n). For MLPs this is exactly CE Eq. 9's Σ_l 1/n_l over hidden widths.
* ``"all"`` — every layer, including the first (1/in for an MLP, 1/channels for the bottleneck).
* ``"widths"`` — CE Eq. 9 read literally: Σ 1/n_l over the hidden widths (the bottleneck's n = [n, n]
  of CE §4.2 gives 2/n).

α is only meaningful together with the terms it was fitted with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DeepensError, check_choice, check_int
from ..models.mlp import MLP

__all__ = ["FanIn", "Family", "MLPFamily", "BottleneckFamily", "ResNeXt29Family", "TERMS", "family_from_name"]

TERMS = ("fan-in", "all", "widths")


@dataclass(frozen=True)
class FanIn:
    """One layer of a member network: its name, fan-in, and whether the fan-in grows with the width."""

    layer: str
    fan_in: int
    width_dependent: bool


class Family(ABC):
    """A family of collegial modules indexed by the member width n and the multiplicity m."""

    name: str = "family"
    #: the hidden widths of a member of width n, for ``terms="widths"``
    hidden_layers: int = 1

    @abstractmethod
    def member_parameters(self, n: int) -> int:
        """β(n): the parameters of one member of width n."""

    @abstractmethod
    def member_flops(self, n: int) -> int:
        """β^flop(n): one member's forward FLOPs for one sample."""

    def fixed_parameters(self) -> int:
        """Parameters outside the members (0 for a bare block)."""
        return 0

    def fixed_flops(self) -> int:
        """FLOPs outside the members, per sample (0 for a bare block)."""
        return 0

    def parameters(self, m: int, n: int) -> int:
        """Total parameters of the collegial module with m members of width n."""
        return self.fixed_parameters() + m * self.member_parameters(n)

    def flops(self, m: int, n: int) -> int:
        """Total forward FLOPs per sample of the collegial module."""
        return self.fixed_flops() + m * self.member_flops(n)

    def cost(self, m: float, n: int, efficiency: str) -> float:
        """Parameters or FLOPs (``efficiency``) of m members of width n; m may be fractional."""
        if efficiency == "params":
            return self.fixed_parameters() + m * self.member_parameters(n)
        return self.fixed_flops() + m * self.member_flops(n)

    def member_cost(self, n: int, efficiency: str) -> int:
        return self.member_parameters(n) if efficiency == "params" else self.member_flops(n)

    def fixed_cost(self, efficiency: str) -> int:
        return self.fixed_parameters() if efficiency == "params" else self.fixed_flops()

    @abstractmethod
    def fan_ins(self, n: int) -> list[FanIn]:
        """The layers of one member of width n with their fan-ins."""

    def exponent(self, n: int, terms: str = "fan-in") -> float:
        """S(n) of CE Eq. 9 under the chosen ``terms`` (see the module docstring)."""
        check_choice("terms", terms, TERMS)
        n = check_int("n", n, minimum=1)
        if terms == "widths":
            return self.hidden_layers / n
        return sum(1.0 / f.fan_in for f in self.fan_ins(n) if f.width_dependent or terms == "all")

    @abstractmethod
    def build(self, m: int, n: int, **kwargs) -> nn.Module:
        """The collegial module with m members of width n."""

    @abstractmethod
    def member_network(self, n: int) -> nn.Module:
        """One member of width n under NTK parameterization with a scalar output, for NTK statistics."""

    @abstractmethod
    def default_inputs(self, count: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``count`` seeded Gaussian inputs of the member network's input shape."""

    def input_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"block": self.name}


def _gaussian(shape: tuple[int, ...], seed: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


class MLPFamily(Family):
    """Fully connected members in → n → ... → n → out with ``depth`` dense layers (depth − 1 hidden
    layers of width n), no biases unless ``bias``, ReLU (CE Eq. 3; Fig. 3 uses depth 6, in 784, out 10)."""

    name = "mlp"

    def __init__(self, in_features: int = 784, out_features: int = 10, depth: int = 6, bias: bool = False,
                 activation: str = "relu") -> None:
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        self.depth = check_int("depth", depth, minimum=2)
        self.bias = bool(bias)
        self.activation = activation
        self.hidden_layers = self.depth - 1

    def member_parameters(self, n: int) -> int:
        h = self.depth - 1
        weights = self.in_features * n + (h - 1) * n * n + n * self.out_features
        return weights + ((h * n + self.out_features) if self.bias else 0)

    def member_flops(self, n: int) -> int:
        h = self.depth - 1
        return 2 * (self.in_features * n + (h - 1) * n * n + n * self.out_features)

    def fan_ins(self, n: int) -> list[FanIn]:
        out = [FanIn("fc1", self.in_features, False)]
        out += [FanIn(f"fc{i}", n, True) for i in range(2, self.depth)]
        out.append(FanIn("readout", n, True))
        return out

    def build(self, m: int, n: int, **kwargs) -> nn.Module:
        from ..ensembles.collegial import CollegialMLP

        return CollegialMLP(self.in_features, [n] * (self.depth - 1), self.out_features, m, self.activation,
                            self.bias, **kwargs)

    def member_network(self, n: int) -> nn.Module:
        return MLP(self.in_features, [n] * (self.depth - 1), 1, self.activation, self.bias, "ntk",
                   bias_std=0.1 if self.bias else 0.0)

    def default_inputs(self, count: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return _gaussian((count, self.in_features), seed, dtype)

    def input_shape(self) -> tuple[int, ...]:
        return (self.in_features,)

    def describe(self) -> dict:
        return {"block": self.name, "in": self.in_features, "out": self.out_features, "depth": self.depth,
                "bias": self.bias}


class _CentreReadout(nn.Module):
    """A scalar output of a feature map: one channel at the centre position (an NTK "diagonal entry")."""

    def __init__(self, channel: int = 0) -> None:
        super().__init__()
        self.channel = channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return x[:, self.channel, h // 2, w // 2].unsqueeze(-1)


class BottleneckFamily(Family):
    """The ResNet/ResNeXt bottleneck block (CE §4.2, Fig. 5): members are 1×1 conv (channels → n) →
    ReLU → k×k conv (n → n) → ReLU → 1×1 conv (n → channels), summed into the residual path; the block
    with C members of width n is the ResNeXt "C×nd" block. FLOPs at ``spatial`` (H, W), stride 1.

    For NTK statistics a member is the block without batch norm or the final ReLU, read out at output
    channel 0 of the centre position of a (channels, k, k) input — the centre's whole receptive field.
    """

    name = "resnext-bottleneck"
    hidden_layers = 2

    def __init__(self, channels: int = 256, kernel_size: int = 3, spatial: tuple[int, int] = (32, 32)) -> None:
        self.channels = check_int("channels", channels, minimum=1)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        if len(spatial) != 2:
            raise DeepensError(f"spatial: expected (H, W), got {spatial!r}")
        self.spatial = (check_int("spatial[0]", spatial[0], minimum=1), check_int("spatial[1]", spatial[1], minimum=1))

    def member_parameters(self, n: int) -> int:
        k2 = self.kernel_size**2
        return 2 * self.channels * n + k2 * n * n

    def member_flops(self, n: int) -> int:
        return 2 * self.spatial[0] * self.spatial[1] * self.member_parameters(n)

    def fan_ins(self, n: int) -> list[FanIn]:
        return [FanIn("conv1 (1×1)", self.channels, False),
                FanIn(f"conv2 ({self.kernel_size}×{self.kernel_size})", self.kernel_size**2 * n, True),
                FanIn("conv3 (1×1)", n, True)]

    def build(self, m: int, n: int, **kwargs) -> nn.Module:
        from ..ensembles.collegial import ResNeXtBottleneck

        kwargs.setdefault("norm", None)
        return ResNeXtBottleneck(self.channels, m, n, self.channels, kernel_size=self.kernel_size, **kwargs)

    def member_network(self, n: int) -> nn.Module:
        from ..ensembles.collegial import ResNeXtBottleneck

        block = ResNeXtBottleneck(self.channels, 1, n, self.channels, kernel_size=self.kernel_size, norm=None,
                                  parameterization="ntk", post_activation=False)
        return nn.Sequential(block, _CentreReadout())

    def default_inputs(self, count: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return _gaussian((count, self.channels, self.kernel_size, self.kernel_size), seed, dtype)

    def input_shape(self) -> tuple[int, ...]:
        return (self.channels, self.kernel_size, self.kernel_size)

    def describe(self) -> dict:
        return {"block": self.name, "channels": self.channels, "kernel_size": self.kernel_size,
                "spatial": list(self.spatial)}


class ResNeXt29Family(BottleneckFamily):
    """Whole CIFAR ResNeXt-29 networks "C×nd" (:class:`~deepens.ensembles.ResNeXt29`) as the
    topology counted: parameters and FLOPs of the full network (stem, nine blocks at three
    resolutions, projection shortcuts, batch norm, classifier), affine in the cardinality C = m.
    The variance exponent is the first stage's bottleneck block (256 channels, width n), as in CE §4.2.
    """

    name = "resnext29"

    def __init__(self, num_classes: int = 10, image_size: int = 32, in_channels: int = 3, blocks: int = 3,
                 stem_channels: int = 64) -> None:
        super().__init__(256, 3, (image_size, image_size))
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.image_size = check_int("image_size", image_size, minimum=4)
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.blocks = check_int("blocks", blocks, minimum=1)
        self.stem_channels = check_int("stem_channels", stem_channels, minimum=1)

    def _walk(self, n: int, groups: int):
        """(parameters, FLOPs) of the network with ``groups`` groups of base width n (groups may be 0)."""
        hw = self.image_size**2
        stem = 9 * self.in_channels * self.stem_channels
        params = stem + 2 * self.stem_channels
        flops = 2 * stem * hw
        cin = self.stem_channels
        for k in range(3):
            d = n * 2**k
            cout = 256 * 2**k
            for b in range(self.blocks):
                stride = 2 if k > 0 and b == 0 else 1
                hw_out = hw // (stride * stride)
                c1, c2, c3 = cin * groups * d, 9 * d * d * groups, groups * d * cout
                sc = cin * cout if (cin != cout or stride != 1) else 0
                params += c1 + c2 + c3 + sc + 4 * groups * d + 2 * cout + (2 * cout if sc else 0)
                flops += 2 * (c1 * hw + (c2 + c3 + sc) * hw_out)  # conv1 runs before the strided conv
                cin, hw = cout, hw_out
        params += cin * self.num_classes + self.num_classes
        flops += 2 * cin * self.num_classes
        return params, flops

    def fixed_parameters(self) -> int:
        return self._walk(1, 0)[0]

    def fixed_flops(self) -> int:
        return self._walk(1, 0)[1]

    def member_parameters(self, n: int) -> int:
        return self._walk(n, 1)[0] - self.fixed_parameters()

    def member_flops(self, n: int) -> int:
        return self._walk(n, 1)[1] - self.fixed_flops()

    def build(self, m: int, n: int, **kwargs) -> nn.Module:
        from ..ensembles.collegial import ResNeXt29

        return ResNeXt29(m, n, self.num_classes, self.in_channels, blocks=self.blocks,
                         stem_channels=self.stem_channels, **kwargs)

    def describe(self) -> dict:
        return {"block": self.name, "num_classes": self.num_classes, "image_size": self.image_size,
                "in_channels": self.in_channels}


def family_from_name(block: str, *, in_features: int = 784, out_features: int = 10, depth: int = 6,
                     channels: int = 256, image_size: int = 32) -> Family:
    """The family behind the CLI's ``--block`` choice."""
    check_choice("block", block, ("mlp", "resnext-bottleneck", "resnext29"))
    if block == "mlp":
        return MLPFamily(in_features, out_features, depth)
    if block == "resnext-bottleneck":
        return BottleneckFamily(channels, 3, (image_size, image_size))
    return ResNeXt29Family(out_features, image_size)
