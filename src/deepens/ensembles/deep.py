"""Deep ensembles: M independently initialised copies of a reference network in one call."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import DeepensError, check_int
from ..layers.members import StackedBatchNorm, StackedConv, StackedLinear, Tile
from .base import Ensemble
from .graph import reinitialize, seeded, trace

__all__ = ["DeepEnsemble", "member_modules"]


def member_modules(
    net: nn.Module | Callable[[], nn.Module], members: int, seed: int | None, builder: str
) -> list[nn.Module]:
    """M independently initialised modules from a template module or a factory."""
    members = check_int("members", members, minimum=1)
    with seeded(seed):
        if isinstance(net, nn.Module):
            return [reinitialize(copy.deepcopy(net)) for _ in range(members)]
        if callable(net):
            modules = [net() for _ in range(members)]
            for module in modules:
                if not isinstance(module, nn.Module):
                    raise DeepensError(f"net: the factory must return an nn.Module, got {type(module).__name__}")
            return modules
    raise DeepensError(f"net: {builder} expects an nn.Module or a factory returning one, got {type(net).__name__}")


def check_same_structure(modules: Sequence[nn.Module]) -> None:
    if len(modules) == 0:
        raise DeepensError("modules: expected at least one module")
    first = {k: tuple(v.shape) for k, v in modules[0].state_dict().items()}
    for i, module in enumerate(modules[1:], start=1):
        if not isinstance(module, nn.Module):
            raise DeepensError(f"modules[{i}]: expected an nn.Module, got {type(module).__name__}")
        other = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        if other != first:
            raise DeepensError(f"modules[{i}]: expected the same parameters and shapes as modules[0]")


class DeepEnsemble(Ensemble):
    """M independent networks (a classic deep ensemble) computed in one vectorized call.

    Every ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` of the reference network becomes a stacked
    layer holding M weight sets (member axis first): dense layers run as one batched matmul,
    convolutions as one grouped convolution; every ``nn.BatchNorm1d/2d`` a per-member batch norm (each
    member's own statistics and running buffers); all other operations act sample by sample on the folded
    (M·B, ...) batch. Members never share parameters, so all parameters are individual.

    ``net`` is a template module (each member is a deep copy re-initialised with the module's own
    ``reset_parameters``), or a factory ``() -> nn.Module`` called M times. ``seed`` makes the
    initialisation reproducible without touching torch's global RNG. To stack modules you already
    have (e.g. trained ones), use :meth:`from_modules`.
    """

    kind = "deep"

    def __init__(
        self, net: nn.Module | Callable[[], nn.Module], members: int, *, seed: int | None = None
    ) -> None:
        modules = member_modules(net, members, seed, "DeepEnsemble")
        self._build(modules)

    @classmethod
    def from_modules(cls, modules: Sequence[nn.Module]) -> DeepEnsemble:
        """Stack existing modules of identical structure, keeping their weights (member α = modules[α])."""
        if isinstance(modules, nn.Module) or not isinstance(modules, Sequence):
            raise DeepensError("modules: expected a sequence of nn.Module of the same structure")
        obj = cls.__new__(cls)
        obj._build(list(modules))
        return obj

    def _build(self, modules: list[nn.Module]) -> None:
        check_same_structure(modules)
        Ensemble.__init__(self, len(modules))
        traced = trace(modules[0], allow_other_parameters=False, builder="DeepEnsemble")
        for site in traced.sites:
            layers = [m.get_submodule(site.target) for m in modules]
            cls = StackedConv if site.is_conv else StackedLinear
            traced.replace_module(site.target, cls(layers, self.ctx, entry=site is traced.entry))
        for _, target, _ in traced.norms:  # batch norm per member: its own statistics and running buffers
            traced.replace_module(target, StackedBatchNorm([m.get_submodule(target) for m in modules], self.ctx))
        if traced.entry is None:
            traced.insert_after(traced.placeholders[0], "tile", Tile(self.ctx))
        self.net = traced.finish()
        self.sample_shape = traced.sample_shape
        self._targets = [site.target for site in traced.sites] + [target for _, target, _ in traced.norms]
        object.__setattr__(self, "_template", copy.deepcopy(modules[0]).to("meta"))

    def _is_individual(self, name: str) -> bool:
        return True

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def member(self, index: int) -> nn.Module:
        """Member ``index`` as a plain module of the reference network's class, with its weights."""
        index = check_int("index", index, minimum=0)
        if index >= self.members:
            raise DeepensError(f"index: expected 0..{self.members - 1}, got {index}")
        weight = self.net.get_submodule(self._targets[0]).weight
        module = copy.deepcopy(self._template).to_empty(device=weight.device).to(weight.dtype)
        with torch.no_grad():
            for target in self._targets:
                stacked = self.net.get_submodule(target)
                layer = module.get_submodule(target)
                for name, value in stacked.member_state(index).items():
                    getattr(layer, name).copy_(value)
            stacked_names = tuple(f"{t}." for t in self._targets)
            for name, buffer in module.named_buffers():
                if not name.startswith(stacked_names):
                    buffer.copy_(self.net.get_buffer(name))
        return module
