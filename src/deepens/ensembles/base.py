"""The interface every deepens ensemble shares.

Shape convention: the member axis comes first. An ensemble of M members accepts a shared input
(B, ...) — the same batch for every member — or per-member inputs (M, B, ...), and returns
(M, B, ...). ``predict_proba`` averages member probabilities; ``predict_logits_mean`` averages member
outputs (the EE paper's f_ens = (1/M) Σ_α f_α).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..errors import DeepensError, check_int
from ..layers.activations import is_activation_module
from ..layers.members import STRATEGIES, MemberContext, StackedConv
from ..layers.recompute import lean

__all__ = ["Ensemble"]


def _fmt_shape(lead: tuple[str, ...], sample: tuple[int | None, ...]) -> str:
    names = iter(["H", "W"] if len(sample) == 3 else ["L", "H", "W"])
    parts = list(lead) + [str(s) if s is not None else next(names, "?") for s in sample]
    return "(" + ", ".join(parts) + ")"


def plain_modules(modules) -> bool:
    """Whether none of ``modules`` carries hooks or parametrizations: a pass through another copy of them, or through
    them once per member, computes what one pass through them computes."""
    from torch.nn.utils import parametrize

    return not any(mod._forward_hooks or mod._forward_pre_hooks or mod._backward_hooks or mod._backward_pre_hooks
                   or parametrize.is_parametrized(mod) for mod in modules)


class Ensemble(nn.Module):
    """Base class of all ensembles: M members computed in one vectorized call.

    Subclasses implement ``_forward(x)`` on the folded layout (M·B, ...) — or on the shared batch
    (B, ...) when ``self.ctx.shared`` is set — and return the folded output (M·B, ...).
    """

    kind = "ensemble"
    #: Lean training memory (``deepens.layers.recompute``): while gradients are recorded, activations that are
    #: cheap to recompute (modulated copies, re-laid-out batches, tiled inputs) are recomputed in the backward
    #: pass instead of kept; outputs and gradients are bit-for-bit the same. ``"auto"`` (the default) is lean for
    #: networks with convolutions or a folded input of at least 2^20 numbers — where activations weigh — and
    #: plain for small dense networks, where the bookkeeping would cost more time than the memory is worth, and for
    #: a DeepEnsemble run member by member (``conv_strategy``), which re-lays nothing out;
    #: True / False force it on or off for an instance.
    lean: bool | str = "auto"
    #: How stacked convolutions and batch norms compute the members (``deepens.layers.members.STRATEGIES``):
    #: ``"auto"`` (on the CPU a convolutional DeepEnsemble — and a convolutional BatchEnsemble whose folded input
    #: holds at least 2^17 numbers — runs its members one at a time, other stacked layers call each member's
    #: slice; elsewhere one grouped call), or ``"grouped"``, ``"members"``, ``"chunks"`` to force one. The results
    #: are the same up to float summation order.
    conv_strategy: str = "auto"
    _chunkable = False  # whether ``_forward`` can run the members one at a time (``_run_members``)

    def __init__(self, members: int) -> None:
        super().__init__()
        self.ctx = MemberContext(check_int("members", members, minimum=1))
        self.sample_shape: tuple[int | None, ...] | None = None

    def _structure(self) -> tuple[list[nn.Module], bool]:
        """(the activation modules, whether the network convolves), read once."""
        cached = self.__dict__.get("_lean_structure")
        if cached is None:
            modules = list(self.modules())
            cached = ([m for m in modules if is_activation_module(m)],
                      any(isinstance(m, (nn.modules.conv._ConvNd, StackedConv)) for m in modules))
            self.__dict__["_lean_structure"] = cached
        return cached

    def _lean_now(self, x: torch.Tensor) -> bool:
        if self.lean is True or self.lean is False:
            return self.lean and torch.is_grad_enabled()
        if self.lean != "auto":
            raise DeepensError(f"lean: expected True, False or 'auto', got {self.lean!r}")
        if not torch.is_grad_enabled():
            return False
        return self._structure()[1] or x.numel() * (self.members if self.ctx.shared else 1) >= 2**20

    def _chunked(self, x: torch.Tensor) -> bool:
        """Whether this forward runs the members one at a time (``conv_strategy`` ``"chunks"``, or ``"auto"`` for a
        convolutional network on the CPU); never under ``torch.func`` transforms, nor when a module of ``net``
        has hooks or parametrizations (they would not see the members' passes)."""
        strategy = self.conv_strategy
        if not self._chunkable:
            return False
        wanted = strategy == "chunks" or (strategy == "auto" and x.device.type == "cpu" and self._structure()[1]
                                          and self._chunks_pay(x))
        if not wanted or torch._C._are_functorch_transforms_active():
            return False
        return plain_modules(self.net.modules())

    def _chunks_pay(self, x: torch.Tensor) -> bool:
        """Whether ``"auto"`` runs this convolutional ensemble's members one at a time on the CPU."""
        return True

    def _run_members(self, module: nn.Module, x: torch.Tensor,
                     slots: list[tuple[Sequence[torch.Tensor], dict, str]]) -> torch.Tensor:
        """The members one at a time through ``module`` (the ``"chunks"`` strategy): for member α every slot
        ``(tensors, holder, name)`` puts ``tensors[α]`` in place of ``holder[name]`` (a module's ``_parameters`` or
        ``_buffers``; directly: ``torch.func.functional_call`` costs ~0.2 ms a call here), then ``module`` runs as a
        one-member ensemble (``ctx.members`` = 1) on the shared batch or on member α's rows of the folded one; the
        outputs are concatenated member-major (M·B, ...) and the original tensors put back, whatever happens. Each
        member's activations stay in cache from one layer to the next and the backward pass holds one member's
        temporaries at a time, as a loop over separate networks does."""
        m = self.members
        batch = None if self.ctx.shared else x.shape[0] // m
        originals = [(holder, name, holder[name]) for _, holder, name in slots]
        outs = []
        self.ctx.members = 1
        try:
            for a in range(m):
                for values, holder, name in slots:
                    holder[name] = values[a]
                outs.append(module(x if batch is None else x[a * batch: (a + 1) * batch]))
        finally:
            self.ctx.members = m
            for holder, name, value in originals:
                holder[name] = value
        return torch.cat(outs) if m > 1 else outs[0]

    # -- members -----------------------------------------------------------------------------------
    @property
    def members(self) -> int:
        return self.ctx.members

    def first(self, k: int) -> Ensemble:
        """A new ensemble made of copies of the first ``k`` members (k = 1..M)."""
        k = check_int("k", k, minimum=1)
        if k > self.members:
            raise DeepensError(f"k: expected at most {self.members} (the number of members), got {k}")
        new = copy.deepcopy(self)
        for module in new.modules():
            truncate = getattr(module, "truncate_members_", None)
            if truncate is not None and module is not new:
                truncate(k)
        new.ctx.members = k
        return new

    # -- parameters --------------------------------------------------------------------------------
    def _is_individual(self, name: str) -> bool:
        """Whether parameter ``name`` belongs to one member (leading member axis) or is shared."""
        raise NotImplementedError

    def named_individual_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Per-member parameters, each with the member axis first (M, ...)."""
        return ((n, p) for n, p in self.named_parameters() if self._is_individual(n))

    def named_shared_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters shared by all members (trained with the γ(M)/M-scaled summed gradient, EE Eq. 4)."""
        return ((n, p) for n, p in self.named_parameters() if not self._is_individual(n))

    def individual_parameters(self) -> Iterator[nn.Parameter]:
        return (p for _, p in self.named_individual_parameters())

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return (p for _, p in self.named_shared_parameters())

    # -- input handling ----------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor, per_member: bool | None) -> bool:
        """Validate ``x`` and return whether it holds one batch per member."""
        if not isinstance(x, torch.Tensor):
            raise DeepensError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if not (x.is_floating_point() or x.is_complex()):
            raise DeepensError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
        m = self.members
        sample = self.sample_shape
        if sample is not None:
            r = len(sample)
            shared_txt = _fmt_shape(("B",), sample)
            member_txt = _fmt_shape((f"M={m}", "B"), sample)
            if per_member is None:
                per_member = x.dim() == r + 2
            want = r + 2 if per_member else r + 1
            if x.dim() != want:
                raise DeepensError(
                    f"x: expected shape {shared_txt} (one batch shared by all members) or {member_txt} "
                    f"(one batch per member), got {tuple(x.shape)}"
                )
            for i, size in enumerate(sample):
                if size is not None and x.shape[x.dim() - r + i] != size:
                    raise DeepensError(
                        f"x: expected shape {shared_txt} or {member_txt}; axis {x.dim() - r + i} has size "
                        f"{x.shape[x.dim() - r + i]}, expected {size}"
                    )
        elif per_member is None:
            per_member = False
        if per_member and (x.dim() < 2 or x.shape[0] != m):
            raise DeepensError(
                f"x: a per-member input must have the {m} members on its first axis, got shape {tuple(x.shape)}"
            )
        batch = x.shape[1] if per_member else x.shape[0]
        if batch == 0:
            raise DeepensError("x: expected at least one sample, got an empty batch")
        return bool(per_member)

    def forward(self, x: torch.Tensor, per_member: bool | None = None) -> torch.Tensor:
        """All members' outputs, shape (M, B, ...).

        ``x`` is (B, ...) shared by all members or (M, B, ...) one batch per member; when the sample
        shape is known it is inferred from the rank, otherwise pass ``per_member=True`` explicitly.
        """
        per_member = self._check_input(x, per_member)
        m = self.members
        if per_member:
            batch = x.shape[1]
            folded = x.reshape((m * batch,) + tuple(x.shape[2:]))
        else:
            batch = x.shape[0]
            folded = x
        if self.conv_strategy not in STRATEGIES:
            raise DeepensError(f"conv_strategy: expected one of {', '.join(STRATEGIES)}, got {self.conv_strategy!r}")
        self.ctx.shared = not per_member
        self.ctx.strategy = self.conv_strategy
        self.ctx.chunked = self._chunked(folded)  # decided before lean's own hooks go on
        try:
            if self._lean_now(folded):
                with lean(self._structure()[0]):
                    out = self._forward(folded)
            else:
                out = self._forward(folded)
        finally:
            self.ctx.shared = self.ctx.chunked = False
        return out.reshape((m, batch) + tuple(out.shape[1:]))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict_logits_mean(self, x: torch.Tensor, per_member: bool | None = None) -> torch.Tensor:
        """Mean of the members' outputs (B, ...): f_ens(x) = (1/M) Σ_α f_α(x) (EE §3)."""
        return self(x, per_member).mean(0)

    def predict_proba(self, x: torch.Tensor, per_member: bool | None = None) -> torch.Tensor:
        """Mean of the members' class probabilities (B, C): the ensemble's predictive distribution."""
        return torch.softmax(self(x, per_member), dim=-1).mean(0)

    def extra_repr(self) -> str:
        return f"members={self.members}"
