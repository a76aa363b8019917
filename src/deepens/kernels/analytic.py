"""Analytic infinite-width NNGP and NTK of dense and convolutional (embedded-ensemble) networks.

Conventions (those of neural-tangents' ``stax``, see :mod:`deepens.kernels.network`): the input kernel is
x·x′/C per pair of positions; a dense or convolutional layer maps nngp → σ_w²·L(nngp) + σ_b² and, under
the NTK parameterization, ntk → nngp′ + σ_w²·L(ntk), where L is the identity for a dense layer and the
window average over the same offsets for a convolution; an activation maps nngp → E[φ(z)φ(z′)] and
ntk → ntk·E[φ′(z)φ′(z′)] entry by entry; average pooling averages both positions over their windows,
global average pooling over all position pairs, and flattening over the same-position pairs.

Convolutional kernels are carried for every pair of positions (p, p′): a tensor (N1, N2, H, W, H, W) per
kernel, computed block by block over input pairs so that memory stays under ``memory``. When nothing mixes
positions (no pooling; the readout flattens), only the same-position pairs are needed and the kernel is
(N1, N2, H, W) (neural-tangents' ``diagonal_spatial``): O(P) instead of O(P²) per input pair.

Embedded ensembles (EE Props. 3-4, derived anew; per channel for convolutions): hidden layer l may carry a
pre-activation modulation v and a post-activation modulation u, x_α = u_α ⊙ φ(v_α ⊙ z_α). With the duals
Φ, Ṫ, Φz of :mod:`deepens.kernels.duals` (same member: one draw of v; two members: independent draws):

    same member  Σ′ = σ_w² U₂ L(Φ) + σ_b²                 cross  Σ′ = σ_w² U₁² L(Φ) + σ_b²
    common NTK   Θ′ = Σ′ + σ_w² U₂ L(Ṫ Θ)                         Θ′ = Σ′ + σ_w² U₁² L(Ṫ Θ)
    individual   Θ′ = σ_w² L(U₂ Ṫ Θ + T(u) Φ + T(v) U₂ Φz)          (same member only)

with U₁ = E[u], U₂ = E[u²], T(·) = 1 for trainable modulations. A modulation is shared by all positions of
its channel, so its individual term enters every position pair. The ensemble NTK is
Θ_{αβ} = γ(M)/M · Θ^com_{αβ} + δ_{αβ} Θ^ind (EE Eq. 9). Differences from the paper's statement: Ṫ is
E[v₁v₂ φ′(v₁z) φ′(v₂z′)], which equals V₂·Φ̇ (Eq. 35) only when v can be pulled out of φ′; the
trainable-v term carries φ′ (Eq. 43 writes φ); σ_w², σ_b² and biases are included. Shared biases add
σ_b² to the cross-member kernels, so with a readout bias members are never exactly independent.
Modulations of the network's inputs / outputs are not covered: over finitely many coordinates their
kernel does not self-average (it stays random as the widths grow).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import (
    DeepensError,
    check_choice,
    check_int,
    check_real,
    parse_memory,  # noqa: F401 - re-exported
)
from .duals import Dual, Moments, dual_for
from .network import Activation, AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Modulate, Network

__all__ = ["InfiniteWidthKernels", "infinite_width_kernels", "parse_memory", "kernel_memory"]

DEFAULT_MEMORY = 2 * 1024**3
# Blocks are sized for the processor's caches, not to fill the budget: the recursion is a chain of elementwise
# passes, ~9× faster on tensors of a few MiB than on GiB-sized ones (8×8 images, 3 conv layers, CPU).
WORKING_SET = 64 * 1024**2
_LIVE = 16  # kernel-sized tensors alive at once (five kernels, padded copies, the duals' temporaries)


@dataclass
class InfiniteWidthKernels:
    """Same-member (α = β) and cross-member (α ≠ β) output kernels, and per-layer summaries."""

    nngp_same: np.ndarray
    nngp_cross: np.ndarray
    ntk_same_common: np.ndarray
    ntk_same_individual: np.ndarray
    ntk_cross_common: np.ndarray
    common_weight: float
    layers: list[dict]

    @property
    def ntk_same(self) -> np.ndarray:
        """Θ_{αα} = γ/M Θ^com + Θ^ind."""
        return self.common_weight * self.ntk_same_common + self.ntk_same_individual

    @property
    def ntk_cross(self) -> np.ndarray:
        """Θ_{αβ}, α ≠ β = γ/M Θ^com (individual parameters never couple two members)."""
        return self.common_weight * self.ntk_cross_common

    @property
    def ntk_same_weighted_common(self) -> np.ndarray:
        return self.common_weight * self.ntk_same_common


# -- linear maps of kernels over positions ------------------------------------------------------------
# A kernel tensor has ``lead`` leading axes (input pairs, or inputs for the self kernels) followed by the
# spatial axes of the first point and, unless diagonal, those of the second point.


def _pad(t: torch.Tensor, lead: int, copies: int, pads, mode: str) -> torch.Tensor:
    if not any(lo or hi for lo, hi in pads):
        return t
    if mode == "zeros":
        flat: list[int] = []
        for lo, hi in reversed(list(pads) * copies):
            flat += [lo, hi]
        return F.pad(t, flat)
    dims = len(pads)
    for c in range(copies):
        for d, (lo, hi) in enumerate(pads):
            axis = lead + c * dims + d
            n = t.shape[axis]
            if lo > n or hi > n:
                raise DeepensError(f"padding: circular padding {lo, hi} exceeds the size {n} of the feature map")
            parts = [t.narrow(axis, n - lo, lo)] if lo else []
            parts.append(t)
            if hi:
                parts.append(t.narrow(axis, 0, hi))
            t = torch.cat(parts, dim=axis)
    return t


def _out_size(n: int, k: int, s: int, d: int, lo: int, hi: int, what: str) -> int:
    out = (n + lo + hi - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise DeepensError(f"{what}: the window ({k}, dilation {d}) does not fit the feature map of size {n}")
    return out


def _window(start: int, size: int, stride: int) -> slice:
    return slice(start, start + stride * (size - 1) + 1, stride)


def _conv(t: torch.Tensor, lead: int, copies: int, op: Conv, out: tuple[int, ...]) -> torch.Tensor:
    """Σ_j K(s·p + d·j, s·p′ + d·j) / k over the window offsets j (the same j for both points), one spatial
    axis at a time (Σ_d k_d strided additions instead of Π_d k_d). Zero padding is not materialised: an offset
    adds only the output range whose source lies inside the map."""
    dims = op.dims
    for axis in range(dims):
        k, s, dil, (lo, hi) = op.kernel_size[axis], op.stride[axis], op.dilation[axis], op.padding[axis]
        size, n_out = t.shape[lead + axis], out[axis]
        axes = [lead + c * dims + axis for c in range(copies)]
        if op.padding_mode == "circular" and (lo or hi):
            pads = [(0, 0)] * dims
            pads[axis] = (lo, hi)
            t = _pad(t, lead, copies, pads, "circular")
            size, lo = t.shape[lead + axis], 0
        shape = list(t.shape)
        for a in axes:
            shape[a] = n_out
        acc = t.new_zeros(shape)
        for j in range(k):
            shift = dil * j - lo  # source index = s·o + shift
            first = max(0, -(shift // s))  # the first output whose source s·o + shift is >= 0
            last = min(n_out - 1, (size - 1 - shift) // s)
            if last < first:
                continue
            target = [slice(None)] * t.dim()
            source = [slice(None)] * t.dim()
            for a in axes:
                target[a] = slice(first, last + 1)
                source[a] = slice(s * first + shift, s * last + shift + 1, s)
            acc[tuple(target)] += t[tuple(source)]
        t = acc.div_(k)
    return t


def _pool(t: torch.Tensor, lead: int, copies: int, op: AvgPool, out: tuple[int, ...]) -> torch.Tensor:
    """The window average over each point's positions separately (zero padding counted)."""
    dims = op.dims
    t = _pad(t, lead, copies, [(p, p) for p in op.padding], "zeros")
    for c in range(copies):
        acc = None
        for j in itertools.product(*(range(k) for k in op.kernel_size)):
            spatial = tuple(_window(jj, o, s) for jj, o, s in zip(j, out, op.stride, strict=True))
            index = (slice(None),) * (lead + c * dims) + spatial
            piece = t[index]
            acc = piece.clone() if acc is None else acc.add_(piece)
        t = acc / math.prod(op.kernel_size)
    return t


