"""Per-member losses (EE Eq. 2) against a loop over members."""

import torch
from torch.nn import functional as F

from deepens.training.losses import member_losses


def test_cross_entropy_per_member_shared_and_independent_labels():
    out = torch.randn(4, 6, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    ref = torch.stack([F.cross_entropy(out[a], y) for a in range(4)])
    assert torch.allclose(member_losses(out, y, "ce"), ref, atol=1e-14)
    ym = torch.randint(0, 5, (4, 6))
    ref = torch.stack([F.cross_entropy(out[a], ym[a]) for a in range(4)])
    assert torch.allclose(member_losses(out, ym, "ce"), ref, atol=1e-14)


def test_mse_is_half_squared_error_to_one_hot():
    out = torch.randn(3, 4, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    target = F.one_hot(y, 2).double()
    ref = torch.stack([0.5 * ((out[a] - target) ** 2).sum(1).mean() for a in range(3)])
    assert torch.allclose(member_losses(out, y, "mse"), ref, atol=1e-14)
