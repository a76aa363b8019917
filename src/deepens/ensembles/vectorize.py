"""``vectorize``: any ``nn.Module`` as an M-member independent ensemble through torch.func."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from ..errors import DeepensError, check_int
from .base import Ensemble
from .deep import check_same_structure, member_modules
from .graph import trace

__all__ = ["vectorize", "VectorizedEnsemble"]


def _set(module: nn.Module, name: str, value: torch.Tensor, parameter: bool) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    if parameter:
        setattr(parent, leaf, nn.Parameter(value, requires_grad=True))
    else:
        parent.register_buffer(leaf, value, persistent=leaf not in parent._non_persistent_buffers_set)


class VectorizedEnsemble(Ensemble):
    """M copies of an arbitrary module with stacked parameters and buffers, run with ``torch.func.vmap``.

    ``self.stacked`` has the reference module's structure and names, but every parameter and buffer
    carries a leading member axis (M, ...); a standard torch optimizer trains it. The forward is
    ``vmap(functional_call)`` with ``randomness="different"``: dropout draws a different mask for every
    member, and BatchNorm keeps per-member running statistics (updated in place in training mode).
    """

    kind = "vectorized"
    lean = False  # its forward runs under torch.func.vmap, where saved-tensor hooks are not supported

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        check_same_structure(modules)
        super().__init__(len(modules))
        names = [n for n, _ in modules[0].named_parameters(remove_duplicate=False)]
        if len(set(names)) != len(dict(modules[0].named_parameters())):
            raise DeepensError("net: tied (shared) parameters are not supported by vectorize")
        stacked = copy.deepcopy(modules[0])
        for name, _ in modules[0].named_parameters():
            value = torch.stack([m.get_parameter(name).detach() for m in modules]).clone()
            _set(stacked, name, value, parameter=True)
        for name, _ in modules[0].named_buffers():
            value = torch.stack([m.get_buffer(name).detach() for m in modules]).clone()
            _set(stacked, name, value, parameter=False)
        self.stacked = stacked
        try:
            self.sample_shape = trace(modules[0], builder="vectorize").sample_shape
        except DeepensError:
            self.sample_shape = getattr(modules[0], "input_shape", None)

    def _is_individual(self, name: str) -> bool:
        return True

    def truncate_members_(self, k: int) -> None:
        with torch.no_grad():
            for name, p in list(self.stacked.named_parameters()):
                _set(self.stacked, name, p.detach()[:k].clone(), parameter=True)
            for name, b in list(self.stacked.named_buffers()):
                _set(self.stacked, name, b[:k].clone(), parameter=False)

    def first(self, k: int) -> VectorizedEnsemble:
        new = super().first(k)
        new.truncate_members_(k)
        return new

    def member(self, index: int) -> nn.Module:
        """Member ``index`` as a plain module of the template's class, with its own weights and buffers."""
        index = check_int("index", index, minimum=0)
        if index >= self.members:
            raise DeepensError(f"index: expected 0..{self.members - 1}, got {index}")
        module = copy.deepcopy(self.stacked)
        with torch.no_grad():
            for name, p in self.stacked.named_parameters():
                _set(module, name, p.detach()[index].clone(), parameter=True)
            for name, b in self.stacked.named_buffers():
                _set(module, name, b[index].clone(), parameter=False)
        return module

    def forward(self, x: torch.Tensor, per_member: bool | None = None) -> torch.Tensor:
        per_member = self._check_input(x, per_member)
        params = dict(self.stacked.named_parameters())
        buffers = dict(self.stacked.named_buffers())

        def one(p, b, inp):
            return functional_call(self.stacked, (p, b), (inp,))

        return vmap(one, in_dims=(0, 0, 0 if per_member else None), randomness="different")(params, buffers, x)


def vectorize(
    module: nn.Module | Callable[[], nn.Module] | Sequence[nn.Module],
    members: int | None = None,
    *,
    seed: int | None = None,
) -> VectorizedEnsemble:
    """Turn any ``nn.Module`` into an M-member independent ensemble (torch.func).

    ``module`` is a template (members are deep copies re-initialised by ``reset_parameters``), a
    factory called M times, or a list of modules to stack as they are (then ``members`` may be
    omitted). Unlike :class:`DeepEnsemble`, any layer works (BatchNorm, LayerNorm, attention, ...).
    """
    if isinstance(module, Sequence) and not isinstance(module, nn.Module):
        modules = list(module)
        if members is not None and members != len(modules):
            raise DeepensError(f"members: got {members} but {len(modules)} modules")
        return VectorizedEnsemble(modules)
    if members is None:
        raise DeepensError("members: expected the number of members (an integer >= 1)")
    return VectorizedEnsemble(member_modules(module, members, seed, "vectorize"))