def _same_positions(t: torch.Tensor, lead: int, spatial: tuple[int, ...]) -> torch.Tensor:
    """The same-position entries K(p, p) of a full kernel, shape lead + spatial."""
    p = math.prod(spatial)
    return t.reshape(tuple(t.shape[:lead]) + (p, p)).diagonal(dim1=-2, dim2=-1).reshape(
        tuple(t.shape[:lead]) + spatial)


# -- the plan: shapes through the network ----------------------------------------------------------------


def _normalised(network: Network) -> Network:
    """``network`` with every Flatten moved past the elementwise operations (activations, modulations) that
    follow it, to just before the next dense layer: an activation acts on each flattened feature, i.e. on the
    kernel of each position before the same-position kernels are averaged (φ of the mean is not the mean of φ)."""
    ops: list = []
    deferred: list = []
    for op in network.ops:
        if isinstance(op, Flatten):
            deferred.append(op)
        elif deferred and isinstance(op, (Activation, Modulate)):
            ops.append(op)
        else:
            ops += deferred
            deferred = []
            ops.append(op)
    ops += deferred
    return Network(ops, network.independent_members, network.source)



class _Plan:
    """Spatial shape before and after every operation, the representation (full or same-position) and the
    largest kernel entry count per input pair."""

    def __init__(self, network: Network, sample: tuple[int, ...], diagonal: bool | None) -> None:
        if not network.ops:
            raise DeepensError("network: expected at least one layer")
        spatial = tuple(sample[1:])
        self.channels = sample[0]
        self.input_spatial = spatial
        mixes = any(isinstance(op, (AvgPool, GlobalAvgPool)) for op in network.ops)
        if diagonal is None:
            diagonal = not mixes
        elif diagonal and mixes and spatial:
            raise DeepensError("diagonal_spatial: pooling mixes positions; the full position-pair kernel is needed")
        self.diagonal = bool(diagonal) or not spatial
        self.copies = 1 if self.diagonal else 2
        self.shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        largest = math.prod(spatial) ** self.copies if spatial else 1
        first_weights = True
        for op in network.ops:
            if first_weights and isinstance(op, Conv) and op.fan_in is not None and \
                    op.fan_in != self.channels * math.prod(op.kernel_size):
                raise DeepensError(f"inputs: the network's first layer {op.name!r} expects "
                                   f"{op.fan_in // math.prod(op.kernel_size)} channels, the inputs have "
                                   f"{self.channels}")
            before = spatial
            what = op.name or type(op).__name__
            if isinstance(op, Conv):
                if len(spatial) != op.dims:
                    raise DeepensError(f"inputs: {what} is a {op.dims}-D convolution, its input has "
                                       f"{len(spatial)} spatial axes")
                padded = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, op.padding, strict=True))
                largest = max(largest, math.prod(padded) ** self.copies)
                spatial = tuple(_out_size(n, k, s, d, lo, hi, what) for n, k, s, d, (lo, hi) in zip(
                    spatial, op.kernel_size, op.stride, op.dilation, op.padding, strict=True))
                first_weights = False
            elif isinstance(op, Dense):
                if spatial:
                    raise DeepensError(f"network: dense layer {what!r} receives a feature map of shape {spatial}; "
                                       "flatten or pool it first")
                if first_weights and op.fan_in is not None and op.fan_in != self.channels:
                    raise DeepensError(f"inputs: the network's first layer expects {op.fan_in} features, the "
                                       f"inputs have {self.channels}")
                first_weights = False
            elif isinstance(op, AvgPool):
                if len(spatial) != op.dims:
                    raise DeepensError(f"inputs: {what} pools {op.dims}-D maps, its input has {len(spatial)} axes")
                padded = tuple(n + 2 * p for n, p in zip(spatial, op.padding, strict=True))
                largest = max(largest, math.prod(padded) ** self.copies)
                spatial = tuple(_out_size(n, k, s, 1, p, p, what) for n, k, s, p in zip(
                    spatial, op.kernel_size, op.stride, op.padding, strict=True))
            elif isinstance(op, (GlobalAvgPool, Flatten)):
                spatial = ()
            self.shapes.append((before, spatial))
        if spatial:
            raise DeepensError(f"network: its output is a feature map of shape {spatial}; end with a flatten or a "
                               "global pooling and a dense readout")
        self.largest = largest

    def per_pair_bytes(self, itemsize: int) -> int:
        return _LIVE * self.largest * itemsize

    def per_input_bytes(self, network: Network, duals: dict, itemsize: int) -> int:
        """Bytes per input of the quadrature duals' Hermite coefficients (3 · v-nodes · terms per position)."""
        from .duals import ErfDual, QuadratureDual, v_rule

        most = 0
        for index, (op, (before, _)) in enumerate(zip(network.ops, self.shapes, strict=True)):
            dual = duals.get(index)
            random_v = op.v is not None and not op.v.is_constant if isinstance(op, Activation) else False
            if isinstance(dual, QuadratureDual) or (isinstance(dual, ErfDual) and random_v):
                nodes = len(v_rule(op.v, 100.0)[0]) if op.v is not None else 1
                terms = getattr(dual, "terms", 96)
                most = max(most, 3 * nodes * terms * itemsize * max(1, math.prod(before)))
        return most


