"""Exact parameter and FLOP counts of real modules (the closed forms of the families are tested
against these)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from ..errors import DeepensError

__all__ = ["count_parameters", "count_flops"]


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """The number of (trainable) parameters of ``module``."""
    if not isinstance(module, nn.Module):
        raise DeepensError(f"module: expected an nn.Module, got {type(module).__name__}")
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_flops(module: nn.Module, input_shape: Sequence[int], batch: int = 1) -> int:
    """Forward FLOPs of ``module`` on ``batch`` inputs of ``input_shape``, by ``torch.utils.flop_counter``
    (2 per multiply-accumulate of matmuls and convolutions), counted on the meta device: no memory for
    activations and no arithmetic, so whole networks are counted instantly."""
    if not isinstance(module, nn.Module):
        raise DeepensError(f"module: expected an nn.Module, got {type(module).__name__}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise DeepensError(f"input_shape: expected positive sizes, got {tuple(input_shape)}")
    ref = next(iter(module.parameters()), None)
    dtype = ref.dtype if ref is not None else torch.float32
    # the module's own parameters and buffers are swapped for meta tensors in the call: nothing is copied
    meta = {name: torch.empty_like(t, device="meta") for name, t in
            [*module.named_parameters(), *module.named_buffers()]}
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        functional_call(module, meta, (torch.empty((batch,) + shape, device="meta", dtype=dtype),))
    return int(counter.get_total_flops())
