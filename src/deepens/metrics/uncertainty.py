"""Uncertainty of an ensemble's prediction, decomposed (Depeweg et al. 2018; Lakshminarayanan et al. 2017):

    total     H[p̄]            entropy of the mean member distribution p̄ = (1/M) Σ_m p_m
    aleatoric (1/M) Σ_m H[p_m] mean member entropy (expected data uncertainty)
    epistemic total − aleatoric  mutual information I(y; member) ≥ 0 (Jensen): the members' disagreement

plus the vote statistics ``variation_ratio`` = 1 − (votes of the modal class)/M and ``disagreement`` (the
fraction of member pairs predicting different classes). Everything is per sample, vectorised over any leading
axes: probabilities ``(M, B, C)`` of one ensemble or ``(E, M, B, C)`` of many, in float64 with x·log x := 0 at 0.
"""

from __future__ import annotations

import torch

from ..errors import DeepensError, check_real

__all__ = ["uncertainty_decomposition", "member_probabilities"]


def member_probabilities(values: torch.Tensor, *, logits: bool = False, temperature: float = 1.0) -> torch.Tensor:
    """Member probabilities ``(..., M, B, C)`` in float64 from probabilities, or from logits with a temperature
    (``softmax(z / T)``); refuses shapes without a member axis and non-finite or negative entries."""
    x = torch.as_tensor(values)
    if x.dim() < 3:
        raise DeepensError(f"probs: expected (members, samples, classes) or (..., members, samples, classes), got "
                           f"shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise DeepensError(f"probs: expected floating-point values, got {x.dtype}")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        index = tuple(int(i) for i in (~finite).nonzero()[0])
        raise DeepensError(f"probs: non-finite values ({int((~finite).sum())} of them), the first at index {index}")
    x = x.double()
    if logits:
        t = check_real("temperature", temperature, low=0.0, low_open=True)
        return torch.softmax(x / t, dim=-1)
    if bool((x < 0).any()) or not torch.allclose(x.sum(-1), torch.ones((), dtype=x.dtype), atol=1e-6):
        raise DeepensError("probs: expected probabilities (non-negative, summing to 1 over classes); pass "
                           "logits=True for logits")
    return x


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(-1)


def uncertainty_decomposition(values: torch.Tensor, *, logits: bool = False, temperature: float = 1.0,
                              _checked: bool = False) -> dict:
    """Per-sample ``total``, ``aleatoric``, ``epistemic`` (nats), ``variation_ratio``, ``disagreement`` and
    ``confidence`` (max of p̄) of ensembles given member probabilities ``(..., M, B, C)`` (or logits with
    ``logits=True`` and a ``temperature``); each result has shape ``(..., B)``. ``mean`` holds p̄ ``(..., B, C)``."""
    p = values if _checked else member_probabilities(values, logits=logits, temperature=temperature)
    m, classes = p.shape[-3], p.shape[-1]
    mean = p.mean(-3)
    total = _entropy(mean)
    aleatoric = _entropy(p).mean(-2)
    epistemic = (total - aleatoric).clamp_min(0.0)  # ≥ 0 exactly; rounding can give −1e-17
    votes = torch.nn.functional.one_hot(p.argmax(-1), classes).to(torch.float64).sum(-3)  # (..., B, C)
    variation = 1.0 - votes.max(-1).values / m
    pairs = (votes * (votes - 1)).sum(-1)
    disagreement = 1.0 - pairs / (m * (m - 1)) if m > 1 else torch.zeros_like(variation)
    return {"total": total, "aleatoric": aleatoric, "epistemic": epistemic, "variation_ratio": variation,
            "disagreement": disagreement, "confidence": mean.max(-1).values, "mean": mean}
