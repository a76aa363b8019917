"""Reading a reference network's dataflow with torch.fx, and rewriting it into an ensemble.

The builders trace the reference network once (no example input needed), find its parameter layers
(``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and their deepens subclasses) in execution order, the
activation that follows each one, and the first layer the input reaches; they then swap layers or
insert modulation nodes. Tracing follows the real dataflow, so a network with a custom ``forward``
(nested modules, ``torch.flatten``, functional activations) is handled as long as every operation
outside the parameter layers works sample by sample along the first axis.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import fx, nn

from ..errors import DeepensError
from ..layers.activations import ACTIVATION_FUNCTIONS, ACTIVATION_METHODS, is_activation_module

__all__ = ["PARAM_LAYERS", "NORM_LAYERS", "Site", "Traced", "trace"]

PARAM_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d)
_TRANSPARENT = (nn.Dropout, nn.Identity)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, PARAM_LAYERS + NORM_LAYERS) or is_activation_module(m):
            return True
        return super().is_leaf_module(m, qualname)


@dataclass
class Site:
    """One parameter layer of the reference network, in execution order."""

    index: int
    node: fx.Node
    target: str
    module: nn.Module
    post: fx.Node  # where the post-activation modulation u goes (after the activation, EE Eq. 1)
    has_activation: bool
    pre: fx.Node | None = None  # where the pre-activation modulation v goes (after a batch norm; default: node)

    def __post_init__(self) -> None:
        if self.pre is None:
            self.pre = self.node

    @property
    def is_conv(self) -> bool:
        return isinstance(self.module, (nn.Conv1d, nn.Conv2d))

    @property
    def feature_dim(self) -> int:
        return 1 if self.is_conv else -1

    @property
    def out_features(self) -> int:
        return self.module.out_channels if self.is_conv else self.module.out_features

    @property
    def in_features(self) -> int:
        return self.module.in_channels if self.is_conv else self.module.in_features


def _is_activation_node(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return is_activation_module(gm.get_submodule(node.target))
    if node.op == "call_function":
        return node.target in ACTIVATION_FUNCTIONS
    if node.op == "call_method":
        return node.target in ACTIVATION_METHODS
    return False


def _single_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


class Traced:
    """A traced copy of a reference network with its parameter-layer sites."""

    def __init__(self, net: nn.Module, *, allow_other_parameters: bool, builder: str) -> None:
        if not isinstance(net, nn.Module):
            raise DeepensError(f"net: expected a torch.nn.Module, got {type(net).__name__}")
        net = copy.deepcopy(net)
        if isinstance(net, PARAM_LAYERS) or is_activation_module(net):
            net = nn.Sequential(net)  # a bare layer is traced as a one-layer network
        tracer = _Tracer()
        try:
            graph = tracer.trace(net)
        except Exception as exc:  # fx raises many kinds of errors on untraceable code
            raise DeepensError(
                f"net: {builder} could not trace {type(net).__name__} with torch.fx ({type(exc).__name__}: "
                f"{exc}); use deepens.vectorize for networks with data-dependent control flow"
            ) from None
        self.gm = fx.GraphModule(tracer.root, graph, class_name=f"{type(net).__name__}Ensemble")
        self.reference = net
        self.sites: list[Site] = []
        self.norms: list[tuple[fx.Node, str, nn.Module]] = []  # batch norms, in execution order
        seen: set[str] = set()
        for node in self.gm.graph.nodes:
            if node.op == "get_attr":
                obj = self._attr(node.target)
                if isinstance(obj, nn.Parameter):
                    raise DeepensError(
                        f"net: parameter {node.target!r} is used outside an nn.Linear/nn.Conv layer; "
                        f"{builder} supports parameters only in Linear/Conv1d/Conv2d layers "
                        "(use deepens.vectorize for other networks)"
                    )
            if node.op != "call_module":
                continue
            module = self.gm.get_submodule(node.target)
            if isinstance(module, PARAM_LAYERS):
                if node.target in seen:
                    raise DeepensError(f"net: layer {node.target!r} is called more than once; weight sharing "
                                       f"between positions is not supported by {builder}")
                seen.add(node.target)
                self.sites.append(self._site(len(self.sites), node, module))
            elif isinstance(module, NORM_LAYERS):
                self.norms.append((node, str(node.target), module))
            elif not allow_other_parameters and any(True for _ in module.parameters(recurse=False)):
                raise DeepensError(
                    f"net: module {node.target!r} ({type(module).__name__}) has parameters; {builder} stacks "
                    "only nn.Linear / nn.Conv1d / nn.Conv2d and batch-norm layers (use deepens.vectorize for "
                    "other layers with parameters)"
                )
        if not self.sites:
            raise DeepensError(
                f"net: expected a network with at least one nn.Linear, nn.Conv1d or nn.Conv2d layer, "
                f"found none in {type(net).__name__}"
            )
        self.placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(self.placeholders) != 1:
            raise DeepensError(f"net: expected a forward(x) with one input, got {len(self.placeholders)} inputs")
        self.entry = self._entry()
        self.sample_shape = self._sample_shape(net)

    def _attr(self, target: str):
        obj = self.gm
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def _site(self, index: int, node: fx.Node, module: nn.Module) -> Site:
        current = node
        normed = False
        nxt = _single_user(current)
        while nxt is not None and nxt.op == "call_module" and isinstance(
            self.gm.get_submodule(nxt.target), _TRANSPARENT + NORM_LAYERS
        ):
            normed = normed or isinstance(self.gm.get_submodule(nxt.target), NORM_LAYERS)
            current = nxt
            nxt = _single_user(current)
        # after a batch norm, the pre-activation modulation goes behind it (a per-member norm would undo it)
        pre = current if normed else node
        if nxt is not None and _is_activation_node(self.gm, nxt):
            return Site(index, node, str(node.target), module, nxt, True, pre)
        return Site(index, node, str(node.target), module, pre, False, pre)

    def _entry(self) -> Site | None:
        """The site the input flows into along a chain of single-user, per-sample operations, if any."""
        node = self.placeholders[0]
        by_node = {s.node: s for s in self.sites}
        while True:
            nxt = _single_user(node)
            if nxt is None or nxt.op == "output":
                return None
            if nxt in by_node:
                # the chain must feed the layer's input, not e.g. a weight
                return by_node[nxt] if nxt.args and nxt.args[0] is node else None
            node = nxt

    def _sample_shape(self, net: nn.Module) -> tuple[int | None, ...] | None:
        declared = getattr(net, "input_shape", None)
        if declared is not None:
            return tuple(declared)
        first = self.sites[0]
        placeholder = self.placeholders[0]
        if _single_user(placeholder) is not first.node:
            return None
        module = first.module
        if isinstance(module, nn.Conv2d):
            return (module.in_channels, None, None)
        if isinstance(module, nn.Conv1d):
            return (module.in_channels, None)
        return (module.in_features,)

    # -- rewriting ---------------------------------------------------------------------------------
    def insert_after(self, node: fx.Node, name: str, module: nn.Module) -> fx.Node:
        """Insert ``module`` on the output of ``node``: every former user of ``node`` now reads it."""
        self.gm.add_submodule(name, module)
        with self.gm.graph.inserting_after(node):
            new = self.gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
        return new

    def insert_before_input(self, site: Site, name: str, module: nn.Module) -> fx.Node:
        """Insert ``module`` on the input of ``site``'s layer only."""
        self.gm.add_submodule(name, module)
        source = site.node.args[0]
        with self.gm.graph.inserting_before(site.node):
            new = self.gm.graph.call_module(name, (source,))
        site.node.replace_input_with(source, new)
        return new

    def replace_module(self, target: str, module: nn.Module) -> None:
        parent_name, _, leaf = target.rpartition(".")
        parent = self.gm.get_submodule(parent_name) if parent_name else self.gm
        setattr(parent, leaf, module)

    def finish(self) -> fx.GraphModule:
        self.gm.graph.lint()
        self.gm.recompile()
        return self.gm


