"""Per-member losses L_α (EE Eq. 2): the mean over a member's batch of a single-point loss."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..errors import check_choice

__all__ = ["member_losses"]


def member_losses(out: torch.Tensor, y: torch.Tensor, kind: str = "ce") -> torch.Tensor:
    """L_α for every member α, shape (M,).

    ``out`` is (M, B, C); ``y`` holds class labels, (B,) shared or (M, B) one batch per member.
    ``ce``: cross-entropy. ``mse``: ½‖f − onehot(y)‖² (EE App. A uses L = ½(f − y)²).
    """
    check_choice("loss", kind, ("ce", "mse"))
    m, b, c = out.shape[0], out.shape[1], out.shape[-1]
    target = y.expand(m, b) if y.dim() == 1 else y
    if kind == "ce":
        per_sample = F.cross_entropy(out.reshape(m * b, c), target.reshape(m * b), reduction="none")
        return per_sample.view(m, b).mean(dim=1)
    onehot = F.one_hot(target, c).to(out.dtype)
    return 0.5 * (out - onehot).pow(2).sum(dim=-1).mean(dim=1)