# -- the recursion ----------------------------------------------------------------------------------------


class _Kernels:
    """The kernels of one block of input pairs (or of inputs with themselves) as they move through the layers."""

    def __init__(self, nngp: torch.Tensor, plan: _Plan, lead: int, *, ntk: bool, trainable: bool) -> None:
        self.plan = plan
        self.lead = lead
        self.nngp = nngp
        self.ntk = torch.zeros_like(nngp) if ntk else None  # no parameter acts before the first layer
        self.nngp_x = self.ntk_x = None  # cross-member kernels, None while they equal the same-member ones
        self.ind = torch.zeros_like(nngp) if (ntk and trainable) else None
        self.with_ntk = ntk
        self.collected: list[torch.Tensor] = []  # self pass: each activation's input variances

    def _linear(self, fn) -> None:
        for name in ("nngp", "ntk", "nngp_x", "ntk_x", "ind"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, fn(value))

    def _split(self) -> None:
        if self.nngp_x is None:
            self.nngp_x = self.nngp
            self.ntk_x = self.ntk

    def dense(self, op: Dense, spatial_op) -> None:
        """A layer with shared weights: Σ′ = σ_w² L(Σ) + σ_b²; Θ′ = Σ′ + σ_w² L(Θ) (NTK parameterization) or
        fan_in·L(Σ) + [bias] + σ_w² L(Θ) (standard); the individual part only passes through σ_w² L."""
        w2, b2 = op.weight_std**2, op.bias_variance
        self._linear(spatial_op)  # every kernel is now L(kernel)
        lin_s, lin_x = self.nngp, self.nngp_x
        self.nngp = w2 * lin_s + b2
        self.nngp_x = None if lin_x is None else w2 * lin_x + b2
        if not self.with_ntk:
            return
        if self.ind is not None:
            self.ind = w2 * self.ind
        if op.parameterization == "standard":
            grad_s = op.fan_in * lin_s + (1.0 if op.bias else 0.0)
            grad_x = None if lin_x is None else op.fan_in * lin_x + (1.0 if op.bias else 0.0)
        else:
            grad_s, grad_x = self.nngp, self.nngp_x
        self.ntk = grad_s + w2 * self.ntk
        if self.ntk_x is not None:
            self.ntk_x = grad_x + w2 * self.ntk_x

    def activation(self, op: Activation, dual: Dual, q1: torch.Tensor, q2: torch.Tensor) -> None:
        v = op.v
        if isinstance(v, Moments) and dual.name not in ("relu", "identity"):
            raise DeepensError(f"v: layer {op.name!r} needs v's distribution for activation {dual.name!r}")
        want_phiz = self.with_ntk and self.ind is not None and v is not None and op.train_v
        phi_s, tdot_s, phiz_s = dual.same(q1, q2, self.nngp, v, tdot=self.with_ntk, phiz=want_phiz)
        if self.with_ntk:
            if self.ind is not None:
                self.ind = tdot_s * self.ind
                if v is not None and op.train_v:
                    self.ind = self.ind + phiz_s
            if v is not None or self.nngp_x is not None:
                self._split()
                phi_c, tdot_c = dual.cross(q1, q2, self.nngp_x, v)
                self.nngp_x, self.ntk_x = phi_c, tdot_c * self.ntk_x
            self.ntk = tdot_s * self.ntk
        self.nngp = phi_s

    def modulate(self, op: Modulate) -> None:
        u1, u2 = op.u.first_moment, op.u.second_moment
        if self.with_ntk:
            self._split()
            if self.ind is not None:
                self.ind = u2 * self.ind + (self.nngp if op.trainable else 0.0)
            self.ntk = u2 * self.ntk
            self.ntk_x = u1 * u1 * self.ntk_x
            self.nngp_x = u1 * u1 * self.nngp_x
        self.nngp = u2 * self.nngp


