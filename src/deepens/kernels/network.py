"""The analytic description of a network: the layer sequence its infinite-width kernels are computed from.

A :class:`Network` is a list of operations — :class:`Dense`, :class:`Conv`, :class:`Activation` (with an
optional pre-activation modulation v), :class:`Modulate` (a post-activation modulation u or a dropout mask),
:class:`AvgPool`, :class:`GlobalAvgPool`, :class:`Flatten` — read from the very module a user trains by
:meth:`Network.from_module`, or written by hand (:meth:`Network.mlp`). The kernel recursions live in
:mod:`deepens.kernels.analytic`.

Conventions (neural-tangents' ``stax``): the input kernel is x·x′/C over the channels (features) of
each position; a dense or convolutional layer with fan-in n = C·k (k the window size) and weights of variance
σ_w²/n maps the NNGP to σ_w² times the window average plus σ_b². Under the NTK parameterization the NTK
becomes NNGP′ + σ_w²·(window average of the NTK); under the standard parameterization the weight gradient
contributes n times the window average of the input NNGP and a bias 1 (it depends on the real widths, which
the module supplies). PyTorch's default initialisation of ``nn.Linear`` / ``nn.Conv`` (uniform, variance
1/(3n) for weights and biases) is read as σ_w² = 1/3, σ_b² = 1/(3n) in the standard parameterization;
deepens' Xavier initialisation (EE App. C) as σ_w² = σ²·2n/(n + n_out).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.nn import functional as F

from ..errors import DeepensError, check_choice, check_int, check_real
from ..layers.activations import ACTIVATION_FUNCTIONS, ACTIVATION_METHODS, Erf, is_activation_module
from ..layers.distributions import Distribution, parse_distribution
from ..layers.parameterized import PARAMETERIZATIONS

__all__ = [
    "Dense", "Conv", "Activation", "Modulate", "AvgPool", "GlobalAvgPool", "Flatten", "Network",
]


def _tuple(name: str, value, dims: int, minimum: int) -> tuple[int, ...]:
    values = (value,) * dims if isinstance(value, int) else tuple(value)
    if len(values) != dims:
        raise DeepensError(f"{name}: expected {dims} value(s), got {value!r}")
    return tuple(check_int(name, v, minimum=minimum) for v in values)


@dataclass(frozen=True)
class Dense:
    """A dense layer: weights of variance σ_w²/fan_in, biases of variance σ_b² (``bias=False``: none)."""

    weight_std: float = 1.0
    bias_std: float = 0.0
    bias: bool | None = None  # None: present when bias_std > 0
    parameterization: str = "ntk"
    fan_in: int | None = None  # the real fan-in; the standard parameterization's NTK needs it
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight_std", check_real("weight_std", self.weight_std, low=0.0))
        object.__setattr__(self, "bias_std", check_real("bias_std", self.bias_std, low=0.0))
        object.__setattr__(self, "parameterization",
                           check_choice("parameterization", self.parameterization, PARAMETERIZATIONS))
        if self.bias is None:
            object.__setattr__(self, "bias", self.bias_std > 0)
        if self.parameterization == "standard" and self.fan_in is None:
            raise DeepensError(f"fan_in: the standard parameterization's NTK depends on the layer's fan-in; "
                               f"give it for {self.name or 'this layer'}")

    @property
    def bias_variance(self) -> float:
        return self.bias_std**2 if self.bias else 0.0


@dataclass(frozen=True)
class Conv(Dense):
    """A 1-D or 2-D convolution (NCL / NCHW) with stride, dilation and zero or circular padding.

    ``padding`` is one (low, high) pair per spatial axis (an int pads both sides of every axis). The kernel
    of each output pixel pair (p, p′) is the window average Σ_j K(s·p + d·j, s·p′ + d·j) / k over the same
    offsets j in both windows (zero padding: padded pixels have kernel 0; circular: indices wrap).
    """

    kernel_size: tuple[int, ...] = (3, 3)
    stride: tuple[int, ...] | None = None
    padding: tuple[tuple[int, int], ...] | int = 0
    dilation: tuple[int, ...] | None = None
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        super().__post_init__()
        dims = len(self.kernel_size) if not isinstance(self.kernel_size, int) else 2
        object.__setattr__(self, "kernel_size", _tuple("kernel_size", self.kernel_size, dims, 1))
        object.__setattr__(self, "stride", _tuple("stride", 1 if self.stride is None else self.stride, dims, 1))
        object.__setattr__(self, "dilation", _tuple("dilation", 1 if self.dilation is None else self.dilation,
                                                    dims, 1))
        pad = self.padding
        if isinstance(pad, int):
            pad = ((pad, pad),) * dims
        elif all(isinstance(p, int) for p in pad):  # one symmetric padding per axis
            pad = tuple((p, p) for p in pad)
        pad = tuple((check_int("padding", lo, minimum=0), check_int("padding", hi, minimum=0)) for lo, hi in pad)
        if len(pad) != dims:
            raise DeepensError(f"padding: expected one (low, high) pair per spatial axis ({dims}), "
                               f"got {self.padding!r}")
        object.__setattr__(self, "padding", pad)
        object.__setattr__(self, "padding_mode", check_choice("padding_mode", self.padding_mode,
                                                              ("zeros", "circular")))

    @property
    def dims(self) -> int:
        return len(self.kernel_size)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation φ, optionally with a per-member pre-activation modulation v: φ(v ⊙ z)."""

    activation: str | Callable[[torch.Tensor], torch.Tensor] = "relu"
    v: Distribution | None = None
    train_v: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.v, str):
            object.__setattr__(self, "v", parse_distribution(self.v))

    @property
    def label(self) -> str:
        return self.activation if isinstance(self.activation, str) else getattr(
            self.activation, "__name__", type(self.activation).__name__)


