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
    convolutions as ``conv_strategy`` says (see :data:`deepens.layers.members.STRATEGIES`: on the CPU a
    convolutional network runs its members one at a time through the reference network, on a GPU as grouped
    convolutions); every ``nn.BatchNorm1d/2d`` a per-member batch norm (each member's own statistics and running
    buffers); all other operations act sample by sample on the folded (M·B, ...) batch. Members never share
    parameters, so all parameters are individual.

    ``net`` is a template module (each member is a deep copy re-initialised with the module's own
    ``reset_parameters``), or a factory ``() -> nn.Module`` called M times. ``seed`` makes the
    initialisation reproducible without touching torch's global RNG. To stack modules you already
    have (e.g. trained ones), use :meth:`from_modules`.
    """

    kind = "deep"
    _chunkable = True

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

    def _lean_now(self, x: torch.Tensor) -> bool:
        if self.lean == "auto" and self.ctx.chunked:
            return False  # one member at a time re-lays nothing out: nothing to recompute
        return super()._lean_now(x)

    def _synced_template(self) -> nn.Module:
        """The reference network's template with the current state of ``net``'s modules: every module's training
        flag, the plain settings (dropout rates, ...) of the others, and the stacked layers' momentum, eps and
        scales. Which attributes to copy is worked out once per set of modules."""
        template = self._template
        modules = tuple(self.net.named_modules())
        key = (id(template),) + tuple(id(mod) for _, mod in modules)
        cached = self.__dict__.get("_template_sync")
        if cached is None or cached[0] != key:
            targets, pairs = set(self._targets), []
            for path, module in modules[1:]:
                try:
                    twin = template.get_submodule(path)
                except AttributeError:
                    continue
                names = ("momentum", "eps", "weight_scale", "bias_scale") if path in targets else [
                    k for k, v in vars(module).items()
                    if not k.startswith("_") and isinstance(v, (bool, int, float, str, tuple, type(None)))]
                pairs.append((module, twin, [n for n in names if n in vars(module) and n in vars(twin)]))
            cached = (key, pairs)
            self.__dict__["_template_sync"] = cached
        template.training = self.net.training
        for module, twin, names in cached[1]:  # plain attributes: written into the modules' __dict__ directly
            state, source = twin.__dict__, module.__dict__
            state["training"] = source["training"]
            for name in names:
                state[name] = source[name]
        return template

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.members
        if not self.ctx.chunked:
            return self.net(x)
        # the members one at a time through the reference network (each member's activations stay in cache from
        # one layer to the next, as in a loop over separate networks): its parameters are the stacked ones split
        # once (one node per parameter in the graph; a row that is not 64-byte aligned or not contiguous in the
        # reference layout is copied: oneDNN's convolutions are ~3 % slower on unaligned weights), its
        # per-member buffers are rows of the stacked ones (batch-norm statistics updated in place through them)
        template = self._synced_template()
        stacked_names = tuple(f"{t}." for t in self._targets)
        rows: dict[str, list[torch.Tensor]] = {
            n: [b] * m for n, b in self.net.named_buffers() if not n.startswith(stacked_names)}  # shared buffers
        for target in self._targets:
            stacked = self.net.get_submodule(target)
            for name, p in stacked.named_parameters(recurse=False):
                rows[f"{target}.{name}"] = [t if t.data_ptr() % 64 == 0 and t.is_contiguous() else t.clone()
                                            for t in stacked.to_reference(name, p).unbind(0)]
            for name, buffer in stacked.named_buffers(recurse=False):
                rows[f"{target}.{name}"] = list(buffer.unbind(0))
        slots = []  # (its tensors, the dict of the template's module that holds it, its name there)
        for key, values in rows.items():
            path, _, name = key.rpartition(".")
            module = template.get_submodule(path)
            holder = module._parameters if name in module._parameters else module._buffers
            if name not in holder:  # a plain tensor attribute of the reference network (a buffer once traced)
                return self.net(x)
            slots.append((values, holder, name))
        return self._run_members(template, x, slots)

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
