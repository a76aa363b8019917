"""Collegial ensembles (Littwin et al., CE): m narrow networks trained as one model,

    F^e(x) = m^{-1/2} Σ_{j=1}^m F_n(x; θ_j)                                    (CE Eq. 4)

built the efficient way the paper describes: block-diagonal dense layers for fully connected
ensembles (:class:`CollegialMLP`) and grouped convolutions for the ResNeXt bottleneck
(:class:`ResNeXtBottleneck`, whose C groups of width d are C collegial members summed by the last
1×1 convolution). Both are plain ``nn.Module`` s: train several seeds of one at once with
:func:`deepens.vectorize`, and compute their NTK with :func:`deepens.kernels.ensemble_ntk`.

Under NTK parameterization the NTK of F^e is exactly K^e = (1/m) Σ_j K_n(θ_j) (CE Eq. 4, right).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import DeepensError, check_choice, check_int, check_real, check_widths
from ..layers.activations import default_gain, make_activation
from ..layers.blockdiag import BlockDiagonalLinear
from ..layers.parameterized import PARAMETERIZATIONS, Conv2d
from ..models.mlp import MLP
from .graph import seeded

__all__ = ["CollegialMLP", "ResNeXtBottleneck", "ResNeXt29"]


class CollegialMLP(nn.Module):
    """m fully connected networks ``in → widths → out`` summed with m^{-1/2} (CE Eq. 4).

    Every layer is a :class:`~deepens.layers.BlockDiagonalLinear` holding the m members' weights
    (member axis first): the first layer reads the shared input in one batched GEMM, hidden layers are batched
    matmuls, the readout sums the members. Hidden layers use σ_w ``weight_std`` (default: the
    activation's gain, √2 for ReLU as CE Eq. 3), the readout ``readout_std``. Input (B, in), output
    (B, out); :meth:`subnetwork_outputs` gives the m members' own outputs F_n(x; θ_j), (m, B, out).
    ``seed`` makes the initialisation reproducible without touching torch's global RNG.
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int],
        out_features: int,
        multiplicity: int,
        activation: str = "relu",
        bias: bool = False,
        parameterization: str = "standard",
        *,
        weight_std: float | None = None,
        bias_std: float = 0.0,
        readout_std: float = 1.0,
        seed: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        self.widths = tuple(check_widths("widths", widths, allow_empty=False))
        self.multiplicity = check_int("multiplicity", multiplicity, minimum=1)
        self.activation = activation
        self.act = make_activation(activation)
        self.bias = bool(bias)
        self.parameterization = check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        self.weight_std = default_gain(activation) if weight_std is None else check_real("weight_std", weight_std,
                                                                                         low=0.0)
        self.bias_std = check_real("bias_std", bias_std, low=0.0)
        self.readout_std = check_real("readout_std", readout_std, low=0.0)
        m = self.multiplicity
        common = {"parameterization": parameterization, "bias_std": bias_std, "dtype": dtype}
        with seeded(seed):
            fan_in = self.in_features
            layers = []
            for i, width in enumerate(self.widths):
                layers.append(BlockDiagonalLinear(m, fan_in, width, bias, shared_input=i == 0,
                                                  weight_std=self.weight_std, **common))
                fan_in = width
            self.hidden = nn.ModuleList(layers)
            self.readout = BlockDiagonalLinear(m, fan_in, self.out_features, bias, weight_std=readout_std, **common)
        self.input_shape: tuple[int, ...] = (self.in_features,)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for layer in [*self.hidden, self.readout]:
            layer.reset_parameters(generator)

    def subnetwork_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The members' own outputs F_n(x; θ_j), shape (m, B, out)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.in_features:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DeepensError(f"x: expected inputs (B, {self.in_features}), got {got}")
        h = x
        for layer in self.hidden:
            h = self.act(layer(h))
        return self.readout(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """F^e(x) = m^{-1/2} Σ_j F_n(x; θ_j), shape (B, out) (CE Eq. 4)."""
        return self.subnetwork_outputs(x).sum(0) * (1.0 / math.sqrt(self.multiplicity))

    def subnetwork(self, index: int) -> MLP:
        """Member ``index`` as a plain :class:`~deepens.models.MLP` with its weights (same parameterization)."""
        index = check_int("index", index, minimum=0)
        if index >= self.multiplicity:
            raise DeepensError(f"index: expected 0..{self.multiplicity - 1}, got {index}")
        w = self.readout.weight
        net = MLP(self.in_features, list(self.widths), self.out_features, self.activation, self.bias,
                  self.parameterization, weight_std=self.weight_std, bias_std=self.bias_std,
                  readout_std=self.readout_std).to(device=w.device, dtype=w.dtype)
        dense = [m for m in net if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for src, dst in zip([*self.hidden, self.readout], dense, strict=True):
                dst.weight.copy_(src.weight[index].T)
                if src.bias is not None:
                    dst.bias.copy_(src.bias[index, 0])
        return net

    @classmethod
    def from_subnetworks(cls, nets: Sequence[MLP]) -> CollegialMLP:
        """The collegial ensemble of existing :class:`~deepens.models.MLP` s (one architecture), keeping their
        weights."""
        if isinstance(nets, nn.Module) or not isinstance(nets, Sequence) or not nets:
            raise DeepensError("nets: expected a non-empty sequence of deepens MLPs of one architecture")
        first = nets[0]
        for i, net in enumerate(nets):
            if not isinstance(net, MLP):
                raise DeepensError(f"nets[{i}]: expected a deepens MLP, got {type(net).__name__}")
            same = (net.in_features, net.widths, net.out_features, net.activation, net.parameterization)
            if same != (first.in_features, first.widths, first.out_features, first.activation,
                        first.parameterization):
                raise DeepensError(f"nets[{i}]: expected the same architecture and parameterization as nets[0]")
        layers0 = [m for m in first if isinstance(m, nn.Linear)]
        obj = cls(first.in_features, list(first.widths), first.out_features, len(nets), first.activation,
                  layers0[0].bias is not None, first.parameterization, weight_std=layers0[0].weight_std,
                  bias_std=layers0[0].bias_std, readout_std=layers0[-1].weight_std)
        obj.to(device=layers0[0].weight.device, dtype=layers0[0].weight.dtype)
        with torch.no_grad():
            for k, dst in enumerate([*obj.hidden, obj.readout]):
                srcs = [[m for m in net if isinstance(m, nn.Linear)][k] for net in nets]
                dst.weight.copy_(torch.stack([s.weight.T for s in srcs]))
                if dst.bias is not None:
                    dst.bias.copy_(torch.stack([s.bias for s in srcs]).unsqueeze(1))
        return obj

    def extra_repr(self) -> str:
        return (f"multiplicity={self.multiplicity}, in_features={self.in_features}, widths={list(self.widths)}, "
                f"out_features={self.out_features}, parameterization={self.parameterization}")


class ResNeXtBottleneck(nn.Module):
    """The ResNeXt bottleneck block with C groups of width d — a collegial ensemble of C paths.

    1×1 conv (in → C·d) → ReLU → 3×3 grouped conv (C groups, d → d each, ``stride``) → ReLU → 1×1 conv
    (C·d → out), plus the residual path (identity, or a strided 1×1 projection when the shape changes),
    then ReLU when ``post_activation``. The first 1×1 conv is the C members' first layers side by side
    and the last one sums them, so the branch is m^{-1/2} Σ_j F_d(x; θ_j) with m = C (CE Eq. 4) under NTK
    parameterization (its multiplier σ/√(C·d) = C^{-1/2}·σ/√d) and at initialisation under standard
    parameterization. ``norm="batch"`` adds batch norm after every conv as in ResNeXt (the last one acts on
    the sum); ``None`` keeps the block a pure sum of its members, as the NTK analysis needs.
    """

    def __init__(
        self,
        in_channels: int,
        cardinality: int,
        width: int,
        out_channels: int | None = None,
        stride: int = 1,
        *,
        kernel_size: int = 3,
        norm: str | None = "batch",
        parameterization: str = "standard",
        post_activation: bool = True,
        weight_std: float | None = None,
        readout_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.cardinality = check_int("cardinality", cardinality, minimum=1)
        self.width = check_int("width", width, minimum=1)
        self.out_channels = self.in_channels if out_channels is None else check_int("out_channels", out_channels,
                                                                                    minimum=1)
        self.stride = check_int("stride", stride, minimum=1)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        if self.kernel_size % 2 == 0:
            raise DeepensError(f"kernel_size: expected an odd size (same padding), got {kernel_size}")
        if norm not in (None, "batch"):
            raise DeepensError(f"norm: expected 'batch' or None, got {norm!r}")
        self.norm = norm
        self.parameterization = check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        self.post_activation = bool(post_activation)
        gain = default_gain("relu") if weight_std is None else check_real("weight_std", weight_std, low=0.0)
        inner = self.cardinality * self.width
        kw = {"parameterization": parameterization}
        self.conv1 = Conv2d(self.in_channels, inner, 1, weight_std=gain, **kw)
        self.conv2 = Conv2d(inner, inner, self.kernel_size, self.stride, self.kernel_size // 2,
                            groups=self.cardinality, weight_std=gain, **kw)
        self.conv3 = Conv2d(inner, self.out_channels, 1, weight_std=readout_std, **kw)
        batch = norm == "batch"
        self.bn1 = nn.BatchNorm2d(inner) if batch else nn.Identity()
        self.bn2 = nn.BatchNorm2d(inner) if batch else nn.Identity()
        self.bn3 = nn.BatchNorm2d(self.out_channels) if batch else nn.Identity()
        if self.stride != 1 or self.in_channels != self.out_channels:
            self.shortcut = nn.Sequential(
                Conv2d(self.in_channels, self.out_channels, 1, self.stride, weight_std=1.0, **kw),
                nn.BatchNorm2d(self.out_channels) if batch else nn.Identity(),
            )
        else:
            self.shortcut = nn.Identity()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The aggregated transformation m^{-1/2} Σ_j F_d(x; θ_j) without the residual path."""
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        return self.bn3(self.conv3(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shortcut(x) + self.branch(x)
        return F.relu(out) if self.post_activation else out

    def _member_conv3_factor(self, cardinality: int) -> float:
        # under standard parameterization a member's own last conv has init std σ/√d, √C times the block's
        return math.sqrt(cardinality) if self.parameterization == "standard" else 1.0

    def member(self, index: int) -> ResNeXtBottleneck:
        """Path ``index`` as a separate block of cardinality 1 and width d with its weights (and the same
        residual path): ``branch`` of the block = C^{-1/2} Σ_j ``member(j).branch`` (``norm=None`` only)."""
        index = check_int("index", index, minimum=0)
        if index >= self.cardinality:
            raise DeepensError(f"index: expected 0..{self.cardinality - 1}, got {index}")
        if self.norm is not None:
            raise DeepensError("norm: the member decomposition holds without batch norm; build with norm=None")
        d = self.width
        rows = slice(index * d, (index + 1) * d)
        out = ResNeXtBottleneck(self.in_channels, 1, d, self.out_channels, self.stride, kernel_size=self.kernel_size,
                                norm=None, parameterization=self.parameterization,
                                post_activation=self.post_activation, weight_std=self.conv1.weight_std,
                                readout_std=self.conv3.weight_std)
        out.to(device=self.conv1.weight.device, dtype=self.conv1.weight.dtype)
        with torch.no_grad():
            out.conv1.weight.copy_(self.conv1.weight[rows])
            out.conv2.weight.copy_(self.conv2.weight[rows])
            out.conv3.weight.copy_(self.conv3.weight[:, rows] * self._member_conv3_factor(self.cardinality))
            out.shortcut.load_state_dict(self.shortcut.state_dict())
        return out

    @classmethod
    def from_members(cls, blocks: Sequence[ResNeXtBottleneck]) -> ResNeXtBottleneck:
        """The block of cardinality C = len(blocks) made of separate width-d blocks (cardinality 1,
        ``norm=None``), keeping their weights; the residual path is taken from ``blocks[0]``."""
        if isinstance(blocks, nn.Module) or not isinstance(blocks, Sequence) or not blocks:
            raise DeepensError("blocks: expected a non-empty sequence of cardinality-1 ResNeXtBottleneck blocks")
        first = blocks[0]
        key = lambda b: (b.in_channels, b.width, b.out_channels, b.stride, b.kernel_size, b.parameterization,  # noqa: E731
                         b.post_activation)
        for i, b in enumerate(blocks):
            if not isinstance(b, ResNeXtBottleneck) or b.cardinality != 1 or b.norm is not None:
                raise DeepensError(f"blocks[{i}]: expected a ResNeXtBottleneck of cardinality 1 with norm=None")
            if key(b) != key(first):
                raise DeepensError(f"blocks[{i}]: expected the same shape and parameterization as blocks[0]")
        c = len(blocks)
        out = cls(first.in_channels, c, first.width, first.out_channels, first.stride, kernel_size=first.kernel_size,
                  norm=None, parameterization=first.parameterization, post_activation=first.post_activation,
                  weight_std=first.conv1.weight_std, readout_std=first.conv3.weight_std)
        out.to(device=first.conv1.weight.device, dtype=first.conv1.weight.dtype)
        with torch.no_grad():
            out.conv1.weight.copy_(torch.cat([b.conv1.weight for b in blocks]))
            out.conv2.weight.copy_(torch.cat([b.conv2.weight for b in blocks]))
            out.conv3.weight.copy_(torch.cat([b.conv3.weight for b in blocks], dim=1) / out._member_conv3_factor(c))
            out.shortcut.load_state_dict(first.shortcut.state_dict())
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels} → {self.cardinality}×{self.width}d → {self.out_channels}, stride={self.stride}, "
                f"norm={self.norm}, parameterization={self.parameterization}")


class ResNeXt29(nn.Module):
    """The CIFAR ResNeXt-29 of Xie et al. (the CE paper's §4.2 baseline family), "C×dd" notation.

    3×3 stem conv (in → 64) + BN + ReLU; three stages of ``blocks`` :class:`ResNeXtBottleneck` s with
    C groups of width d·2^k and 256·2^k output channels (k = 0, 1, 2; the first block of stages 2 and 3
    has stride 2 in its grouped conv and a 1×1 projection shortcut); global average pooling; a dense
    classifier with bias. ``ResNeXt29(1, 128)`` is the paper's 1×128d ResNet-29 baseline (13.8M
    parameters, 4.19 GFLOPs at 32×32), ``ResNeXt29(37, 10)`` its primal optimum (13.7M).
    """

    def __init__(
        self,
        cardinality: int,
        width: int,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        blocks: int = 3,
        stem_channels: int = 64,
        norm: str | None = "batch",
        parameterization: str = "standard",
    ) -> None:
        super().__init__()
        self.cardinality = check_int("cardinality", cardinality, minimum=1)
        self.width = check_int("width", width, minimum=1)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.blocks = check_int("blocks", blocks, minimum=1)
        stem_channels = check_int("stem_channels", stem_channels, minimum=1)
        gain = default_gain("relu")
        self.stem = nn.Sequential(
            Conv2d(check_int("in_channels", in_channels, minimum=1), stem_channels, 3, 1, 1,
                   parameterization=parameterization, weight_std=gain),
            nn.BatchNorm2d(stem_channels) if norm == "batch" else nn.Identity(),
            nn.ReLU(),
        )
        stages = []
        channels = stem_channels
        for k in range(3):
            out = 256 * 2**k
            layer = []
            for b in range(self.blocks):
                stride = 2 if k > 0 and b == 0 else 1
                layer.append(ResNeXtBottleneck(channels, self.cardinality, self.width * 2**k, out, stride,
                                               norm=norm, parameterization=parameterization))
                channels = out
            stages.append(nn.Sequential(*layer))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, self.num_classes)
        self.input_shape = (in_channels, None, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.stages(self.stem(x))), 1))

    def extra_repr(self) -> str:
        return f"{self.cardinality}×{self.width}d, classes={self.num_classes}"
