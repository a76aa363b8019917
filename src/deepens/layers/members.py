"""Member-aware layers: every member of an ensemble computed in one vectorized call.

Inside an ensemble the batch is *folded*: a tensor of shape (M·B, ...) holds member α's samples at
rows α·B ... α·B + B − 1 (member-major). Every per-sample operation of the reference network
(activations, pooling, flatten, views that keep the first axis) then works unchanged, and only the
layers here know about members:

* :class:`StackedLinear` / :class:`StackedConv` — M independent weight sets (a deep ensemble) as one
  batched matmul / one grouped convolution.
* :class:`Modulation` — per-member, per-neuron (per-channel) multiplicative modulations of EE Eq. 1,
  trainable (BatchEnsemble) or frozen (MC dropout), optionally redrawn at every forward.
* :class:`Tile` — turns a shared batch (B, ...) into the folded (M·B, ...) layout.
* :class:`ModulatedReadout` — the last-layer-dropout head of EE App. D.4 (Eqs. 64-65).

A :class:`MemberContext` object shared by one ensemble's layers carries the per-call state: the
number of members, whether the current input is shared by all members (so the first layer can
compute once and fan out), and, for LLD, whether the mean member is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import DeepensError
from .distributions import Distribution
from .parameterized import scaled_bias, scaled_weight
from .recompute import lean_active, remember

__all__ = ["MemberContext", "STRATEGIES", "stacked_strategy", "StackedLinear", "StackedConv", "StackedBatchNorm",
           "SharedBatchNorm", "Modulation", "Tile", "ModulatedReadout"]


class MemberContext:
    """Per-call state shared by the member-aware layers of one ensemble (not a module, not saved)."""

    def __init__(self, members: int) -> None:
        self.members = members
        self.shared = False  # the current input is one batch shared by all members
        self.mode = "members"  # "members" or "mean" (LLD single-pass inference, EE Eq. 65)
        self.strategy = "auto"  # how stacked convolutions and norms compute: see ``stacked_strategy``
        self.chunked = False  # this call runs the members one at a time (the "chunks" strategy)


#: How stacked convolutions and batch norms compute their M members (``Ensemble.conv_strategy``):
#: ``"grouped"`` — one grouped convolution / one norm over the batch-major layout (B, M·C, ...), which costs a copy of
#: the input and of the output each way; ``"members"`` — one call per member on its slice of the member-major batch
#: (M·B, C, ...) (no copy in, one stack out); ``"chunks"`` — a DeepEnsemble, BatchEnsemble or MC-dropout ensemble runs
#: its members one at a time through the whole network (the schedule of a loop over separate networks: each member's
#: activations stay in cache from one layer to the next, and the backward pass holds one member's temporaries at a
#: time; a last-layer-dropout ensemble treats it as ``"members"``); ``"auto"`` — on the CPU ``"chunks"`` for a
#: convolutional DeepEnsemble, and for a convolutional BatchEnsemble once its folded input holds 2^17 numbers,
#: ``"members"`` otherwise (oneDNN runs a grouped convolution group by group anyway, so the copies are pure cost:
#: measured in ``benchmarks``), ``"grouped"`` elsewhere (one kernel launch for all members on a GPU).
STRATEGIES = ("auto", "grouped", "members", "chunks")


def stacked_strategy(ctx: MemberContext, x: torch.Tensor) -> str:
    """How a stacked layer computes input ``x``: ``"grouped"`` or ``"members"`` (``ctx.strategy`` resolved)."""
    if ctx.strategy == "grouped" or (ctx.strategy == "auto" and x.device.type != "cpu"):
        return "grouped"
    return "members"


def _member_slices(x: torch.Tensor, m: int) -> tuple[torch.Tensor, ...]:
    """The folded member-major batch (M·B, ...) as M contiguous views (B, ...)."""
    return x.reshape((m, x.shape[0] // m) + tuple(x.shape[1:])).unbind(0)


def _same(name: str, values: Sequence) -> object:
    first = values[0]
    if any(v != first for v in values[1:]):
        raise DeepensError(f"modules: every member must have the same {name}, got {list(values)}")
    return first


def _stack(tensors: Sequence[torch.Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach() for t in tensors]).clone())


def _modulate(x: torch.Tensor, u: torch.Tensor, feature_dim: int) -> torch.Tensor:
    """u_α ⊙ x on the folded batch (member-major), features on ``feature_dim``; a contiguous (M, ...) product."""
    m, c = u.shape
    if feature_dim == -1:
        return x.reshape(m, -1, c) * u.unsqueeze(1)
    return x.reshape(m, -1, c, math.prod(x.shape[2:])) * u[:, None, :, None]


def channel_dots(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Σ_{batch, positions} a ⊙ b per member and channel of (M, B, C, S) tensors, (M, C) in ``dtype`` (the gradient
    of a per-channel modulation): products and sums over blocks of one member's batch of at most 2^20 numbers, so
    no (M, B, C, S) product is materialised and each block is summed while it is in cache."""
    m, n, c, s = a.shape
    dt = torch.promote_types(a.dtype, b.dtype)  # autocast: a bfloat16 activation, a float32 gradient
    step = max(1, (1 << 20) // max(c * s, 1))
    out = torch.zeros(m, c, dtype=dt, device=a.device)
    for i in range(m):
        for j in range(0, n, step):
            out[i] += (a[i, j: j + step].to(dt) * b[i, j: j + step].to(dt)).sum((0, 2))
    return out.to(dtype)


class _ChannelScale(torch.autograd.Function):
    """y = x ⊙ u per channel on (M, B, C, S) (EE Eq. 1's modulation of a convolution), whose gradient for u,
    Σ_{b,s} g ⊙ x, is a batched dot product: autograd's generic product rule would materialise g ⊙ x, a
    temporary as large as the activation, in the backward pass of every modulated layer. Used in lean forwards
    (:mod:`deepens.layers.recompute`), which never run under torch.func transforms."""

    @staticmethod
    def forward(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return x * u[:, None, :, None]

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, u = inputs
        ctx.save_for_backward(x if u.requires_grad else None, u)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, u = ctx.saved_tensors
        grad_x = g * u[:, None, :, None] if ctx.needs_input_grad[0] else None
        grad_u = channel_dots(g, x, u.dtype) if ctx.needs_input_grad[1] else None
        return grad_x, grad_u


def _modulate_lean(x: torch.Tensor, u: torch.Tensor, feature_dim: int) -> torch.Tensor:
    m, c = u.shape
    if feature_dim == -1 or not (x.requires_grad or u.requires_grad):
        return _modulate(x, u, feature_dim)
    return _ChannelScale.apply(x.reshape(m, -1, c, math.prod(x.shape[2:])), u)


def _tile(x: torch.Tensor, m: int) -> torch.Tensor:
    return x.unsqueeze(0).expand((m,) + tuple(x.shape)).reshape((m * x.shape[0],) + tuple(x.shape[1:]))


def _batch_major(x: torch.Tensor, m: int) -> torch.Tensor:
    """Folded member-major (M·B, C, ...) → (B, M·C, ...), the layout of grouped convolutions and norms."""
    batch, c, spatial = x.shape[0] // m, x.shape[1], tuple(x.shape[2:])
    return x.reshape((m, batch, c) + spatial).transpose(0, 1).reshape((batch, m * c) + spatial)


class _Stacked(nn.Module):
    """Common part of the stacked layers: M weight sets stacked on a leading member axis."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_stack(self, layers: Sequence[nn.Module], ctx: MemberContext, entry: bool) -> None:
        self.ctx = ctx
        self.entry = entry  # first layer reached by the input: computes a shared batch only once
        self.weight = _stack([self._from_reference(layer.weight) for layer in layers])
        has_bias = _same("bias presence", [layer.bias is not None for layer in layers])
        self.bias = _stack([layer.bias for layer in layers]) if has_bias else None
        self.weight_scale = float(_same("weight_scale", [getattr(la, "weight_scale", 1.0) for la in layers]))
        self.bias_scale = float(_same("bias_scale", [getattr(la, "bias_scale", 1.0) for la in layers]))

    @staticmethod
    def _from_reference(weight: torch.Tensor) -> torch.Tensor:
        """One member's weight in this layer's storage layout (identity unless overridden)."""
        return weight

    def to_reference(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A stacked tensor (M, ...) of parameter ``name`` (or its gradient) in the reference layout."""
        return tensor

    @property
    def members(self) -> int:
        return self.weight.shape[0]

    def truncate_members_(self, k: int) -> None:
        self.weight = nn.Parameter(self.weight.detach()[:k].clone(), self.weight.requires_grad)
        if self.bias is not None:
            self.bias = nn.Parameter(self.bias.detach()[:k].clone(), self.bias.requires_grad)

    def member_state(self, index: int) -> dict[str, torch.Tensor]:
        """Member ``index``'s parameters under the reference layer's names."""
        state = {"weight": self.to_reference("weight", self.weight.detach())[index]}
        if self.bias is not None:
            state["bias"] = self.to_reference("bias", self.bias.detach())[index]
        return state


class StackedLinear(_Stacked):
    """M independent dense layers as one batched matmul: weight (M, in, out), bias (M, 1, out).

    The weight is stored transposed with respect to ``nn.Linear`` and the bias with a singleton axis
    (``to_reference`` maps both back), so the batched matmul reads the weight contiguously and adds
    the bias without an extra view (together about 15% faster for 64×64 layers on a CPU). Input
    (M·B, ..., in) folded, or (B, ..., in) shared when this is the entry layer and the input is shared
    — then the batch is broadcast to all members without copying it M times.
    """

    def __init__(self, layers: Sequence[nn.Linear], ctx: MemberContext, entry: bool = False) -> None:
        super().__init__()
        self._init_stack(layers, ctx, entry)
        self.in_features = self.weight.shape[1]
        self.out_features = self.weight.shape[2]

    @staticmethod
    def _from_reference(weight: torch.Tensor) -> torch.Tensor:
        return weight.t()

    def _init_stack(self, layers, ctx, entry) -> None:
        super()._init_stack(layers, ctx, entry)
        if self.bias is not None:  # stored (M, 1, out): baddbmm broadcasts it without a view node
            self.bias = nn.Parameter(self.bias.detach().unsqueeze(1).clone())

    def to_reference(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        if name == "weight":
            return tensor.transpose(1, 2)
        return tensor.squeeze(1) if name == "bias" else tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.weight_scale == 1.0 else self.weight * self.weight_scale
        b = self.bias
        if b is not None and self.bias_scale != 1.0:
            b = b * self.bias_scale
        m, n_in, n_out = w.shape
        if self.entry and self.ctx.shared:
            # one shared batch: broadcast it over the members without copying (stride-0 expand)
            lead = x.shape[:-1]
            rows = x.reshape(1, -1, n_in).expand(m, -1, n_in)
            shape = (m * lead[0],) + tuple(lead[1:]) + (n_out,)
        else:
            rows = x.reshape(m, -1, n_in)
            shape = x.shape[:-1] + (n_out,)
        y = torch.baddbmm(b, rows, w) if b is not None else torch.bmm(rows, w)
        return y.reshape(shape)

    def extra_repr(self) -> str:
        return f"members={self.members}, in_features={self.in_features}, out_features={self.out_features}"


_CONV = {1: F.conv1d, 2: F.conv2d}


class StackedConv(_Stacked):
    """M independent 1-D or 2-D convolutions as one grouped convolution (groups = M · groups)."""

    def __init__(self, layers: Sequence[nn.Conv1d | nn.Conv2d], ctx: MemberContext, entry: bool = False):
        super().__init__()
        first = layers[0]
        if first.padding_mode not in ("zeros", "circular"):
            raise DeepensError(
                f"net: only zero and circular padding are supported, got padding_mode={first.padding_mode!r}"
            )
        if isinstance(first.padding, str) and first.padding_mode != "zeros":
            raise DeepensError("net: circular padding needs explicit padding sizes, not padding='same'")
        self._init_stack(layers, ctx, entry)
        self.padding_mode = first.padding_mode
        self._circular = tuple(first._reversed_padding_repeated_twice) if first.padding_mode == "circular" else None
        self.dims = first.weight.dim() - 2
        self.stride = first.stride
        self.padding = first.padding
        self.dilation = first.dilation
        self.groups = first.groups
        self.in_channels = first.in_channels
        self.out_channels = first.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = _CONV[self.dims]
        w = self.weight if self.weight_scale == 1.0 else self.weight * self.weight_scale
        m, c_out = w.shape[:2]
        w = w.reshape((m * c_out,) + tuple(w.shape[2:]))
        b = None
        if self.bias is not None:
            b = (self.bias if self.bias_scale == 1.0 else self.bias * self.bias_scale).reshape(m * c_out)
        padding = self.padding
        if self._circular is not None:  # as nn.Conv*d does: pad the input circularly, then a valid convolution
            x = F.pad(x, self._circular, mode="circular")
            padding = 0
        if self.entry and self.ctx.shared:
            batch = x.shape[0]
            if self.groups == 1:
                y = conv(x, w, b, self.stride, padding, self.dilation, 1)
            else:
                xs = x.repeat((1, m) + (1,) * self.dims)
                y = conv(xs, w, b, self.stride, padding, self.dilation, m * self.groups)
        elif m == 1 or stacked_strategy(self.ctx, x) == "members":  # one member alone: no copy at all
            ws = w.reshape((m, c_out) + tuple(w.shape[1:])).unbind(0)
            bs = b.reshape(m, c_out).unbind(0) if b is not None else (None,) * m
            ys = [conv(xi, wi, bi, self.stride, padding, self.dilation, self.groups)
                  for xi, wi, bi in zip(_member_slices(x, m), ws, bs, strict=True)]
            return ys[0] if m == 1 else torch.cat(ys)
        else:
            batch = x.shape[0] // m
            xs = remember(_batch_major(x, m), _batch_major, x, m)
            y = conv(xs, w, b, self.stride, padding, self.dilation, m * self.groups)
        out_spatial = tuple(y.shape[2:])
        y = y.reshape((batch, m, c_out) + out_spatial).transpose(0, 1)
        return y.reshape((m * batch, c_out) + out_spatial)

    def extra_repr(self) -> str:
        return (
            f"members={self.members}, {self.in_channels}, {self.out_channels}, kernel_size="
            f"{tuple(self.weight.shape[3:])}, stride={self.stride}, padding={self.padding}, groups={self.groups}"
        )


class StackedBatchNorm(nn.Module):
    """M independent batch norms — each member's batch statistics, running buffers and affine parameters — on the
    folded batch (M·B, C, ...), as one ``F.batch_norm`` over (B, M·C, ...): members never see each other's samples.

    Parameters and buffers are stacked (M, C) (``num_batches_tracked`` (M,)); ``member_state`` gives member α's
    under ``nn.BatchNorm``'s names.
    """

    def __init__(self, layers: Sequence[nn.modules.batchnorm._BatchNorm], ctx: MemberContext) -> None:
        super().__init__()
        first = layers[0]
        for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
            _same(attr, [getattr(layer, attr) for layer in layers])
        self.ctx = ctx
        self.num_features, self.eps, self.momentum = first.num_features, first.eps, first.momentum
        self.affine, self.track_running_stats = first.affine, first.track_running_stats
        if self.affine:
            self.weight = _stack([layer.weight for layer in layers])
            self.bias = _stack([layer.bias for layer in layers])
        else:
            self.weight = self.bias = None
        if self.track_running_stats:
            self.register_buffer("running_mean", torch.stack([la.running_mean for la in layers]).clone())
            self.register_buffer("running_var", torch.stack([la.running_var for la in layers]).clone())
            self.register_buffer("num_batches_tracked",
                                 torch.stack([la.num_batches_tracked for la in layers]).clone())
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    @property
    def members(self) -> int:
        return self.ctx.members if self.weight is None else self.weight.shape[0]

    def truncate_members_(self, k: int) -> None:
        if self.affine:
            self.weight = nn.Parameter(self.weight.detach()[:k].clone(), self.weight.requires_grad)
            self.bias = nn.Parameter(self.bias.detach()[:k].clone(), self.bias.requires_grad)
        if self.track_running_stats:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(self, name, getattr(self, name)[:k].clone())

    def to_reference(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def member_state(self, index: int) -> dict[str, torch.Tensor]:
        state = {}
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            value = getattr(self, name)
            if value is not None:
                state[name] = value.detach()[index]
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.members
        batch, c, spatial = x.shape[0] // m, x.shape[1], tuple(x.shape[2:])
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm
                factor = 1.0 / float(self.num_batches_tracked[0])
        use_batch = self.training or self.running_mean is None
        if m == 1 or stacked_strategy(self.ctx, x) == "members":  # running buffers updated through their rows
            rows = [None if t is None else t.unbind(0) for t in
                    (self.running_mean, self.running_var, self.weight, self.bias)]
            ys = [F.batch_norm(xi, *(None if r is None else r[i] for r in rows), use_batch, factor, self.eps)
                  for i, xi in enumerate(_member_slices(x, m))]
            return ys[0] if m == 1 else torch.cat(ys)
        xs = remember(_batch_major(x, m), _batch_major, x, m)
        y = F.batch_norm(
            xs,
            None if self.running_mean is None else self.running_mean.view(-1),
            None if self.running_var is None else self.running_var.view(-1),
            None if self.weight is None else self.weight.reshape(-1),
            None if self.bias is None else self.bias.reshape(-1),
            use_batch, factor, self.eps,
        )
        return y.reshape((batch, m, c) + spatial).transpose(0, 1).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"members={self.members}, {self.num_features}, eps={self.eps}, momentum={self.momentum}"


class SharedBatchNorm(nn.Module):
    """One batch norm shared by all members (its parameters and running buffers under ``nn.BatchNorm``'s names)
    whose batch statistics are each member's own when the members see their own batches.

    On a shared batch (``ctx.shared``), in evaluation, or with one member it computes exactly what the wrapped
    ``nn.BatchNorm`` computes. On one batch per member, folded as (M·B, C, ...), each member is normalised with
    the mean and variance of its own B samples (never with the other members' samples) and the shared affine
    parameters; the running buffers move towards the members' mean batch statistics, running ← (1 − momentum)·
    running + momentum·mean_α(stat_α) — the average of the M updates a per-member batch norm would make. For
    ensembles whose members share every layer below their modulations
    (:class:`~deepens.ensembles.LastLayerDropout`)."""

    def __init__(self, layer: nn.modules.batchnorm._BatchNorm, ctx: MemberContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.num_features, self.eps, self.momentum = layer.num_features, layer.eps, layer.momentum
        self.affine, self.track_running_stats = layer.affine, layer.track_running_stats
        self.weight, self.bias = layer.weight, layer.bias
        self.register_buffer("running_mean", layer.running_mean)
        self.register_buffer("running_var", layer.running_var)
        self.register_buffer("num_batches_tracked", layer.num_batches_tracked)

    def _factor(self) -> float:
        """The running-statistics momentum of this training step (counting it), as ``nn.BatchNorm``."""
        if not (self.training and self.track_running_stats and self.num_batches_tracked is not None):
            return 0.0 if self.momentum is None else self.momentum
        self.num_batches_tracked.add_(1)
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.ctx.members
        factor = self._factor()
        use_batch = self.training or self.running_mean is None
        if self.ctx.shared or not self.training or m == 1:
            return F.batch_norm(x, self.running_mean if not self.training or self.track_running_stats else None,
                                self.running_var if not self.training or self.track_running_stats else None,
                                self.weight, self.bias, use_batch, factor, self.eps)
        batch, c, spatial = x.shape[0] // m, x.shape[1], tuple(x.shape[2:])
        xs = remember(_batch_major(x, m), _batch_major, x, m)
        running = self.track_running_stats and self.running_mean is not None
        mean = self.running_mean.repeat(m) if running else None
        var = self.running_var.repeat(m) if running else None
        y = F.batch_norm(xs, mean, var, None if self.weight is None else self.weight.repeat(m),
                         None if self.bias is None else self.bias.repeat(m), True, factor, self.eps)
        if running:
            with torch.no_grad():
                self.running_mean.copy_(mean.view(m, c).mean(0))
                self.running_var.copy_(var.view(m, c).mean(0))
        return y.reshape((batch, m, c) + spatial).transpose(0, 1).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, shared by the members"


class Modulation(nn.Module):
    """Per-member, per-feature multiplicative modulation x ↦ u_α ⊙ x (EE Eq. 1).

    ``values`` has shape (M, C); ``feature_dim`` is 1 for channels of a convolution (one value per
    channel, shared by all positions) or -1 for dense features. Trainable values are parameters
    (individual parameters of a BatchEnsemble); frozen values are buffers and receive no gradient.
    With ``resample=True`` the values are redrawn from ``distribution`` at every forward (classic MC
    dropout), from a generator seeded by (``seed``, number of draws so far) so runs are reproducible
    and resumable from the saved ``draws`` counter.
    """

    def __init__(
        self,
        values: torch.Tensor,
        *,
        feature_dim: int,
        trainable: bool,
        distribution: Distribution | None = None,
        resample: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if values.dim() != 2:
            raise DeepensError(f"values: expected shape (members, features), got {tuple(values.shape)}")
        if resample and trainable:
            raise DeepensError("resample: modulations redrawn at every forward cannot be trainable")
        if resample and distribution is None:
            raise DeepensError("resample: needs the distribution to redraw from")
        if feature_dim not in (1, -1):
            raise DeepensError(f"feature_dim: expected 1 (channels) or -1 (features), got {feature_dim}")
        if trainable:
            self.values = nn.Parameter(values.clone())
        else:
            self.register_buffer("values", values.clone())
        self.feature_dim = feature_dim
        self.trainable = trainable
        self.distribution = distribution
        self.resample = resample
        self.seed = int(seed)
        if resample:
            self.register_buffer("draws", torch.zeros((), dtype=torch.long))

    @property
    def members(self) -> int:
        return self.values.shape[0]

    @property
    def features(self) -> int:
        return self.values.shape[1]

    def truncate_members_(self, k: int) -> None:
        if self.trainable:
            self.values = nn.Parameter(self.values.detach()[:k].clone())
        else:
            self.values = self.values[:k].clone()

    @torch.no_grad()
    def redraw(self) -> None:
        """Draw fresh values from the distribution (deterministic given seed and the draw counter)."""
        assert self.distribution is not None
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + int(self.draws)) % (2**63 - 1))
        fresh = self.distribution.sample(tuple(self.values.shape), generator=gen, dtype=self.values.dtype)
        self.values.copy_(fresh.to(self.values.device))
        self.draws += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample:
            self.redraw()
        u = self.values
        if not lean_active():
            return _modulate(x, u, self.feature_dim).reshape(x.shape)
        return remember(_modulate_lean(x, u, self.feature_dim), _modulate, x, u, self.feature_dim).reshape(x.shape)

    def extra_repr(self) -> str:
        spec = self.distribution.spec if self.distribution is not None else "given"
        return (
            f"members={self.members}, features={self.features}, distribution={spec}, "
            f"trainable={self.trainable}, resample={self.resample}"
        )


class Tile(nn.Module):
    """Shared batch (B, ...) → folded (M·B, ...) by repetition; a no-op for per-member input."""

    def __init__(self, ctx: MemberContext) -> None:
        super().__init__()
        self.ctx = ctx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ctx.shared:
            return x
        m = self.ctx.members
        return remember(_tile(x, m), _tile, x, m, keep=m > 1)  # the shared input: 1/M of the tiled one


def _masked_rows(phi: torch.Tensor, u: torch.Tensor, groups: int) -> torch.Tensor:
    """Every member's masked features φ ⊙ u_α, member-major rows (M·B', N); ``groups`` is 1 for features shared by
    the members, M for per-member features."""
    n = u.shape[1]
    return (phi.reshape(groups, -1, n) * u.unsqueeze(1)).reshape(-1, n)


class ModulatedReadout(nn.Module):
    """Last-layer-dropout readout (EE App. D.4).

    Members: f_α(x) = Σ_i φ_i(x) u_αi c_i + b (EE Eq. 64), with frozen u (M, N). The shared features
    φ are computed once; the masked features of all members (M·B × N) go through one GEMM with the
    shared readout (M·B × N × C multiply-adds, 2.7× faster on a CPU than building M head matrices).
    Mean member (``ctx.mode ==
    "mean"``): f_ens(x) = Σ_i φ_i(x) ū_i c_i + b with ū = mean_α u_α (EE Eq. 65), a single pass.
    """

    def __init__(self, readout: nn.Linear, values: torch.Tensor, ctx: MemberContext) -> None:
        super().__init__()
        if values.dim() != 2 or values.shape[1] != readout.in_features:
            raise DeepensError(
                f"values: expected shape (members, {readout.in_features}), got {tuple(values.shape)}"
            )
        self.readout = readout
        self.register_buffer("values", values.clone())
        self.ctx = ctx
        self._mean_key: tuple | None = None
        self._mean_weight: torch.Tensor | None = None

    @property
    def members(self) -> int:
        return self.values.shape[0]

    def truncate_members_(self, k: int) -> None:
        self.values = self.values[:k].clone()
        self._mean_key = None

    def _mean_readout(self, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """W · diag(ū): the single readout of EE Eq. (65). Cached for inference (no gradient needed),
        keyed on the versions of the weight and the masks, so it is recomputed after every update."""
        if torch.is_grad_enabled() and w.requires_grad:
            return w * u.mean(0)
        weight = self.readout.weight
        key = (weight._version, weight.data_ptr(), self.values._version, self.values.data_ptr(), w.dtype)
        if key != self._mean_key or self._mean_weight is None:
            self._mean_weight = w * u.mean(0)
            self._mean_key = key
        return self._mean_weight

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        w = scaled_weight(self.readout)  # (C, N)
        b = scaled_bias(self.readout)
        u = self.values if self.values.dtype == phi.dtype else self.values.to(phi.dtype)
        m, n = u.shape
        if self.ctx.mode == "mean":
            return F.linear(phi, self._mean_readout(w, u), b)
        if self.ctx.shared:
            # masked features of every member, member-major (M·B', N), then one GEMM for all heads
            lead = phi.shape[:-1]
            rows = remember(_masked_rows(phi, u, 1), _masked_rows, phi, u, 1)
            y = F.linear(rows, w, b)
            return y.reshape((m * lead[0],) + tuple(lead[1:]) + (w.shape[0],))
        rows = remember(_masked_rows(phi, u, m), _masked_rows, phi, u, m)
        return F.linear(rows, w, b).reshape(phi.shape[:-1] + (w.shape[0],))