@dataclass(frozen=True)
class Modulate:
    """A per-member multiplicative modulation u ⊙ x (EE Eq. 1): trainable (BatchEnsemble) or frozen (MC-dropout
    and last-layer-dropout masks); per channel for feature maps."""

    u: Distribution
    trainable: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.u, str):
            object.__setattr__(self, "u", parse_distribution(self.u))


@dataclass(frozen=True)
class AvgPool:
    """Average pooling over windows (zero padding counted in the average, as ``count_include_pad=True``)."""

    kernel_size: tuple[int, ...] = (2, 2)
    stride: tuple[int, ...] | None = None
    padding: tuple[int, ...] | int = 0
    name: str = ""

    def __post_init__(self) -> None:
        dims = 2 if isinstance(self.kernel_size, int) else len(self.kernel_size)
        object.__setattr__(self, "kernel_size", _tuple("kernel_size", self.kernel_size, dims, 1))
        stride = self.kernel_size if self.stride is None else self.stride
        object.__setattr__(self, "stride", _tuple("stride", stride, dims, 1))
        object.__setattr__(self, "padding", _tuple("padding", self.padding, dims, 0))

    @property
    def dims(self) -> int:
        return len(self.kernel_size)


@dataclass(frozen=True)
class GlobalAvgPool:
    """The mean over all positions of each channel (``AdaptiveAvgPool(1)`` + flatten)."""

    name: str = ""


@dataclass(frozen=True)
class Flatten:
    """Channels × positions → one vector; the next dense layer sees the mean of the same-position kernels."""

    name: str = ""


Op = Dense | Conv | Activation | Modulate | AvgPool | GlobalAvgPool | Flatten