def trace(net: nn.Module, *, allow_other_parameters: bool = True, builder: str = "deepens") -> Traced:
    """Trace ``net`` (a deep copy) and locate its parameter layers; raises :class:`DeepensError`."""
    return Traced(net, allow_other_parameters=allow_other_parameters, builder=builder)


def reinitialize(module: nn.Module) -> nn.Module:
    """Draw fresh parameters for ``module`` in place, the way it initialises itself.

    Calls ``module.reset_parameters()`` when the top-level module defines it (deepens' reference
    networks do), otherwise ``reset_parameters()`` of every submodule that has one.
    """
    if callable(getattr(module, "reset_parameters", None)):
        module.reset_parameters()
        return module
    found = False
    for sub in module.modules():
        if sub is not module and callable(getattr(sub, "reset_parameters", None)):
            sub.reset_parameters()
            found = True
    if not found and any(True for _ in module.parameters()):
        raise DeepensError(
            f"net: {type(module).__name__} has parameters but no reset_parameters(); pass a factory "
            "(a callable returning a fresh module) or a list of modules instead"
        )
    return module


def seeded(seed: int | None):
    """A context in which torch's global RNG is seeded with ``seed`` and restored afterwards."""
    if seed is None:
        import contextlib

        return contextlib.nullcontext()
    return _Seeded(seed)


class _Seeded:
    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)
