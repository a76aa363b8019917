"""Empirical NTK of ensembles (EE Eq. 9) and the interaction metrics of EE App. D.2, via torch.func.

For an ensemble with shared (common) parameters w and trainable individual parameters u_α,

    Θ_{αβ,ij}(x, x′) = γ(M)/M · Θ^com_{αβ,ij}(x, x′) + δ_{αβ} Θ^ind_{α,ij}(x, x′),
    Θ^com_{αβ,ij} = ∂f_{αi}(x)/∂w · ∂f_{βj}(x′)/∂w,   Θ^ind_{α,ij} = ∂f_{αi}(x)/∂u_α · ∂f_{αj}(x′)/∂u_α.

Frozen modulations (buffers) do not enter. Jacobians come from ``torch.func.jacrev`` (vectorised
over the outputs) applied to chunks of inputs, so memory stays bounded by ``max_bytes``; kernels are
contractions of those Jacobians. Any ``nn.Module`` that is not a deepens ensemble is treated as a
single member whose parameters are all common (γ/M = 1): its ordinary empirical NTK.

Layouts (member axes first): ``"trace"`` (M, M, N1, N2) traced over outputs; ``"full"``
(M, M, N1, N2, C, C); ``"diagonal"`` (M, M, N1, N2, C), the output-diagonal entries Θ_{ii}.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jacrev
from torch.nn import functional as F

from ..ensembles.base import Ensemble, plain_modules
from ..errors import DeepensError, check_choice, check_int
from ..layers.members import ModulatedReadout, Modulation, StackedConv, StackedLinear

__all__ = [
    "EnsembleNTK",
    "ensemble_ntk",
    "loss_ntk",
    "cross_to_same_ratio",
    "interaction_ratio",
    "gradient_cosines",
    "gradient_cosine_vs_width",
]

MODES = ("trace", "full", "diagonal")
_UNSET = object()
METHODS = ("auto", "jacobian", "structured")


@dataclass
class EnsembleNTK:
    """The two parts of an ensemble's NTK and their weights.

    ``common`` (M, M, N1, N2, ...) comes from shared parameters (unweighted); ``individual``
    (M, N1, N2, ...) from each member's trainable individual parameters (only α = β is non-zero);
    ``common_weight`` is γ(M)/M.
    """

    common: torch.Tensor
    individual: torch.Tensor
    common_weight: float
    mode: str

    @property
    def members(self) -> int:
        return self.common.shape[0]

    def total(self) -> torch.Tensor:
        """Θ_{αβ} = γ/M Θ^com_{αβ} + δ_{αβ} Θ^ind_α, shape (M, M, N1, N2, ...)."""
        out = self.common * self.common_weight
        idx = torch.arange(self.members)
        out[idx, idx] = out[idx, idx] + self.individual
        return out

    def same_member(self) -> torch.Tensor:
        """Mean over α of Θ_{αα}, shape (N1, N2, ...)."""
        idx = torch.arange(self.members)
        return (self.common[idx, idx] * self.common_weight + self.individual).mean(0)

    def cross_member(self) -> torch.Tensor:
        """Mean over α ≠ β of Θ_{αβ} = γ/M Θ^com_{αβ}, shape (N1, N2, ...); zeros for a single member."""
        m = self.members
        if m < 2:
            return torch.zeros_like(self.individual[0])
        idx = torch.arange(m)
        # Σ_{α≠β} = Σ_{all} − Σ_{α=β}, without materialising the (M, M, ...) total
        off = self.common.sum((0, 1)) - self.common[idx, idx].sum(0)
        return off * self.common_weight / (m * (m - 1))


def _split_parameters(model: nn.Module) -> tuple[dict, dict, dict, float, int]:
    """Common and individual trainable parameters, the buffers, γ/M and M."""
    if isinstance(model, Ensemble):
        common = {n: p for n, p in model.named_shared_parameters() if p.requires_grad}
        individual = {n: p for n, p in model.named_individual_parameters() if p.requires_grad}
        return common, individual, dict(model.named_buffers()), 1.0, model.members
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return params, {}, dict(model.named_buffers()), 1.0, 1


def _member_outputs(model: nn.Module, is_ensemble: bool) -> Callable:
    def f(params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (params, buffers), (x,))
        if not is_ensemble:
            out = out.unsqueeze(0)
        return out.reshape(out.shape[0], out.shape[1], -1)  # (M, B, C)

    return f


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class _Jacobians:
    """Per-chunk Jacobians of member outputs (M, B, C) w.r.t. common / individual parameters."""

    def __init__(self, model: nn.Module, scalar_fn: Callable | None = None) -> None:
        self.model = model
        self.is_ensemble = isinstance(model, Ensemble)
        self.common, self.individual, self.buffers, _, self.m = _split_parameters(model)
        self.f = _member_outputs(model, self.is_ensemble)
        self.scalar_fn = scalar_fn
        self.vmappable = True  # until per_sample fails for this network

    def outputs(self, x: torch.Tensor, extra) -> Callable:
        if self.scalar_fn is None:
            return lambda params, xx: self.f(params, self.buffers, xx)
        return lambda params, xx: self.scalar_fn(self.f(params, self.buffers, xx), extra)  # (M, B, 1)


    @torch.no_grad()
    def best(self, x: torch.Tensor, extra=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-input Jacobians (:meth:`per_sample`) when the network runs under ``vmap``, else the chunk method;
        the first failure switches this object to the chunk method for good."""
        if self.vmappable:
            try:
                return self.per_sample(x, extra)
            except (RuntimeError, NotImplementedError, ValueError, TypeError):
                self.vmappable = False
        return self(x, extra)

    def per_sample(self, x: torch.Tensor, extra=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The Jacobians of :meth:`__call__` from one Jacobian per input, vectorised over the inputs with
        ``vmap`` (the torch.func recipe): each input's cotangents go back through that input alone, where the
        chunk method sends all of a chunk's cotangents through the whole chunk. Raises when the network does
        not run under ``vmap``."""
        from torch.func import vmap

        scalar_fn, f, buffers = self.scalar_fn, self.f, self.buffers

        def single(params: dict, xb: torch.Tensor, eb) -> torch.Tensor:  # (M, C) for one input
            out = f(params, buffers, xb.unsqueeze(0))
            if scalar_fn is not None:
                out = scalar_fn(out, eb.unsqueeze(0))
            return out[:, 0]

        dims = (0, None if extra is None else 0)
        common: list[torch.Tensor] = []
        individual: list[torch.Tensor] = []
        if self.common:
            jac = vmap(lambda xb, eb: jacrev(lambda p: single({**p, **self.individual}, xb, eb))(self.common),
                       in_dims=dims)(x, extra)
            common = [jac[n].reshape(*jac[n].shape[:3], -1).transpose(0, 1) for n in self.common]  # (M, B, C, P)
        if self.individual:
            jac = vmap(lambda xb, eb: jacrev(lambda p: single({**self.common, **p}, xb, eb).sum(0))(self.individual),
                       in_dims=dims)(x, extra)
            for n in self.individual:
                j = jac[n].reshape(*jac[n].shape[:2], self.m, -1)  # (B, C, M, P)
                individual.append(j.permute(2, 0, 1, 3))  # (M, B, C, P)
        return common, individual

    @torch.no_grad()  # torch.func still differentiates inside; no autograd graph is kept around the result
    def __call__(self, x: torch.Tensor, extra=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-parameter Jacobians (M, B, C, P_p) of the common and of the individual parameters.

        Common parameters need the Jacobian of every member's outputs (M·B·C cotangents). A member's
        outputs depend on its own individual parameters only, so ∂f_α/∂u_α is the Jacobian of the
        member-summed outputs Σ_α f_α (B·C cotangents): M times fewer backward passes and M times less
        memory than slicing the diagonal out of the full Jacobian.
        """
        fn = self.outputs(x, extra)
        common: list[torch.Tensor] = []
        individual: list[torch.Tensor] = []
        if self.common:
            jac = jacrev(lambda p: fn({**p, **self.individual}, x))(self.common)
            common = [jac[n].reshape(*jac[n].shape[:3], -1) for n in self.common]
        if self.individual:
            jac = jacrev(lambda p: fn({**self.common, **p}, x).sum(0))(self.individual)
            for n in self.individual:
                j = jac[n].reshape(*jac[n].shape[:2], self.m, -1)  # (B, C, M, P)
                individual.append(j.permute(2, 0, 1, 3))  # (M, B, C, P)
        return common, individual

    def member_groups_possible(self) -> bool:
        """Whether the Jacobians can be taken for a slice of the members alone: a deep ensemble (every parameter
        individual, every buffer with a leading member axis)."""
        from ..ensembles.deep import DeepEnsemble

        if not isinstance(self.model, DeepEnsemble) or self.common or not self.individual:
            return False
        stacked = tuple(f"net.{t}." for t in self.model._targets)
        return (all(p.requires_grad for p in self.model.parameters())  # frozen rows would not be sliced
                and all(n.startswith(stacked) and b.dim() > 0 and b.shape[0] == self.m
                        for n, b in self.buffers.items()))

    def members(self, start: int, stop: int) -> _Jacobians:
        """These Jacobians for members start..stop-1 alone (see :meth:`member_groups_possible`): their parameter
        and buffer rows, the ensemble run with that many members."""
        sub = copy.copy(self)
        sub.m = stop - start
        if sub.m == 1 and plain_modules(self.model.modules()):  # one member: through the reference network itself,
            return self._member(sub, start)                        # as the torch.func recipe does (no hooks to skip)
        sub.individual = {n: p[start:stop] for n, p in self.individual.items()}
        sub.buffers = {n: b[start:stop] for n, b in self.buffers.items()}
        inner, ctx = self.f, self.model.ctx

        def f(params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
            saved = ctx.members
            ctx.members = sub.m
            try:
                return inner(params, buffers, x)
            finally:
                ctx.members = saved

        sub.f = f
        return sub

    def _member(self, sub: _Jacobians, index: int) -> _Jacobians:
        """Member ``index``'s Jacobians through the reference network (the deep ensemble's template) with that
        member's parameters in the reference layout and shape, as the torch.func recipe does (no member axis to
        select under vmap, whose backward would write every per-input Jacobian once more). The parameters are the
        same numbers in another order, which no contraction over all of them sees."""
        model = self.model
        template = model._synced_template()
        state = {f"net.{target}.{attr}": value for target in model._targets
                 for attr, value in model.net.get_submodule(target).member_state(index).items()}
        sub.individual = {n: state[n].contiguous() for n in self.individual}
        sub.buffers = {n.removeprefix("net."): state[n] for n in self.buffers}

        def f(params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
            reference = {n.removeprefix("net."): v for n, v in params.items()}
            out = functional_call(template, (reference, buffers), (x,))
            return out.reshape(1, out.shape[0], -1)  # (1, B, C)

        sub.f = f
        return sub

    @property
    def n_common(self) -> int:
        return sum(p.numel() for p in self.common.values())

    @property
    def n_individual(self) -> int:
        return sum(p.numel() // self.m for p in self.individual.values())


def _contract(j1: torch.Tensor, j2: torch.Tensor, mode: str, cross: bool) -> torch.Tensor:
    """Kernel blocks from Jacobians (M, B1, C, P) and (M, B2, C, P).

    ``cross``: all member pairs (M, M, B1, B2, ...); else member-wise (M, B1, B2, ...).
    """
    m, b1, c, p = j1.shape
    b2 = j2.shape[1]
    if cross:
        if mode == "trace":
            k = j1.reshape(m * b1, c * p) @ j2.reshape(m * b2, c * p).T
            return k.view(m, b1, m, b2).permute(0, 2, 1, 3)
        if mode == "full":
            k = j1.reshape(m * b1 * c, p) @ j2.reshape(m * b2 * c, p).T
            return k.view(m, b1, c, m, b2, c).permute(0, 3, 1, 4, 2, 5)
        a = j1.permute(2, 0, 1, 3).reshape(c, m * b1, p)
        b = j2.permute(2, 0, 1, 3).reshape(c, m * b2, p)
        return torch.bmm(a, b.transpose(1, 2)).view(c, m, b1, m, b2).permute(1, 3, 2, 4, 0)
    if mode == "trace":
        return torch.bmm(j1.reshape(m, b1, c * p), j2.reshape(m, b2, c * p).transpose(1, 2))
    if mode == "full":
        k = torch.bmm(j1.reshape(m, b1 * c, p), j2.reshape(m, b2 * c, p).transpose(1, 2))
        return k.view(m, b1, c, b2, c).permute(0, 1, 3, 2, 4)
    k = torch.einsum("mbcp,mdcp->mbdc", j1, j2)
    return k


def _all_inputs(jacs: _Jacobians, x: torch.Tensor, extra, size: int) -> list[torch.Tensor]:
    """The individual Jacobians (M, N, C, P_p) of every input, computed in chunks of ``size`` inputs."""
    pieces = [jacs.best(x[s], None if extra is None else extra[s])[1] for s in _chunks(x.shape[0], size)]
    if len(pieces) == 1:
        return pieces[0]
    return [torch.cat(parts, dim=1) for parts in zip(*pieces, strict=True)]


def _member_kernel(j1: list[torch.Tensor], j2: list[torch.Tensor], mode: str, same: bool) -> torch.Tensor:
    """Σ_p J_p J′_pᵀ member by member from per-parameter Jacobians (M, N, C, P_p); one input set (``same``) in the
    full and trace modes forms the symmetric Gram from the blocks on and above its diagonal."""
    if not same or mode == "diagonal":
        return sum(_contract(a, b, mode, cross=False) for a, b in zip(j1, j2, strict=True))
    m, n, c = j1[0].shape[:3]
    rows = n * c if mode == "full" else n
    k = sum(_symmetric_gram(a.reshape(m, rows, -1)) for a in j1)
    return k.view(m, n, c, n, c).permute(0, 1, 3, 2, 4) if mode == "full" else k


def _transpose_block(block: torch.Tensor, mode: str, cross: bool) -> torch.Tensor:
    """The (x′, x) block from the (x, x′) block: swap members (cross), inputs and, in full mode, outputs."""
    if cross:
        perm = [1, 0, 3, 2] + ([5, 4] if mode == "full" else [4] if mode == "diagonal" else [])
    else:
        perm = [0, 2, 1] + ([4, 3] if mode == "full" else [3] if mode == "diagonal" else [])
    return block.permute(perm)


def _kernel(
    jacs: _Jacobians,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    mode: str,
    gamma: float | str | None,
    chunk_size: int | None,
    max_bytes: float,
    extra1=None,
    extra2=None,
) -> EnsembleNTK:
    """Blocked contraction of chunk Jacobians: a panel of x1-chunks is kept in memory (half the budget)
    while the x2-chunks stream past it, so each Jacobian is computed about (chunks / panel) times;
    with one input set only blocks on or above the diagonal are computed, the rest by symmetry."""
    same_inputs = x2 is None
    x2 = x1 if same_inputs else x2
    extra2 = extra1 if same_inputs else extra2
    m = jacs.m
    n1, n2 = x1.shape[0], x2.shape[0]
    dtype = next(iter({**jacs.common, **jacs.individual}.values())).dtype
    with torch.no_grad():
        probe = jacs.f({**jacs.common, **jacs.individual}, jacs.buffers, x1[:1])
    c = 1 if jacs.scalar_fn is not None else probe.shape[-1]
    itemsize = torch.finfo(dtype).bits // 8
    # per input: the common Jacobian (M, C, P_com) and the individual one (C, M·P_ind)
    per_input = max(c * (m * jacs.n_common + m * jacs.n_individual), 1) * itemsize
    # per-input Jacobians (vmap over the inputs) cost the same per input whatever the chunk, so chunks are as
    # large as the budget allows (64 at most); the fallback (jacrev on a whole chunk, for networks that do not
    # run under vmap) sends every cotangent through the whole chunk, so its chunks stay at 8 (measured); the
    # panel of kept chunks fills half the budget
    size = chunk_size or max(1, min(64 if jacs.vmappable else 8, int(max_bytes / 2 // per_input)))
    panel = max(1, int(max_bytes / 2 // (per_input * size)))
    tail = {"trace": (), "full": (c, c), "diagonal": (c,)}[mode]
    common = _common_zeros(bool(jacs.common), (m, m, n1, n2) + tail, dtype, x1.device)
    individual = torch.zeros((m, n1, n2) + tail, dtype=dtype, device=x1.device)

    def jac(x: torch.Tensor, extra, s: slice):
        return jacs.best(x[s], None if extra is None else extra[s])

    per_member = max(c * jacs.n_individual * (n1 + (0 if same_inputs else n2)), 1) * itemsize
    if jacs.member_groups_possible() and not chunk_size and per_member <= max_bytes / 2:
        # a deep ensemble: its kernel is member by member, so take one member at a time with the Jacobians of all
        # the inputs (each computed once, in the torch.func recipe's order; one member at a time measured faster
        # than several under vmap, 5.2 against 6.2 s for 8 MLPs and 0.31 against 0.46 s for 4 ConvNets)
        step = max(1, min(64 if jacs.vmappable else 8, int(max_bytes / 2 // max(c * jacs.n_individual * itemsize, 1))))
        for a in range(m):
            sub = jacs.members(a, a + 1)
            j1 = _all_inputs(sub, x1, extra1, step)
            j2 = j1 if same_inputs else _all_inputs(sub, x2, extra2, step)
            individual[a: a + 1] = _member_kernel(j1, j2, mode, same_inputs)
        return EnsembleNTK(common, individual, _common_weight(gamma, m), mode)

    chunks1 = list(_chunks(n1, size))
    chunks2 = list(_chunks(n2, size))
    for p0 in range(0, len(chunks1), panel):
        slices = chunks1[p0 : p0 + panel]
        held = [jac(x1, extra1, s1) for s1 in slices]
        for k2, s2 in enumerate(chunks2):
            if same_inputs and k2 < p0:
                continue  # filled by symmetry from an earlier panel
            j2 = held[k2 - p0] if same_inputs and k2 < p0 + len(slices) else jac(x2, extra2, s2)
            for k1, (s1, (jc1, ji1)) in enumerate(zip(slices, held, strict=True)):
                if same_inputs and p0 + k1 > k2:
                    continue  # below the diagonal
                jc2, ji2 = j2
                if jc1:  # Θ = Σ_p J_p J_pᵀ, parameter by parameter: no concatenated Jacobian
                    block = sum(_contract(a, b, mode, cross=True) for a, b in zip(jc1, jc2, strict=True))
                    common[:, :, s1, s2] = block
                    if same_inputs and s1 != s2:
                        common[:, :, s2, s1] = _transpose_block(block, mode, cross=True)
                if ji1:
                    block = sum(_contract(a, b, mode, cross=False) for a, b in zip(ji1, ji2, strict=True))
                    individual[:, s1, s2] = block
                    if same_inputs and s1 != s2:
                        individual[:, s2, s1] = _transpose_block(block, mode, cross=False)
    return EnsembleNTK(common, individual, _common_weight(gamma, m), mode)


def _common_zeros(needed: bool, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
    """The common kernel's accumulator; without shared parameters a stride-0 view of one zero, so a deep
    ensemble of thousands of members never allocates its (M, M, N1, N2) block of zeros."""
    if needed:
        return torch.zeros(shape, dtype=dtype, device=device)
    return torch.zeros((), dtype=dtype, device=device).expand(shape)


_CONVS = (nn.Conv1d, nn.Conv2d, StackedConv)

#: How the structured method contracts a convolution (tests force one): ``"auto"`` picks per layer the cheaper of
#: ``"patches"`` (per-example weight Jacobians Σ_p g_p ⊗ patch_p, then their Gram) and ``"positions"`` (Σ_{p,p′}
#: (g_p·g′_p′)(patch_p·patch′_p′) from the position Grams, for an own convolution whose Grams fit).
CONV_RULE = "auto"


def _conv_geometry(mod: nn.Module) -> tuple[tuple[int, ...], ...] | None:
    """(kernel, stride, padding, dilation) as 2-D tuples for ``F.unfold``, or None where the structured rule does
    not apply (groups, circular padding, asymmetric 'same' padding)."""
    if mod.groups != 1 or getattr(mod, "padding_mode", "zeros") != "zeros":
        return None
    weight = mod.weight
    kernel = tuple(weight.shape[3:] if isinstance(mod, StackedConv) else weight.shape[2:])
    dims = len(kernel)
    if dims not in (1, 2):
        return None

    def as_tuple(value) -> tuple[int, ...]:
        return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims

    stride, dilation = as_tuple(mod.stride), as_tuple(mod.dilation)
    if isinstance(mod.padding, str):
        total = [0 if mod.padding == "valid" else d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        if any(t % 2 for t in total):  # 'same' with an asymmetric padding
            return None
        padding = tuple(t // 2 for t in total)
    else:
        padding = as_tuple(mod.padding)
    lift = (1,) * (2 - dims)  # a 1-D convolution as a 2-D one of height 1
    return lift + kernel, lift + stride, (0,) * (2 - dims) + padding, lift + dilation


def _structured_eligible(model: nn.Module) -> bool:
    """Dense and convolutional networks: every trainable parameter in a Linear / StackedLinear / convolution
    (1-D or 2-D, one group, zero padding) / Modulation whose forward runs, and nothing that couples samples (batch
    norm)."""
    from ..ensembles.vectorize import VectorizedEnsemble

    if isinstance(model, VectorizedEnsemble):  # its modules run inside vmap
        return False
    owners = {}
    for module in model.modules():
        if isinstance(module, ModulatedReadout) or isinstance(module, nn.modules.batchnorm._BatchNorm):
            return False
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                owners[id(p)] = module
    for module in owners.values():
        if isinstance(module, _CONVS):
            if _conv_geometry(module) is None:
                return False
        elif not isinstance(module, (nn.Linear, StackedLinear, Modulation)):
            return False
    return bool(owners)


def _structured_kernel(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None, mode: str,
                       gamma) -> EnsembleNTK:
    """Layer-wise NTK (EE Eq. 9) of dense and convolutional networks: a dense weight W with forward multiplier s
    adds s² (a_α(x)·a_β(x′)) (g_{αi}(x)·g_{βj}(x′)) and a bias s_b² (g_{αi}(x)·g_{βj}(x′)), where a is the layer's
    input and g_i = ∂f_i/∂z its output signal; a convolution's weight adds s² ⟨J_{αi}(x), J_{βj}(x′)⟩ with the
    per-example Jacobian J_i = Σ_p g_{i,p} ⊗ patch_p (positions p) — or, for an own convolution where it is
    cheaper, the same as s² Σ_{p,p′} (g_{αi,p}(x)·g_{αj,p′}(x′)) (patch_p(x)·patch_p′(x′)) (:func:`_conv_rule`);
    its bias s_b² (Σ_p g_{αi,p}(x))·(Σ_p′ g_{βj,p′}(x′)); a trainable modulation y = u ⊙ z adds
    ((g_i ⊙ z)_α(x)·(g_j ⊙ z)_α(x′)), summed over positions first for a per-channel one. A readout's signals
    are the outputs (g_i = e_i): its Gram is δ_ij. One forward pass and one backward pass per output; a full
    kernel of one input set is symmetric and formed in blocks on and above the diagonal."""
    is_ensemble = isinstance(model, Ensemble)
    m = model.members if is_ensemble else 1
    shared_ids = {id(p) for _, p in model.named_shared_parameters()} if is_ensemble else None
    n1 = x1.shape[0]
    xs = x1 if x2 is None else torch.cat([x1, x2])
    n = xs.shape[0]
    records: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    def hook(module, inputs, output):
        records.append((module, inputs[0], output))
        return output.clone()  # what follows (an in-place activation) changes the copy, not the recorded output

    handles = [mod.register_forward_hook(hook) for mod in model.modules()
               if isinstance(mod, (nn.Linear, StackedLinear, Modulation) + _CONVS)]
    lean = model.__dict__.get("lean", _UNSET)
    strategy = model.__dict__.get("conv_strategy", _UNSET)
    if is_ensemble:  # the plain graph: a lean forward fuses modulations into one function the hooks do not see,
        model.lean = False  # and a forward member by member would call each hooked layer once per member
        model.conv_strategy = "members"
    try:
        with torch.enable_grad():
            if is_ensemble:
                out = model(xs.unsqueeze(0).expand((m,) + tuple(xs.shape)), per_member=True)  # members apart
            else:
                out = model(xs).unsqueeze(0)
            out = out.reshape(m, n, -1)
            c = out.shape[-1]
            active = [(mod, a, z) for mod, a, z in records if z.requires_grad]
            grads = []
            for i in range(c):
                gi = torch.autograd.grad(out[..., i].sum(), [z for _, _, z in active], retain_graph=i < c - 1,
                                         allow_unused=True)
                grads.append([g if g is not None else torch.zeros_like(z) for g, (_, _, z) in zip(gi, active,
                                                                                                 strict=True)])
    finally:
        for h in handles:
            h.remove()
        if is_ensemble:
            for name, value in (("lean", lean), ("conv_strategy", strategy)):
                if value is _UNSET:
                    delattr(model, name)
                else:
                    setattr(model, name, value)
    dtype = out.dtype
    tail = {"trace": (), "full": (c, c), "diagonal": (c,)}[mode]
    n2 = n - n1 if x2 is not None else n
    has_common = any(not isinstance(mod, Modulation) and not (isinstance(mod, (StackedLinear, StackedConv)) or (
        is_ensemble and id(mod.weight) not in shared_ids)) for mod, _, _ in active)
    full = mode == "full"
    common = _common_zeros(has_common, (m, m, n1, n2) + tail, dtype, out.device)
    individual = torch.zeros((m, n1, n2) + tail, dtype=dtype, device=out.device)
    # the kernels are held in EnsembleNTK's layout (..., N1, N2, C, C) and accumulated through views in the layout
    # the Gram matmuls produce, (..., N1, C, N2, C): no permuted copy of the kernel at the end
    acc_individual = individual.transpose(-3, -2) if full else individual
    acc_common = common.transpose(-3, -2) if full else common
    right = slice(n1, n) if x2 is not None else slice(0, n)

    symmetric = full and x2 is None  # the individual kernel is symmetric: its upper blocks of samples suffice
    blocks = _blocks(n, max(1, min(8, n, n * c // 64)))  # samples in blocks of ≥ 64 rows (measured best here)

    def gram(gs: torch.Tensor, members_cross: bool) -> torch.Tensor:
        """Σ_w gs[α, x, i, w] gs[β, x′, j, w] for the output pairs (i, j) the mode needs, from (M, N, C, W): each
        member's rows (x, i) are contiguous, so the contraction is one batched matmul without copies."""
        if x2 is None and full and members_cross:  # a symmetric Gram: its upper blocks only
            k = _symmetric_gram(gs.reshape(1, -1, gs.shape[-1]))
            return k.reshape(m, n, c, m, n, c).permute(0, 3, 1, 2, 4, 5)
        left_g, right_g = gs[:, :n1], gs[:, right]
        if members_cross:
            if full:
                return torch.einsum("amiw,bkjw->abmikj", left_g, right_g)
            k = torch.einsum("amiw,bkiw->abmki", left_g, right_g)
            return k.sum(-1) if mode == "trace" else k
        if full:
            return torch.einsum("amiw,akjw->amikj", left_g, right_g)
        k = torch.einsum("amiw,akiw->amki", left_g, right_g)
        return k.sum(-1) if mode == "trace" else k

    def expand(gram_a: torch.Tensor) -> torch.Tensor:
        """An input Gram (M, N1, N2) or (M, M, N1, N2) broadcast against the signal Grams."""
        if full:
            return gram_a.unsqueeze(-1).unsqueeze(-3)
        return gram_a.reshape(gram_a.shape + (1,) * len(tail))

    def accumulate(gs: torch.Tensor, own: bool, terms: list[tuple[torch.Tensor | None, float]]) -> None:
        """(individual if own else common) += Σ scale · factor ⊙ Gram(gs) over ``terms`` (factor: an input Gram, or
        None for 1), in one pass over the kernel (the terms' factors summed first). An own symmetric full Gram
        (x2 = x1) is formed and added only in the blocks on and above the diagonal of ``blocks`` (up to 44 % fewer
        multiply-adds); the blocks below are filled from them once, at the end."""
        target = acc_individual if own else acc_common
        factor = None  # Σ scale · factor (an input Gram, broadcast), or the scalar Σ scale where no term has one
        scalar = sum(scale for f, scale in terms if f is None)
        for f, scale in terms:
            if f is not None:
                factor = f * scale if factor is None else factor.add_(f, alpha=scale)
        if factor is not None and scalar:
            factor.add_(scalar)

        def add(view: torch.Tensor, k: torch.Tensor, part) -> None:
            if factor is None:
                view.add_(k, alpha=scalar)
            else:
                view.addcmul_(part, k)

        if own and symmetric:
            rows = gs.reshape(m, n * c, -1)
            for i, xa in enumerate(blocks):
                for xb in blocks[i:]:
                    block = torch.bmm(rows[:, xa.start * c: xa.stop * c], rows[:, xb.start * c: xb.stop * c].mT)
                    block = block.reshape(m, xa.stop - xa.start, c, xb.stop - xb.start, c)
                    part = None if factor is None else factor[:, xa, xb].unsqueeze(-1).unsqueeze(-3)
                    add(target[:, xa, :, xb, :], block, part)
            return
        add(target, gram(gs, not own), None if factor is None else expand(factor))

    def accumulate_identity(own: bool, terms: list[tuple[torch.Tensor | None, float]]) -> None:
        """The same for a layer whose output signals are the outputs themselves (a readout: g_i = e_i, so the
        signal Gram is δ_ij): onto the output diagonal only."""
        target = individual if own else common
        if full:
            target = torch.diagonal(target, dim1=-2, dim2=-1)  # (..., N1, N2, C)
        for factor, scale in terms:
            value = torch.ones((), dtype=dtype, device=out.device) if factor is None else factor
            value = value * (scale * (c if mode == "trace" else 1))
            target.add_(value.unsqueeze(-1) if mode != "trace" and value.dim() else value)

    for index, (mod, a, _) in enumerate(active):
        g = [grads[i][index] for i in range(c)]
        if isinstance(mod, Modulation):
            if not mod.trainable:
                continue
            modulated = a.detach()  # ∂f/∂u_j = g_j · (the modulation's input)_j, summed over positions
            gz = [gi * modulated for gi in g]
            if mod.feature_dim != -1:
                gz = [v.reshape(v.shape[0], v.shape[1], -1).sum(-1) for v in gz]
            accumulate(torch.stack([v.reshape(m, n, -1) for v in gz], dim=2), True, [(None, 1.0)])
            continue
        # frozen weights or biases do not enter (a layer is hooked when anything before it trains)
        weight_scale = float(getattr(mod, "weight_scale", 1.0)) if mod.weight.requires_grad else 0.0
        bias_scale = float(getattr(mod, "bias_scale", 1.0))
        has_bias = mod.bias is not None and mod.bias.requires_grad
        if weight_scale == 0.0 and not has_bias:
            continue
        own = isinstance(mod, (StackedLinear, StackedConv)) or (is_ensemble and id(mod.weight) not in shared_ids)
        # individual weights pair a member with itself; shared weights pair every two members
        if isinstance(mod, _CONVS):
            kernel, stride, padding, dilation = _conv_geometry(mod)
            x_in = a.detach()
            patches = F.unfold(x_in.unsqueeze(2) if x_in.dim() == 3 else x_in, kernel, dilation=dilation,
                               padding=padding, stride=stride)  # (M·N, C_in·k, P)
            signals = torch.stack([gi.detach().reshape(gi.shape[0], gi.shape[1], -1) for gi in g], dim=1)
            # (M·N, C, C_out, P)
            rule = _conv_rule(c, m, n1, n2, patches.shape[2], patches.shape[1], signals.shape[2], mode) if own \
                else "patches"
            if weight_scale and rule == "positions":
                gram_w = _positions_gram(signals, patches, m, n, n1, right, mode)
                individual.add_(gram_w, alpha=weight_scale**2)
            elif weight_scale:  # per-example Jacobians Σ_p g_p ⊗ patch_p, (M·N, C, C_out·C_in·k), one batched matmul
                jac = torch.bmm(signals.reshape(m * n, -1, signals.shape[-1]), patches.transpose(1, 2))
                accumulate(jac.reshape(m, n, c, -1), own, [(None, weight_scale**2)])
            if has_bias:
                accumulate(signals.sum(-1).reshape(m, n, c, -1), own, [(None, bias_scale**2)])
        else:
            act = a.detach().reshape(m, n, -1)
            gram_a = torch.einsum("amp,akp->amk" if own else "amp,bkp->abmk", act[:, :n1], act[:, right])
            terms = [(gram_a, weight_scale**2)] if weight_scale else []
            if has_bias:
                terms.append((None, bias_scale**2))
            signals = torch.stack([gi.detach().reshape(m, n, -1) for gi in g], dim=2)  # (M, N, C, C_out)
            if signals.shape[-1] == c and torch.equal(signals, torch.eye(c, dtype=dtype, device=out.device)
                                                      .expand_as(signals)):
                accumulate_identity(own, terms)
            else:
                accumulate(signals, own, terms)
    if symmetric:  # the blocks below the diagonal from those above (only the upper ones were accumulated)
        for i, xa in enumerate(blocks):
            for xb in blocks[i + 1:]:
                individual[:, xb, xa] = individual[:, xa, xb].permute(0, 2, 1, 4, 3)
    return EnsembleNTK(common, individual, _common_weight(gamma, m), mode)


def _symmetric_gram(rows: torch.Tensor) -> torch.Tensor:
    """rows @ rowsᵀ of (B, R, W) from the blocks on and above the diagonal (up to 8 × 8 blocks of ≥ 160 rows: up
    to 44 % fewer multiply-adds than the full product); the blocks below are their transposes."""
    r = rows.shape[1]
    blocks = _blocks(r, max(1, min(8, r // 160)))  # blocks of ≥ 160 rows keep the matmuls efficient (measured)
    out = rows.new_empty((rows.shape[0], r, r))
    for i, a in enumerate(blocks):
        for b in blocks[i:]:
            block = torch.bmm(rows[:, a], rows[:, b].transpose(1, 2))
            out[:, a, b] = block
            if b != a:
                out[:, b, a] = block.transpose(1, 2)
    return out


def _blocks(count: int, parts: int) -> list[slice]:
    """``count`` indices in ``parts`` consecutive blocks of near-equal size."""
    edges = [round(i * count / parts) for i in range(parts + 1)]
    return [slice(edges[i], edges[i + 1]) for i in range(parts)]


def _conv_rule(c: int, m: int, n1: int, n2: int, p: int, k: int, c_out: int, mode: str) -> str:
    """The cheaper contraction of an own convolution (multiply-adds, :data:`CONV_RULE` unless ``"auto"``):
    patches — form C Jacobians (C·M·N·C_out·k·P) and their Grams (M·(C·N1)(C·N2)·C_out·k, C times fewer off
    the full mode); positions — the patch Grams (M·N1·N2·P²·k) and the signal Grams (M·(C·N1·P)(C·N2·P)·C_out,
    likewise) — chosen only while one member's signal Gram holds at most 2^24 numbers."""
    if CONV_RULE != "auto":
        return CONV_RULE
    outputs = c * c if mode == "full" else c
    patches = c * m * (n1 + n2) * c_out * k * p + m * outputs * n1 * n2 * c_out * k
    positions = m * n1 * n2 * p * p * (k + outputs * (c_out + 1))
    fits = outputs * n1 * n2 * p * p <= 2**24
    return "positions" if fits and positions < patches else "patches"


def _positions_gram(signals: torch.Tensor, patches: torch.Tensor, m: int, n: int, n1: int, right: slice,
                    mode: str) -> torch.Tensor:
    """Σ_{p,p′} (g_i(x)_p · g_j(x′)_p′)(patch_p(x) · patch_p′(x′)) of an own convolution from its signals (M·N, C,
    C_out, P) and patches (M·N, C_in·k, P), member by member, in the layout of the signal Grams ((M, N1, N2) + the
    mode's output axes)."""
    c, p = signals.shape[1], signals.shape[-1]
    act = patches.reshape(m, n, -1, p)
    sig = signals.reshape(m, n, c, -1, p)
    out = []
    for a in range(m):
        gram_a = torch.einsum("xkp,ykq->xpyq", act[a, :n1], act[a, right])  # (N1, P, N2, P)
        left, other = sig[a, :n1], sig[a, right]
        if mode == "full":
            gram_g = torch.einsum("xiop,yjoq->xipyjq", left, other)
            out.append(torch.einsum("xipyjq,xpyq->xyij", gram_g, gram_a))
        else:
            gram_g = torch.einsum("xiop,yioq->xipyq", left, other)
            k_diag = torch.einsum("xipyq,xpyq->xyi", gram_g, gram_a)
            out.append(k_diag.sum(-1) if mode == "trace" else k_diag)
    return torch.stack(out)


def _common_weight(gamma, m: int) -> float:
    if gamma is None:
        return 1.0
    if isinstance(gamma, str):
        return 1.0 if gamma.strip().upper() == "M" else float(gamma) / m
    return float(gamma) / m


def ensemble_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    mode: str = "trace",
    gamma: float | str | None = "M",
    chunk_size: int | None = None,
    max_bytes: float = 1024 * 2**20,
    method: str = "auto",
) -> EnsembleNTK:
    """The empirical NTK of ``model`` between inputs ``x1`` and ``x2`` (default ``x1``), EE Eq. (9).

    ``gamma`` is γ(M) of EE Eq. (4) ("M" — the default, weight γ/M = 1 — , 1, or a number); the
    common part is weighted by γ/M in :meth:`EnsembleNTK.total`. ``mode`` is ``trace``, ``full`` or
    ``diagonal``. Inputs are one batch shared by all members. Evaluates in float64 when the model is.

    ``method``: ``jacobian`` contracts Jacobians from ``torch.func.jacrev`` (any network, memory bounded
    by chunking over inputs); ``structured`` uses the layer-wise factorisation of dense and convolutional
    networks (one forward and C backward passes, O(M²N²·width) for dense layers — orders of magnitude cheaper
    for wide MLPs — and per-example patch Jacobians or position Grams for convolutions); ``auto`` picks
    ``structured`` when every trainable parameter sits in a dense layer, a one-group zero-padded 1-D / 2-D
    convolution or a modulation and nothing couples samples (no batch norm).
    """
    check_choice("mode", mode, MODES)
    check_choice("method", method, METHODS)
    if not isinstance(x1, torch.Tensor) or (x2 is not None and not isinstance(x2, torch.Tensor)):
        raise DeepensError("x1, x2: expected tensors of inputs (N, ...)")
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, minimum=1)
    was_training = model.training
    model.eval()
    try:
        if not any(p.requires_grad for p in model.parameters()):
            raise DeepensError("model: has no trainable parameters, so its NTK is zero")
        if any(isinstance(mod, Modulation) and mod.resample for mod in model.modules()):
            raise DeepensError("model: masks redrawn at every forward (resample=True) have no fixed NTK; "
                               "use fixed masks")
        eligible = _structured_eligible(model)
        if method == "structured" and not eligible:
            raise DeepensError("method: 'structured' needs a dense or convolutional network (Linear, one-group "
                               "zero-padded Conv1d/Conv2d and modulations only, no batch norm); use "
                               "method='jacobian'")
        if method == "structured" or (method == "auto" and eligible):
            return _structured_kernel(model, x1, x2, mode, gamma)
        return _kernel(_Jacobians(model), x1, x2, mode, gamma, chunk_size, max_bytes)
    finally:
        model.train(was_training)


def _nll_scalar(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # per-sample cross-entropy of every member: its gradient is Σ_i (p_i − δ_ic) ∂f_i, EE Eq. (59)
    logp = torch.log_softmax(out, dim=-1)
    return -logp.gather(2, labels.view(1, -1, 1).expand(out.shape[0], -1, 1))


def _target_scalar(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # the logit of the target class, EE Eq. (60)
    return out.gather(2, labels.view(1, -1, 1).expand(out.shape[0], -1, 1))


def loss_ntk(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    kind: str = "nll",
    gamma: float | str | None = "M",
    chunk_size: int | None = None,
    max_bytes: float = 1024 * 2**20,
) -> EnsembleNTK:
    """The "nll" (EE Eq. 59) or "target" (Eq. 60) reduction of the ensemble NTK, (M, M, N, N).

    nll: Θ^nll_{αβ}(x_a, x_b) = Σ_{ij} ∂L/∂f_{αi}(x_a) Θ_{ij,αβ}(x_a, x_b) ∂L/∂f_{βj}(x_b), computed as the
    kernel of the per-sample cross-entropy gradients. target: Θ_{c_a c_b, αβ}(x_a, x_b).
    """
    check_choice("kind", kind, ("nll", "target"))
    labels = labels.long()
    if labels.shape != (x.shape[0],):
        raise DeepensError(f"labels: expected shape ({x.shape[0]},), got {tuple(labels.shape)}")
    was_training = model.training
    model.eval()
    try:
        jacs = _Jacobians(model, _nll_scalar if kind == "nll" else _target_scalar)
        return _kernel(jacs, x, None, "trace", gamma, chunk_size, max_bytes, extra1=labels)
    finally:
        model.train(was_training)


def cross_to_same_ratio(kernel: torch.Tensor) -> float:
    """Mean squared cross-member entry over mean squared same-member entry (EE App. D.2, first metric).

    ``kernel`` is (M, M, N1, N2, ...) (e.g. ``EnsembleNTK.total()``).
    """
    m = kernel.shape[0]
    if m < 2:
        return float("nan")
    sq = kernel.pow(2).flatten(2).mean(-1)  # (M, M)
    eye = torch.eye(m, dtype=torch.bool, device=kernel.device)
    return float(sq[~eye].mean() / sq[eye].mean())


def interaction_ratio(kernel: torch.Tensor, m_subset: int) -> float:
    """EE Eq. (62): the weight of the other members' contributions to a member's loss change,

        Σ_{α,a} ((1/B) Σ_b Σ_{β∈B_{m,α}} Θ_{αβ}(x_a, x_b))² / Σ_{α,a} ((1/B) Σ_b Θ_{αα}(x_a, x_b))²,

    with B_{m,α} = the m members following α cyclically. ``kernel`` is (M, M, N, N) (nll or target).
    """
    m = kernel.shape[0]
    m_subset = check_int("m", m_subset, minimum=1)
    if m_subset > m - 1:
        raise DeepensError(f"m: expected at most {m - 1} (other members), got {m_subset}")
    row = kernel.mean(dim=3)  # (M, M, N): (1/B) Σ_b Θ_{αβ}(x_a, x_b)
    idx = torch.arange(m, device=kernel.device)
    same = row[idx, idx]  # (M, N)
    others = sum(row[idx, (idx + k) % m] for k in range(1, m_subset + 1))
    return float(others.pow(2).sum() / same.pow(2).sum())


def member_gradients(model: Ensemble, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """∇_w L_α for every member α w.r.t. the shared parameters w, flattened: (M, P) (EE Eq. 3; the rows
    whose norms EE Fig. 6 (left) histograms and whose cosines Fig. 6 (centre, right) averages)."""
    from ..training.losses import member_losses

    if not isinstance(model, Ensemble):
        raise DeepensError("model: member gradients need a deepens ensemble with shared parameters")
    shared = {n: p for n, p in model.named_shared_parameters() if p.requires_grad}
    if not shared:
        raise DeepensError("model: has no shared parameters (a deep ensemble's members share nothing)")
    others = {n: p for n, p in model.named_parameters() if n not in shared}
    buffers = dict(model.named_buffers())

    def losses(p):
        out = functional_call(model, ({**p, **others}, buffers), (x,))
        return member_losses(out, y, loss)

    with torch.no_grad():
        jac = jacrev(losses)(shared)
    return torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=1)


def gradient_cosines(model: Ensemble, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """|⟨∇L_α, ∇L_β⟩| / (‖∇L_α‖ ‖∇L_β‖) for all member pairs, w.r.t. the shared parameters (EE Fig. 6).

    Returns the (M, M) matrix; its off-diagonal mean is the paper's quantity.
    """
    g = member_gradients(model, x, y, loss)
    norms = g.norm(dim=1).clamp_min(torch.finfo(g.dtype).tiny)
    return (g @ g.T).abs() / torch.outer(norms, norms)


def gradient_cosine_vs_width(
    build: Callable[[float, int], Ensemble],
    widths: list[float],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seeds: int = 3,
) -> dict:
    """Mean off-diagonal gradient cosine at initialisation for each width (several seeds), and the
    least-squares fit of log(cosine) = a + b·log(width) (EE Fig. 6: b ≈ −1 for centred modulations).

    ``build(width, seed)`` returns a freshly initialised ensemble.
    """
    rows = []
    for width in widths:
        values = []
        for seed in range(seeds):
            model = build(width, seed)
            cos = gradient_cosines(model, x, y)
            m = cos.shape[0]
            values.append(float(cos[~torch.eye(m, dtype=torch.bool)].mean()))
        t = torch.tensor(values, dtype=torch.float64)
        rows.append({"width": width, "mean": float(t.mean()), "std": float(t.std()) if seeds > 1 else 0.0})
    lw = torch.tensor([math.log(r["width"]) for r in rows], dtype=torch.float64)
    lc = torch.tensor([math.log(max(r["mean"], 1e-300)) for r in rows], dtype=torch.float64)
    if len(rows) >= 2:
        a = torch.stack([torch.ones_like(lw), lw], dim=1)
        coef = torch.linalg.lstsq(a, lc[:, None]).solution.flatten()
        fit = {"intercept": float(coef[0]), "slope": float(coef[1])}
    else:
        fit = {"intercept": float("nan"), "slope": float("nan")}
    return {"rows": rows, "fit": fit}