@dataclass
class Network:
    """A network as its analytic layer sequence (see the module docstring).

    ``independent_members``: the members share nothing (a deep ensemble): cross-member kernels vanish and
    every parameter is individual. ``source`` names what the description was read from.
    """

    ops: list = field(default_factory=list)
    independent_members: bool = False
    source: str = ""

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def mlp(
        cls,
        depth: int,
        activation: str | Callable = "relu",
        weight_std: float = 1.0,
        bias_std: float = 0.0,
        readout_std: float = 1.0,
        readout_bias_std: float = 0.0,
        *,
        u: Distribution | str | None = None,
        v: Distribution | str | None = None,
        layers: Sequence[int] | None = None,
        trainable: bool = True,
    ) -> Network:
        """``depth`` identical hidden layers (dense + activation, NTK parameterization) and a dense readout;
        modulations u / v at every hidden layer, or only at the (0-based, negative from the end) indices in
        ``layers``."""
        depth = check_int("depth", depth, minimum=1)
        if layers is not None:
            for i in layers:
                if not -depth <= int(i) < depth:
                    raise DeepensError(f"layers: index {i} out of range for depth {depth}")
        chosen = set(range(depth)) if layers is None else {int(i) % depth for i in layers}
        u = parse_distribution(u) if isinstance(u, str) else u
        v = parse_distribution(v) if isinstance(v, str) else v
        if not (callable(activation) or isinstance(activation, str)):
            raise DeepensError(f"activation: expected a name or a callable, got {activation!r}")
        ops: list = []
        for i in range(depth):
            ops.append(Dense(weight_std, bias_std, name=f"fc{i + 1}"))
            ops.append(Activation(activation, v if i in chosen else None, trainable, name=f"act{i + 1}"))
            if u is not None and i in chosen:
                ops.append(Modulate(u, trainable, name=f"u{i + 1}"))
        ops.append(Dense(check_real("readout_std", readout_std, low=0.0),
                         check_real("readout_bias_std", readout_bias_std, low=0.0), name="readout"))
        return cls(ops, source="Network.mlp")

    @classmethod
    def from_module(cls, module: nn.Module) -> Network:
        """The analytic description of ``module``: an ``nn.Sequential`` (nested too), a deepens model, any module
        whose ``forward`` is a chain of supported layers, or a deepens ensemble (``BatchEnsemble``,
        ``MCDropout``, ``LastLayerDropout``, ``DeepEnsemble``), whose modulations and their distributions are
        read too. A layer without a closed-form kernel (max pooling, normalisation, attention, residual
        branches, ...) raises :class:`DeepensError` naming it; estimate such networks with
        ``infinite_width_kernels(..., method="monte_carlo")``."""
        from ..ensembles.base import Ensemble
        from ..ensembles.batch import BatchEnsemble
        from ..ensembles.deep import DeepEnsemble
        from ..ensembles.lld import LastLayerDropout

        if not isinstance(module, nn.Module):
            raise DeepensError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        if isinstance(module, DeepEnsemble):
            inner = cls.from_module(module.member(0))
            return cls(inner.ops, independent_members=True, source=f"DeepEnsemble of {inner.source}")
        if isinstance(module, (BatchEnsemble, LastLayerDropout)):
            mask = module.mask if isinstance(module, LastLayerDropout) else None
            ops = _Reader(module.net, type(module).__name__, mask).read()
            return cls(ops, source=type(module).__name__)
        if isinstance(module, Ensemble):
            raise DeepensError(f"module: {type(module).__name__} has no analytic description (supported ensembles: "
                               "BatchEnsemble, MCDropout, LastLayerDropout, DeepEnsemble)")
        return cls(_Reader(module, type(module).__name__).read(), source=type(module).__name__)

    # -- introspection -----------------------------------------------------------------------------
    @property
    def spatial_dims(self) -> int | None:
        """1 or 2 for a convolutional network (its input is (N, C, L) or (N, C, H, W)), None for a dense one."""
        for op in self.ops:
            if isinstance(op, Conv):
                return op.dims
            if isinstance(op, AvgPool):
                return op.dims
            if isinstance(op, Dense):
                return None
        return None

    def readout(self) -> Dense:
        layers = [op for op in self.ops if isinstance(op, Dense)]
        if not layers:
            raise DeepensError("network: expected at least one dense or convolutional layer")
        return layers[-1]

    @property
    def readout_bias_std(self) -> float:
        r = self.readout()
        return r.bias_std if r.bias else 0.0

    def last_modulation(self) -> Distribution | None:
        """The modulation u acting on the readout's input features (the last hidden layer's u, or an LLD mask),
        or None: what decides the regime (EE Theorems 1-2)."""
        index = max(i for i, op in enumerate(self.ops) if isinstance(op, Dense))
        for op in reversed(self.ops[:index]):
            if isinstance(op, Modulate):
                return op.u
            if not isinstance(op, (Flatten, GlobalAvgPool, AvgPool)):
                return None
        return None

    @property
    def modulated(self) -> bool:
        return any(isinstance(op, Modulate) or (isinstance(op, Activation) and op.v is not None) for op in self.ops)

    def describe(self) -> list[str]:
        """One line per operation."""
        lines = []
        for op in self.ops:
            kind = type(op).__name__
            if isinstance(op, Conv):
                text = (f"Conv{op.dims}d k={op.kernel_size} stride={op.stride} padding={op.padding} "
                        f"{op.padding_mode} σ_w={op.weight_std:.4g} σ_b={op.bias_std if op.bias else 0:.4g} "
                        f"{op.parameterization}")
            elif isinstance(op, Dense):
                text = f"Dense σ_w={op.weight_std:.4g} σ_b={op.bias_std if op.bias else 0:.4g} {op.parameterization}"
            elif isinstance(op, Activation):
                text = f"{op.label}" + (f" v~{op.v.spec}{'' if op.train_v else ' frozen'}" if op.v else "")
            elif isinstance(op, Modulate):
                text = f"u~{op.u.spec}{'' if op.trainable else ' frozen'}"
            elif isinstance(op, AvgPool):
                text = f"AvgPool k={op.kernel_size} stride={op.stride} padding={op.padding}"
            else:
                text = kind
            lines.append(f"{op.name or kind}: {text}")
        return lines


