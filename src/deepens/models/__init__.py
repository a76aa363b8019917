"""Reference networks: plain ``nn.Module``s that every ensemble kind can be built from."""

from .cifar import VGG16, WideResNet
from .convnet import ConvNet
from .mlp import MLP

__all__ = ["MLP", "ConvNet", "VGG16", "WideResNet"]