def _variances(t: torch.Tensor, plan: _Plan, spatial: tuple[int, ...]) -> torch.Tensor:
    """Per input and position, the variance K(x, x)(p, p) from a self kernel (n,) + positions."""
    return t if plan.diagonal or not spatial else _same_positions(t, 1, spatial)


def _run(network: Network, plan: _Plan, k: _Kernels, duals: dict, variances, record=None) -> None:
    """Push ``k`` through the network. ``variances``: None for a self pass (each input's variances come from
    its own kernel, and are collected in ``k.collected``), else (v1, v2) lists of the variances at each
    activation for the block's two point sets."""
    lead, copies = k.lead, plan.copies
    act_index = 0
    for index, (op, (before, after)) in enumerate(zip(network.ops, plan.shapes, strict=True)):
        if isinstance(op, Conv):
            k.dense(op, lambda t, op=op, after=after: _conv(t, lead, copies, op, after))
        elif isinstance(op, Dense):
            k.dense(op, lambda t: t)
        elif isinstance(op, Activation):
            if record is not None:
                record(act_index + 1, "pre-activation", k)
            dims = len(before)
            if variances is None:
                q = _variances(k.nngp, plan, before)
                k.collected.append(q)
                if copies == 2 and dims:
                    q1 = q.reshape(q.shape + (1,) * dims)
                    q2 = q.reshape(q.shape[:1] + (1,) * dims + q.shape[1:])
                else:
                    q1 = q2 = q
            else:
                a, b = variances[0][act_index], variances[1][act_index]
                ones = (1,) * dims
                if copies == 2 and dims:
                    q1 = a.reshape((a.shape[0], 1) + a.shape[1:] + ones)
                    q2 = b.reshape((1, b.shape[0]) + ones + b.shape[1:])
                else:
                    q1 = a.reshape((a.shape[0], 1) + a.shape[1:])
                    q2 = b.reshape((1, b.shape[0]) + b.shape[1:])
            k.activation(op, duals[index], q1, q2)
            act_index += 1
        elif isinstance(op, Modulate):
            k.modulate(op)
        elif isinstance(op, AvgPool):
            k._linear(lambda t, op=op, after=after: _pool(t, lead, copies, op, after))
        elif isinstance(op, GlobalAvgPool):
            axes = tuple(range(lead, lead + copies * len(before)))
            k._linear(lambda t, axes=axes: t.mean(dim=axes) if axes else t)
        elif isinstance(op, Flatten):
            if before:
                if copies == 2:
                    k._linear(lambda t, before=before: _same_positions(t, lead, before).mean(
                        dim=tuple(range(lead, lead + len(before)))))
                else:
                    k._linear(lambda t, before=before: t.mean(dim=tuple(range(lead, lead + len(before)))))
    if record is not None:
        record(act_index + 1, "output", k)