# -- reading modules ----------------------------------------------------------------------------------

_NO_CLOSED_FORM = {
    nn.MaxPool1d: "max pooling has no closed-form Gaussian expectation",
    nn.MaxPool2d: "max pooling has no closed-form Gaussian expectation",
    nn.AdaptiveMaxPool1d: "max pooling has no closed-form Gaussian expectation",
    nn.AdaptiveMaxPool2d: "max pooling has no closed-form Gaussian expectation",
    nn.BatchNorm1d: "batch normalisation couples the inputs of a batch (no kernel of input pairs)",
    nn.BatchNorm2d: "batch normalisation couples the inputs of a batch (no kernel of input pairs)",
    nn.LayerNorm: "layer normalisation is not an elementwise map of Gaussian pre-activations",
    nn.GroupNorm: "group normalisation is not an elementwise map of Gaussian pre-activations",
    nn.MultiheadAttention: "attention's infinite-width limit is not implemented",
}

_ACTIVATION_NAMES = {nn.ReLU: "relu", Erf: "erf", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SiLU: "silu"}
_FUNCTION_NAMES = {torch.relu: "relu", F.relu: "relu", torch.erf: "erf", torch.tanh: "tanh", F.tanh: "tanh",
                   torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.silu: "silu"}
_VANISH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten)


class _Bound:
    """An activation function called with extra arguments (``F.leaky_relu(x, 0.2)``), as one elementwise map."""

    def __init__(self, fn, args: tuple, kwargs: dict) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.__name__ = getattr(fn, "__name__", "activation")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, *self.args, **self.kwargs)


def _function_activation(node: fx.Node):
    """The activation a ``call_function`` node applies: a closed-form name, or the function with its arguments."""
    extra, kwargs = tuple(node.args[1:]), dict(node.kwargs)
    kwargs.pop("inplace", None)
    if node.target in _FUNCTION_NAMES and not extra and not kwargs:
        return _FUNCTION_NAMES[node.target]
    return _Bound(node.target, extra, kwargs)


def _activation_of(module: nn.Module):
    name = _ACTIVATION_NAMES.get(type(module))
    if name is not None:
        return name
    if isinstance(module, nn.GELU) and module.approximate == "none":
        return "gelu"
    return module  # evaluated by quadrature (its exact elementwise function, whatever its arguments)


