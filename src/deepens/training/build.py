"""Build the reference network and the ensemble a :class:`TrainConfig` describes."""

from __future__ import annotations

from torch import nn

from ..data.datasets import Dataset
from ..ensembles import BatchEnsemble, DeepEnsemble, Ensemble, LastLayerDropout, MCDropout, ResNeXt29, vectorize
from ..ensembles.graph import seeded
from ..errors import DeepensError
from ..layers.distributions import Distribution
from ..models import MLP, VGG16, ConvNet, WideResNet
from .config import FAMILY_WIDTH, TrainConfig, parse_modulation

__all__ = ["build_reference", "build_ensemble"]


def build_reference(config: TrainConfig, data: Dataset) -> nn.Module:
    """The reference network for ``data``'s input shape and classes (initialised from ``config.seed``)."""
    width = FAMILY_WIDTH[config.model] if config.width is None else config.width
    with seeded(config.seed):
        if config.model == "mlp":
            if len(data.input_shape) != 1:
                raise DeepensError(
                    f"model: an MLP takes vectors, but the data has shape {data.input_shape}; use --flatten"
                )
            widths = [max(1, round(w * width)) for w in config.widths]
            return MLP(data.input_shape[0], widths, data.num_classes, activation=config.activation,
                       bias=config.bias, parameterization=config.parameterization,
                       bias_std=0.1 if config.bias and config.parameterization == "ntk" else 0.0)  # σ_b of NTK param
        if len(data.input_shape) != 3:
            raise DeepensError(f"model: a {config.model} takes images (C, H, W), but the data has shape "
                               f"{data.input_shape}")
        if config.model == "vgg16":
            return VGG16(data.num_classes, int(width), data.input_shape[0])
        if config.model == "wrn":
            return WideResNet(config.depth or 28, int(width), data.num_classes, data.input_shape[0])
        if config.model == "resnext29":
            return ResNeXt29(config.cardinality or 8, int(width), data.num_classes, data.input_shape[0])
        return ConvNet(data.input_shape[0], data.num_classes, width=width, activation=config.activation,
                       parameterization=config.parameterization, pool=config.pool)


def _collegial(config: TrainConfig, data: Dataset, net: MLP) -> nn.Module:
    """One collegial model: ``multiplicity`` copies of the reference MLP summed with m^{-1/2} (CE Eq. 4)."""
    from ..ensembles.collegial import CollegialMLP

    fc = [layer for layer in net if isinstance(layer, nn.Linear)]
    return CollegialMLP(net.in_features, list(net.widths), net.out_features, config.multiplicity, config.activation,
                        config.bias, config.parameterization, weight_std=fc[0].weight_std, bias_std=fc[0].bias_std,
                        readout_std=fc[-1].weight_std, seed=config.seed)


def _mask(config: TrainConfig, default: str) -> Distribution | str:
    spec = parse_modulation(config.modulation)
    if spec is None:
        return default
    if isinstance(spec, dict):
        if set(spec) != {"u"} or spec["u"] is None:
            raise DeepensError(
                f"modulation: a {config.ensemble} ensemble has post-activation masks only; give one distribution "
                "or u=DIST"
            )
        return spec["u"]
    return spec


def _per_layers(dist: Distribution | None, layers: list[int] | None):
    if dist is None or layers is None:
        return dist
    return {int(i): dist for i in layers}


def build_ensemble(config: TrainConfig, data: Dataset) -> Ensemble:
    """The ensemble of ``config.members`` members; every random choice derives from ``config.seed``."""
    net = build_reference(config, data)
    kind, m, seed = config.ensemble, config.members, config.seed
    if kind == "collegial":
        if config.modulation is not None:
            raise DeepensError("modulation: a collegial ensemble has no modulations; drop --modulation")
        return vectorize(_collegial(config, data, net), m, seed=seed)
    if kind in ("deep", "vectorized"):
        if config.modulation is not None:
            raise DeepensError(f"modulation: a {kind} ensemble has no modulations; drop --modulation")
        return DeepEnsemble(net, m, seed=seed) if kind == "deep" else vectorize(net, m, seed=seed)
    if kind == "batch":
        spec = parse_modulation(config.modulation)
        if spec is None:
            u = v = "normal:0,1"
        elif isinstance(spec, dict):
            u, v = spec.get("u"), spec.get("v")
        else:
            u = v = spec
        u = _per_layers(parse_modulation(u) if isinstance(u, str) else u, config.layers)
        v = _per_layers(parse_modulation(v) if isinstance(v, str) else v, config.layers)
        return BatchEnsemble(net, m, u=u, v=v, trainable=config.trainable, modulate_input=config.modulate_input,
                             modulate_output=config.modulate_output, seed=seed)
    if kind == "mc-dropout":
        return MCDropout(net, m, mask=_mask(config, "bernoulli:0.8,scaled"), resample=config.resample,
                         layers=config.layers, seed=seed)
    return LastLayerDropout(net, m, mask=_mask(config, "normal:0,1"), seed=seed)