def _input_kernel(a: torch.Tensor, b: torch.Tensor, plan: _Plan, pairs: bool) -> torch.Tensor:
    """x·x′/C per pair of positions (full), per position (same-position), or per input (dense)."""
    dims = len(plan.input_spatial)
    letters = "hwl"[:dims]
    upper = letters.upper()
    if pairs:
        rhs = "ab" + letters + (upper if plan.copies == 2 else "")
        eq = f"ac{letters},bc{upper if plan.copies == 2 else letters}->{rhs}"
    else:
        rhs = "a" + letters + (upper if plan.copies == 2 else "")
        eq = f"ac{letters},ac{upper if plan.copies == 2 else letters}->{rhs}"
    return torch.einsum(eq, a, b) / plan.channels


def kernel_memory(network: Network, sample_shape: tuple[int, ...], block: int, *, dtype=torch.float64,
                  diagonal_spatial: bool | None = None) -> int:
    """Bytes the recursion needs for a block of ``block`` × ``block`` input pairs (the budget formula):
    16 kernel-sized tensors of (largest padded position count)^(1 or 2) entries per pair."""
    plan = _Plan(network, tuple(sample_shape), diagonal_spatial)
    return block * block * plan.per_pair_bytes(torch.empty((), dtype=dtype).element_size())