def _weights(module: nn.Module, label: str) -> dict:
    """σ_w, σ_b, bias presence, parameterization and fan-in of a dense / conv layer as it is initialised."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(module.weight)
    has_bias = module.bias is not None
    param = getattr(module, "parameterization", None)
    if param is None:  # a plain torch layer: kaiming_uniform(a=√5) weights and uniform(±1/√fan_in) biases
        return {"weight_std": math.sqrt(1.0 / 3.0), "bias_std": math.sqrt(1.0 / (3.0 * fan_in)), "bias": has_bias,
                "parameterization": "standard", "fan_in": fan_in, "name": label}
    weight_std = float(module.weight_std)
    if param == "standard" and getattr(module, "init", "normal") == "xavier":
        weight_std *= math.sqrt(2.0 * fan_in / (fan_in + fan_out))
    return {"weight_std": weight_std, "bias_std": float(module.bias_std), "bias": has_bias, "parameterization": param,
            "fan_in": fan_in, "name": label}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from ..layers.members import ModulatedReadout, Modulation, Tile

        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, Modulation, Tile, ModulatedReadout)) or \
                is_activation_module(m):
            return True
        return super().is_leaf_module(m, qualname)


class _Reader:
    """Walks a module's dataflow graph (one chain from the input to the output) into analytic operations."""

    def __init__(self, module: nn.Module, label: str, mask: Distribution | None = None) -> None:
        self.module = module
        self.label = label
        self.mask = mask  # the distribution of a last-layer-dropout readout's masks

    def _graph(self):
        if isinstance(self.module, fx.GraphModule):
            return self.module, self.module.graph
        root = self.module if not isinstance(self.module, (nn.Linear, nn.Conv1d, nn.Conv2d)) else nn.Sequential(
            self.module)
        try:
            graph = _Tracer().trace(root)
        except Exception as exc:  # fx raises many kinds of errors on untraceable code
            raise DeepensError(f"module: cannot read {self.label} with torch.fx ({type(exc).__name__}: {exc}); "
                               "use method='monte_carlo'") from None
        return root, graph

    def refuse(self, what: str, why: str) -> DeepensError:
        return DeepensError(f"module: {what} in {self.label} has no closed-form infinite-width kernel ({why}); "
                            "use infinite_width_kernels(..., method='monte_carlo') for such networks")

    def read(self) -> list:
        from ..layers.members import ModulatedReadout, Modulation, Tile

        root, graph = self._graph()
        ops: list = []
        current = None
        pending: tuple | None = None  # (modulation, name) not yet followed by an activation or a weight layer

        def flush() -> None:
            """The pending modulation reaches a weight layer: it multiplies an output (post-activation u)."""
            nonlocal pending
            if pending is not None:
                ops.append(Modulate(pending[0].distribution, pending[0].trainable, name=pending[1]))
                pending = None

        def take_v() -> tuple[Distribution | None, bool]:
            """The pending modulation reaches an activation: it is the pre-activation v."""
            nonlocal pending
            if pending is None:
                return None, False
            mod, pending = pending[0], None
            return mod.distribution, bool(mod.trainable)

        for node in graph.nodes:
            if node.op == "placeholder":
                if current is not None:
                    raise DeepensError(f"module: {self.label} takes more than one input")
                current = node
                continue
            if node.op == "output":
                if node.args[0] is not current:
                    raise self.refuse("the output", "it is not the end of one chain of layers")
                break
            if node.op == "get_attr":
                raise self.refuse(f"attribute {node.target!r}", "parameters used outside Linear/Conv layers")
            tensors = [a for a in node.args if isinstance(a, fx.Node)]
            tensors += [a for a in node.kwargs.values() if isinstance(a, fx.Node)]
            if len(tensors) != 1 or tensors[0] is not current:
                raise self.refuse(f"operation {node.name!r} ({node.target})",
                                  "a residual branch or an operation on several tensors")
            if len(current.users) != 1:
                raise self.refuse(f"the output of {current.name!r}",
                                  "it feeds several operations: a residual or parallel branch")
            name = str(node.target)
            if node.op == "call_module":
                sub = root.get_submodule(node.target)
                if isinstance(sub, (Tile, *_VANISH)):
                    pass  # identity and (evaluation-mode) dropout: a pending modulation passes through
                elif isinstance(sub, Modulation):
                    if sub.resample:
                        raise self.refuse(f"modulation {name!r}", "masks redrawn at every forward (resample=True) "
                                          "have no fixed kernel; use fixed masks")
                    if sub.distribution is None:
                        raise DeepensError(f"module: modulation {name!r} has no distribution to read")
                    if pending is not None:
                        raise self.refuse(f"modulations {pending[1]!r} and {name!r}", "two random modulations act "
                                          "on one pre-activation (a layer without an activation)")
                    pending = (sub, name)
                elif isinstance(sub, ModulatedReadout):
                    flush()
                    if self.mask is None:
                        raise DeepensError(f"module: the readout masks of {self.label} have no distribution to read")
                    ops.append(Modulate(self.mask, trainable=False, name=f"{name}:mask"))
                    ops.append(Dense(**_weights(sub.readout, name)))
                elif is_activation_module(sub):
                    if any(True for _ in sub.parameters()):
                        raise self.refuse(f"activation {name!r} ({type(sub).__name__})",
                                          "its trainable parameters have no infinite-width limit here")
                    v, train_v = take_v()
                    ops.append(Activation(_activation_of(sub), v, train_v, name=name))
                elif isinstance(sub, _POOLS):
                    ops.append(self._module_op(sub, name))  # commutes with per-channel modulations
                else:
                    flush()
                    op = self._module_op(sub, name)
                    if isinstance(op, Conv) and sub.groups != 1 and not any(isinstance(o, Dense) for o in ops):
                        raise self.refuse(f"layer {name!r} (groups={sub.groups}) as the first layer",
                                          "each group sees its own finite set of input channels")
                    ops.append(op)
            elif node.op == "call_function":
                if node.target in ACTIVATION_FUNCTIONS:
                    v, train_v = take_v()
                    ops.append(Activation(_function_activation(node), v, train_v, name=node.name))
                elif node.target is torch.flatten and _flatten_args(node):
                    ops.append(Flatten(node.name))
                elif node.target in (F.dropout, operator.pos):
                    pass
                else:
                    raise self.refuse(f"function {getattr(node.target, '__name__', node.target)!r}",
                                      "only activations and torch.flatten(x, 1) are read from functional code")
            elif node.op == "call_method":
                if node.target == "flatten" and _flatten_args(node):
                    ops.append(Flatten(node.name))
                elif node.target in ACTIVATION_METHODS and len(node.args) == 1 and not node.kwargs:
                    v, train_v = take_v()
                    ops.append(Activation(node.target, v, train_v, name=node.name))
                else:
                    raise self.refuse(f"method .{node.target}()", "use nn.Flatten or torch.flatten(x, 1)")
            current = node
        flush()
        weights = [i for i, op in enumerate(ops) if isinstance(op, Dense)]
        if not weights:
            raise DeepensError(f"module: expected at least one Linear or Conv layer in {self.label}")
        for i, op in enumerate(ops):
            outside = i < weights[0] or i > weights[-1]
            if outside and (isinstance(op, Modulate) or (isinstance(op, Activation) and op.v is not None)):
                raise self.refuse(f"modulation {op.name!r} of the network's inputs or outputs", "over finitely many "
                                  "coordinates its kernel does not self-average (it stays random as widths grow)")
        return ops

    def _module_op(self, sub: nn.Module, name: str):
        if isinstance(sub, nn.Linear):
            return Dense(**_weights(sub, name))
        if isinstance(sub, (nn.Conv1d, nn.Conv2d)):
            if sub.padding_mode not in ("zeros", "circular"):
                raise self.refuse(f"layer {name!r} (padding_mode={sub.padding_mode!r})",
                                  "only zero and circular padding are supported")
            dims = sub.weight.dim() - 2
            k = tuple(sub.kernel_size)
            dil = tuple(sub.dilation)
            if isinstance(sub.padding, str):
                if sub.padding == "valid":
                    pad = ((0, 0),) * dims
                else:  # "same" (stride 1): torch pads total//2 before and the rest after
                    totals = [d * (kk - 1) for d, kk in zip(dil, k, strict=True)]
                    pad = tuple((t // 2, t - t // 2) for t in totals)
            else:
                pad = tuple((p, p) for p in sub.padding)
            return Conv(**_weights(sub, name), kernel_size=k, stride=tuple(sub.stride), padding=pad, dilation=dil,
                        padding_mode=sub.padding_mode)
        if isinstance(sub, (nn.AvgPool1d, nn.AvgPool2d)):
            if sub.ceil_mode or sub.divisor_override is not None:
                raise self.refuse(f"layer {name!r}", "ceil_mode and divisor_override are not supported")
            dims = 1 if isinstance(sub, nn.AvgPool1d) else 2
            padding = _tuple("padding", sub.padding, dims, 0)
            if any(padding) and not sub.count_include_pad:
                raise self.refuse(f"layer {name!r}", "padding with count_include_pad=False varies the divisor")
            return AvgPool(_tuple("kernel_size", sub.kernel_size, dims, 1),
                           _tuple("stride", sub.stride, dims, 1), padding, name=name)
        if isinstance(sub, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            size = sub.output_size
            sizes = (size,) if isinstance(size, int) else tuple(size)
            if all(s == 1 for s in sizes):
                return GlobalAvgPool(name)
            raise self.refuse(f"layer {name!r} (output size {size})", "only global average pooling (size 1)")
        if isinstance(sub, nn.Flatten):
            if sub.start_dim != 1 or sub.end_dim != -1:
                raise self.refuse(f"layer {name!r}", "only nn.Flatten(1, -1) is read")
            return Flatten(name)
        for kind, why in _NO_CLOSED_FORM.items():
            if isinstance(sub, kind):
                raise self.refuse(f"layer {name!r} ({type(sub).__name__})", why)
        if any(True for _ in sub.parameters()):
            raise self.refuse(f"layer {name!r} ({type(sub).__name__})", "a layer with parameters deepens cannot read")
        raise self.refuse(f"layer {name!r} ({type(sub).__name__})", "not a supported layer")


def _flatten_args(node: fx.Node) -> bool:
    args = list(node.args[1:])
    start = node.kwargs.get("start_dim", args[0] if args else 0)
    end = node.kwargs.get("end_dim", args[1] if len(args) > 1 else -1)
    return start == 1 and end == -1

