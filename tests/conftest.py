import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    """Every test starts from the same global RNG state and restores the default dtype."""
    torch.manual_seed(1234)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())
