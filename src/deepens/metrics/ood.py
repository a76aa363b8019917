"""Out-of-distribution detection from any score, for many ensembles at once.

Scores (:func:`ood_scores`) are oriented so that **higher means more in-distribution**: ``max_probability``
(of the mean member distribution, Hendrycks & Gimpel 2017), ``neg_entropy`` (−H[p̄]), ``neg_mutual_information``
(−epistemic uncertainty), ``energy`` (T·logsumexp(z̄/T) of the mean member logits, Liu et al. 2020) and
``max_logit`` (of the mean member logits).

:func:`ood_detection` treats the in-distribution samples as the positive class and returns, per leading index,
``auroc`` (area under the ROC curve, ties counted one half — scikit-learn's ``roc_auc_score``), ``aupr_in``
(average precision with in-distribution positive — ``average_precision_score``), ``aupr_out`` (the same with
the OOD samples positive and the score negated) and ``fpr95`` (the false-positive rate at the first threshold
whose true-positive rate reaches 95 %). All from one sort per row, vectorised over leading axes.
"""

from __future__ import annotations

import torch

from ..errors import DeepensError, check_real
from .uncertainty import member_probabilities, uncertainty_decomposition

__all__ = ["ood_scores", "ood_detection", "SCORES"]

SCORES = ("max_probability", "neg_entropy", "neg_mutual_information", "energy", "max_logit")


def ood_scores(logits: torch.Tensor, *, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """Every score of :data:`SCORES` for member logits ``(..., M, B, C)``; each ``(..., B)``, higher = more
    in-distribution."""
    z = torch.as_tensor(logits)
    t = check_real("temperature", temperature, low=0.0, low_open=True)
    parts = uncertainty_decomposition(member_probabilities(z, logits=True, temperature=t))
    return scores_from(parts, z.double(), t)


def scores_from(parts: dict, logits: torch.Tensor, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """The scores of :data:`SCORES` from an :func:`uncertainty_decomposition` of member probabilities and the
    member logits ``(..., M, B, C)`` (float64) they came from."""
    mean_logits = logits.mean(-3)
    return {"max_probability": parts["confidence"], "neg_entropy": -parts["total"],
            "neg_mutual_information": -parts["epistemic"],
            "energy": temperature * torch.logsumexp(mean_logits / temperature, dim=-1),
            "max_logit": mean_logits.max(-1).values}


def _check(name: str, x) -> torch.Tensor:
    """Scores in their own floating dtype (sorting and tie detection are exact in it; sums are float64)."""
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.double()
    if x.dim() < 1 or x.shape[-1] < 1:
        raise DeepensError(f"{name}: expected scores of shape (..., N) with N >= 1, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise DeepensError(f"{name}: non-finite scores (NaN or inf)")
    return x


def _previous_at_group_ends(values: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """For every position, ``values`` at the last group end strictly before it (0 before the first): a running
    maximum of the non-decreasing ``values`` masked to the group ends, shifted by one."""
    masked = torch.where(ends, values, torch.zeros_like(values))
    running = torch.cummax(masked, dim=-1).values
    return torch.cat([torch.zeros_like(running[..., :1]), running[..., :-1]], dim=-1)


def ood_detection(score_in, score_out) -> dict[str, torch.Tensor]:
    """AUROC, AUPR-in, AUPR-out and FPR at 95 % TPR of in-distribution ``score_in`` (..., N_in) against
    ``score_out`` (..., N_out) (leading axes broadcast); values of shape (...) in float64."""
    s_in, s_out = _check("score_in", score_in), _check("score_out", score_out)
    lead = torch.broadcast_shapes(s_in.shape[:-1], s_out.shape[:-1])
    s_in, s_out = s_in.expand(*lead, s_in.shape[-1]), s_out.expand(*lead, s_out.shape[-1])
    n_pos, n_neg = s_in.shape[-1], s_out.shape[-1]
    dtype = torch.promote_types(s_in.dtype, s_out.dtype)
    scores = torch.cat([s_in.to(dtype), s_out.to(dtype)], dim=-1)
    positive = torch.cat([torch.ones(s_in.shape, dtype=torch.float64), torch.zeros(s_out.shape, dtype=torch.float64)],
                         dim=-1)

    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    s, pos = torch.gather(scores, -1, order), torch.gather(positive, -1, order)
    rank = torch.arange(1, scores.shape[-1] + 1, dtype=torch.float64)

    def curves(s: torch.Tensor, pos: torch.Tensor, n_pos: int, n_neg: int):
        """Recall (TPR), FPR and precision along scores sorted in decreasing order, and the group ends."""
        tp, fp = pos.cumsum(-1), (1 - pos).cumsum(-1)
        ends = torch.ones_like(s, dtype=torch.bool)  # the last position of each group of tied scores
        ends[..., :-1] = s[..., 1:] != s[..., :-1]
        return tp / n_pos, fp / max(n_neg, 1), tp / rank, ends

    tpr, fpr, precision, ends = curves(s, pos, n_pos, n_neg)
    tpr_prev, fpr_prev = _previous_at_group_ends(tpr, ends), _previous_at_group_ends(fpr, ends)
    auroc = torch.where(ends, (fpr - fpr_prev) * (tpr + tpr_prev) / 2, torch.zeros_like(tpr)).sum(-1)
    aupr_in = torch.where(ends, (tpr - tpr_prev) * precision, torch.zeros_like(tpr)).sum(-1)
    reached = ends & (tpr >= 0.95 - 1e-12)
    first = torch.argmax(reached.to(torch.int8), dim=-1, keepdim=True)  # the first group end reaching 95 %
    fpr95 = torch.gather(fpr, -1, first).squeeze(-1)
    # OOD positive with the score negated: the same order reversed (ties stay groups)
    r_out, _, precision_out, ends_out = curves(-s.flip(-1), 1 - pos.flip(-1), n_neg, n_pos)
    r_out_prev = _previous_at_group_ends(r_out, ends_out)
    aupr_out = torch.where(ends_out, (r_out - r_out_prev) * precision_out, torch.zeros_like(r_out)).sum(-1)
    return {"auroc": auroc, "aupr_in": aupr_in, "aupr_out": aupr_out, "fpr95": fpr95}