def _as_input(name: str, x, dtype, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().to(device=device, dtype=dtype)
    else:
        t = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64), dtype=dtype, device=device)
    if t.dim() not in (2, 3, 4):
        raise DeepensError(f"{name}: expected (N, d) vectors, (N, C, L) sequences or (N, C, H, W) images, "
                           f"got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        row = int(torch.nonzero(~torch.isfinite(t.reshape(t.shape[0], -1)).all(1))[0, 0])
        raise DeepensError(f"{name}: non-finite values (NaN or inf), first in row {row}")
    return t


def infinite_width_kernels(
    x1: np.ndarray | torch.Tensor,
    x2: np.ndarray | torch.Tensor | None = None,
    network: Network | nn.Module | None = None,
    *,
    members: int | None = None,
    gamma: float | str = "M",
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    memory: int | str = DEFAULT_MEMORY,
    diagonal_spatial: bool | None = None,
    method: str = "analytic",
    **monte_carlo,
) -> InfiniteWidthKernels:
    """Infinite-width kernels of ``network`` between inputs ``x1`` and ``x2`` (default: ``x1`` with itself).

    ``network`` is a :class:`Network` or a module (read with :meth:`Network.from_module`; default: a
    one-hidden-layer ReLU MLP). Inputs are (N, d) for dense networks, (N, C, L) or (N, C, H, W) for
    convolutional ones. ``members`` and ``gamma`` set the weight γ(M)/M of the common NTK part (default
    γ = M: weight 1). Computed in ``dtype`` (float64 by default; float32 is faster and ~1e-6 accurate) on
    ``device`` (CPU by default, ``"cuda"``), over blocks of input pairs sized so that the working memory stays
    under ``memory`` (bytes or e.g. ``"8GiB"``; :func:`kernel_memory` gives the formula).
    ``diagonal_spatial``: carry only same-position pairs (default: whenever no pooling mixes positions).
    ``method="monte_carlo"`` estimates the kernels of a module without a closed form from random
    initialisations instead (see :func:`deepens.kernels.monte_carlo_kernels`; its options pass through).
    Returns float64 (float32) NumPy arrays.
    """
    method = check_choice("method", method, ("analytic", "monte_carlo"))
    if method == "monte_carlo":
        from .montecarlo import monte_carlo_kernels

        if not isinstance(network, nn.Module):
            raise DeepensError("network: method='monte_carlo' needs the module itself (an nn.Module)")
        if members is not None or not (isinstance(gamma, str) and gamma.strip().upper() == "M") or \
                diagonal_spatial is not None:
            raise DeepensError("method: the Monte Carlo estimate is of one network; members, gamma and "
                               "diagonal_spatial apply to the analytic kernels only")
        return monte_carlo_kernels(network, x1, x2, dtype=dtype, device=device, **monte_carlo)
    if monte_carlo:
        raise DeepensError(f"infinite_width_kernels: unexpected options {sorted(monte_carlo)} (Monte Carlo only)")
    if network is None:
        network = Network.mlp(1)
    elif isinstance(network, nn.Module):
        network = Network.from_module(network)
    elif not isinstance(network, Network):
        raise DeepensError(f"network: expected a deepens.kernels.Network or an nn.Module, got {type(network).__name__}")
    network = _normalised(network)
    if dtype not in (torch.float64, torch.float32):
        raise DeepensError(f"dtype: expected torch.float64 or torch.float32, got {dtype}")
    device = torch.device(device or "cpu")
    budget = parse_memory(memory)
    a = _as_input("x1", x1, dtype, device)
    same_inputs = x2 is None
    b = a if same_inputs else _as_input("x2", x2, dtype, device)
    if a.shape[1:] != b.shape[1:]:
        raise DeepensError(f"inputs: x1 and x2 must have the same sample shape, got {tuple(a.shape[1:])} and "
                           f"{tuple(b.shape[1:])}")
    want = network.spatial_dims
    if want is not None and a.dim() - 2 != want:
        raise DeepensError(f"inputs: the network is a {want}-D convolutional network; expected inputs "
                           f"{'(N, C, L)' if want == 1 else '(N, C, H, W)'}, got shape {tuple(a.shape)}")
    plan = _Plan(network, tuple(a.shape[1:]), diagonal_spatial)
    weight = 1.0
    if not (isinstance(gamma, str) and gamma.strip().upper() == "M"):
        m = check_int("members", members if members is not None else 1, minimum=1)
        weight = check_real("gamma", float(gamma), low=0.0, low_open=True) / m
    duals = {i: dual_for(op.activation) for i, op in enumerate(network.ops) if isinstance(op, Activation)}
    trainable = any((isinstance(op, Modulate) and op.trainable) or (isinstance(op, Activation) and op.v is not None
                                                                     and op.train_v) for op in network.ops)
    per_pair = plan.per_pair_bytes(a.element_size())
    if per_pair > budget:
        raise DeepensError(f"memory: one input pair needs {per_pair / 2**20:.1f} MiB for this network and image "
                           f"size, more than the budget of {budget / 2**20:.1f} MiB")
    working = min(budget, WORKING_SET if device.type == "cpu" else budget)
    block = max(1, int(math.isqrt(working // per_pair)))
    chunk = max(1, working // per_pair)
    per_input = plan.per_input_bytes(network, duals, a.element_size())
    if per_input:  # the coefficients of both point sets of a block stay under half the budget
        block = max(1, min(block, budget // (4 * per_input)))
        chunk = max(1, min(chunk, budget // (2 * per_input)))

    def self_variances(x: torch.Tensor) -> list[torch.Tensor]:
        parts: list[list[torch.Tensor]] = []
        for start in range(0, x.shape[0], chunk):
            rows = x[start:start + chunk]
            k = _Kernels(_input_kernel(rows, rows, plan, pairs=False), plan, 1, ntk=False, trainable=False)
            _run(network, plan, k, duals, None)
            parts.append(k.collected)
        return [torch.cat(column) for column in zip(*parts, strict=True)] if parts and parts[0] else []

    var1 = self_variances(a)
    var2 = var1 if same_inputs else self_variances(b)
    n1, n2 = a.shape[0], b.shape[0]
    names = ("nngp", "nngp_x", "ntk", "ind", "ntk_x")
    out = {name: torch.zeros((n1, n2), dtype=dtype) for name in names}
    layers_out: list[dict] = []

    def record(index: int, where: str, k: _Kernels) -> None:
        def summary(t):
            return float(t[:64, :64].abs().mean()) if t is not None else None

        same_ntk = weight * k.ntk + (k.ind if k.ind is not None else 0.0)
        cross_nngp = k.nngp if k.nngp_x is None else k.nngp_x
        cross_ntk = k.ntk if k.ntk_x is None else k.ntk_x
        if network.independent_members:
            cross_nngp = cross_ntk = torch.zeros_like(k.nngp)
            same_ntk = k.ntk
        layers_out.append({"layer": index, "nngp_same": summary(k.nngp), "nngp_cross": summary(cross_nngp),
                           "ntk_same": summary(same_ntk), "ntk_cross": summary(weight * cross_ntk), "where": where})

    for i0 in range(0, n1, block):
        for j0 in range(i0 if same_inputs else 0, n2, block):
            rows, cols = slice(i0, i0 + block), slice(j0, j0 + block)
            k = _Kernels(_input_kernel(a[rows], b[cols], plan, pairs=True), plan, 2, ntk=True, trainable=trainable)
            _run(network, plan, k, duals, ([v[rows] for v in var1], [v[cols] for v in var2]),
                 record if (i0 == 0 and j0 == 0) else None)
            values = {"nngp": k.nngp, "nngp_x": k.nngp if k.nngp_x is None else k.nngp_x, "ntk": k.ntk,
                      "ind": k.ind if k.ind is not None else torch.zeros_like(k.nngp),
                      "ntk_x": k.ntk if k.ntk_x is None else k.ntk_x}
            for name, value in values.items():
                value = value.cpu()
                out[name][rows, cols] = value
                if same_inputs and j0 != i0:
                    out[name][cols, rows] = value.T
    result = {name: value.numpy() for name, value in out.items()}
    if network.independent_members:  # a deep ensemble: nothing shared, every parameter individual
        zeros = np.zeros_like(result["nngp"])
        return InfiniteWidthKernels(result["nngp"], zeros, zeros.copy(), result["ntk"], zeros.copy(), weight,
                                    layers_out)
    return InfiniteWidthKernels(result["nngp"], result["nngp_x"], result["ntk"], result["ind"], result["ntk_x"],
                                weight, layers_out)
