"""The power-laws paper's CIFAR networks: VGG16 and WideResNet with the width knob w (PL §3, App. A).

Both take images (C, H, W) of any size (CIFAR's 32×32 in the paper); their width w scales every layer, so that
the parameter count grows ~w² and the paper's memory splits (networks of width w vs ensembles of narrower ones)
are configurations of one class.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import DeepensError, check_int, check_real

__all__ = ["VGG16", "WideResNet"]

# VGG16's convolutional configuration in units of w ("M": 2×2 max pooling)
_VGG16 = (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M")


def _reset(module: nn.Module) -> None:
    for sub in module.modules():
        if sub is not module and callable(getattr(sub, "reset_parameters", None)):
            sub.reset_parameters()


class VGG16(nn.Module):
    """VGG16 as the power-laws paper uses it (PL App. A): 13 3×3 convolutions with [w, 2w, 4w, 8w] filters
    (two blocks of w and 2w, three of 4w, two of 8w), each followed by batch norm (``batch_norm``) and ReLU, five
    2×2 max poolings, then fully connected layers of 8w neurons (ReLU, ``dropout``) and the classifier.

    At w = 64 on CIFAR-100 it has 15.3M parameters (the paper's standard budget). The feature map after the fifth
    pooling is averaged to 1×1 (an identity at 32×32), so any image size works. PyTorch's default initialisation.
    """

    def __init__(self, num_classes: int = 100, width: int = 64, in_channels: int = 3, *, batch_norm: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.width = check_int("width", width, minimum=1)
        self.dropout = check_real("dropout", dropout, low=0.0, high=1.0, high_open=True)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in, conv, pool = check_int("in_channels", in_channels, minimum=1), 0, 0
        for item in _VGG16:
            if item == "M":
                pool += 1
                layers[f"pool{pool}"] = nn.MaxPool2d(2, ceil_mode=True)
                continue
            conv += 1
            c_out = item * self.width
            layers[f"conv{conv}"] = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)
            if batch_norm:
                layers[f"bn{conv}"] = nn.BatchNorm2d(c_out)
            layers[f"relu{conv}"] = nn.ReLU()
            c_in = c_out
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        hidden = 8 * self.width
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(c_in, hidden)), ("relu1", nn.ReLU()), ("drop1", nn.Dropout(self.dropout)),
            ("fc2", nn.Linear(hidden, hidden)), ("relu2", nn.ReLU()), ("drop2", nn.Dropout(self.dropout)),
            ("readout", nn.Linear(hidden, self.num_classes)),
        ]))
        self.input_shape = (in_channels, None, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    def reset_parameters(self) -> None:
        _reset(self)

    def extra_repr(self) -> str:
        return f"w={self.width}, classes={self.num_classes}"


class _WideBlock(nn.Module):
    """Pre-activation wide residual block: BN-ReLU-conv3×3-(dropout)-BN-ReLU-conv3×3, with a 1×1 projection
    shortcut from the activated input when the shape changes (Zagoruyko & Komodakis 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu1(self.bn1(x))
        y = self.conv2(self.drop(self.relu2(self.bn2(self.conv1(a)))))
        return y + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(nn.Module):
    """WideResNet-depth as the power-laws paper writes it (PL App. A): a 3×3 stem of 16 filters, three groups of
    (depth − 4)/6 pre-activation blocks with [w, 2w, 4w] filters (strides 1, 2, 2), BN-ReLU, global average
    pooling and a classifier on 4w features. w = 160 is WRN-28-10: 36,536,884 parameters on CIFAR-100 in this
    usual form (Zagoruyko & Komodakis' architecture; 1×1 projection shortcuts only where the shape changes), where
    the paper states 36.8M — the ≈0.26M difference is not BN running statistics (17,977 values) nor biases in the
    convolutions (10,096 values); the paper gives no layer list to resolve it. WRN-16-4 on
    CIFAR-10 has 2,748,890 (2.7M, as usually quoted).
    """

    def __init__(self, depth: int = 28, width: int = 160, num_classes: int = 100, in_channels: int = 3, *,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.depth = check_int("depth", depth, minimum=10)
        if (self.depth - 4) % 6:
            raise DeepensError(f"depth: expected 6n + 4 (10, 16, 22, 28, 40, ...), got {depth}")
        self.width = check_int("width", width, minimum=1)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.dropout = check_real("dropout", dropout, low=0.0, high=1.0, high_open=True)
        blocks = (self.depth - 4) // 6
        self.stem = nn.Conv2d(check_int("in_channels", in_channels, minimum=1), 16, 3, 1, 1, bias=False)
        groups, c_in = [], 16
        for g, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2)), start=1):
            c_out = mult * self.width
            group = [_WideBlock(c_in if b == 0 else c_out, c_out, stride if b == 0 else 1, self.dropout)
                     for b in range(blocks)]
            groups.append((f"group{g}", nn.Sequential(*group)))
            c_in = c_out
        self.groups = nn.Sequential(OrderedDict(groups))
        self.bn = nn.BatchNorm2d(c_in)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.readout = nn.Linear(c_in, self.num_classes)
        self.input_shape = (in_channels, None, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.groups(self.stem(x))))
        return self.readout(torch.flatten(self.pool(y), 1))

    def reset_parameters(self) -> None:
        _reset(self)

    def extra_repr(self) -> str:
        return f"depth={self.depth}, w={self.width}, classes={self.num_classes}"
