"""Block-diagonal dense layers: m independent dense layers applied in one batched matmul.

A block-diagonal weight acting on m concatenated feature groups is the same map as m separate dense
layers, one per group; this is how a fully connected collegial ensemble (CE §3, "block diagonal
layers") runs all its m networks at once. Activations keep the block (member) axis first,
(m, B, features), so no concatenation or transposition happens between layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import DeepensError, check_choice, check_int, check_real
from .parameterized import PARAMETERIZATIONS

__all__ = ["BlockDiagonalLinear"]


class BlockDiagonalLinear(nn.Module):
    """m dense layers y_j = x_j W_j + b_j (j = 1..m) as one batched matmul.

    ``weight`` has shape (m, in, out) and ``bias`` (m, 1, out), member axis first. Input (m, B, in),
    or (B, in) with ``shared_input=True`` (the first layer of a collegial ensemble: every block reads
    the same input; one broadcast batched GEMM). Output (m, B, out).

    ``parameterization`` is ``"standard"`` (W ~ N(0, σ_w²/in), plain forward) or ``"ntk"`` (W ~ N(0, 1),
    forward multiplier σ_w/√in per block; biases N(0, 1) times σ_b), as :mod:`deepens.layers.parameterized`.
    :meth:`dense_weight` gives the equivalent (m·out, m·in) block-diagonal matrix on concatenated features.
    """

    def __init__(
        self,
        blocks: int,
        in_features: int,
        out_features: int,
        bias: bool = False,
        *,
        shared_input: bool = False,
        parameterization: str = "standard",
        weight_std: float = 1.0,
        bias_std: float = 0.0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.blocks = check_int("blocks", blocks, minimum=1)
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        self.shared_input = bool(shared_input)
        self.parameterization = check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        self.weight_std = check_real("weight_std", weight_std, low=0.0)
        self.bias_std = check_real("bias_std", bias_std, low=0.0)
        kw = {"dtype": dtype, "device": device}
        self.weight = nn.Parameter(torch.empty(self.blocks, self.in_features, self.out_features, **kw))
        self.bias = nn.Parameter(torch.empty(self.blocks, 1, self.out_features, **kw)) if bias else None
        self.fan_in = self.in_features
        ntk = self.parameterization == "ntk"
        self.weight_scale = self.weight_std / math.sqrt(self.fan_in) if ntk else 1.0
        self.bias_scale = self.bias_std if ntk else 1.0
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Redraw the weights (and biases) from the parameterization's initial distribution."""
        ntk = self.parameterization == "ntk"
        std = 1.0 if ntk else self.weight_std / math.sqrt(self.fan_in)
        self.weight.normal_(0.0, std, generator=generator)
        if self.bias is not None:
            if ntk or self.bias_std > 0:
                self.bias.normal_(0.0, 1.0 if ntk else self.bias_std, generator=generator)
            else:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.weight_scale == 1.0 else self.weight * self.weight_scale
        b = None
        if self.bias is not None:
            b = self.bias if self.bias_scale == 1.0 else self.bias * self.bias_scale
        m, n_in, n_out = w.shape
        if self.shared_input:
            if x.dim() != 2 or x.shape[1] != n_in:
                raise DeepensError(f"x: expected a shared input (B, {n_in}), got {tuple(x.shape)}")
            # (B, in) × (m, in, out) → (m, B, out): one batched GEMM reading the input in place (no copy
            # of the weight into a (in, m·out) layout, output already member-first)
            y = torch.matmul(x, w)
            return y + b if b is not None else y
        if x.dim() != 3 or x.shape[0] != m or x.shape[2] != n_in:
            raise DeepensError(f"x: expected per-block inputs ({m}, B, {n_in}), got {tuple(x.shape)}")
        return torch.baddbmm(b, x, w) if b is not None else torch.bmm(x, w)

    def dense_weight(self) -> torch.Tensor:
        """The equivalent dense weight in ``nn.Linear`` layout: (m·out, in) stacked for a shared input,
        else the (m·out, m·in) block-diagonal matrix acting on concatenated features."""
        w = (self.weight * self.weight_scale).detach().transpose(1, 2)  # (m, out, in)
        if self.shared_input:
            return w.reshape(self.blocks * self.out_features, self.in_features)
        return torch.block_diag(*w)

    def extra_repr(self) -> str:
        return (f"blocks={self.blocks}, in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, shared_input={self.shared_input}, "
                f"parameterization={self.parameterization}")
