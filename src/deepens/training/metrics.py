"""Evaluation of ensembles from member logits (M, N, C) and labels (N,).

The ensemble's prediction is the mean of member probabilities. Reported per member and for the
ensemble: accuracy, NLL, Brier score and ECE (15 equal-width confidence bins (lo, hi]), plus the EE
paper's member correlation (§5: Pearson correlation of the binarised correct / wrong outputs of two
members, averaged over pairs α ≠ β), the disagreement (fraction of inputs on which two members
predict different classes, averaged over pairs) and the curve of the ensemble of the first k members
for k = 1..M. Computations run in float64 with log-sum-exp for the NLL, one member at a time, so
memory stays O(N·C) whatever M is.
"""

from __future__ import annotations

import math

import torch

from ..errors import DeepensError

__all__ = ["classification_metrics", "expected_calibration_error", "member_correlation", "disagreement"]


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE = Σ_b (n_b / N) |accuracy_b − confidence_b| over equal-width bins (lo, hi] of the top-1
    confidence (Guo et al. 2017): :func:`deepens.metrics.calibration_metrics`'s, so training, evaluation and the
    study report one ECE."""
    from ..metrics.calibration import expected_calibration_error as ece

    return float(ece(probs.detach().cpu(), labels.cpu(), bins=bins))


def member_correlation(correct: torch.Tensor) -> float:
    """Mean Pearson correlation of the binarised correct / wrong outputs over member pairs α ≠ β.

    ``correct`` is (M, N) boolean. Pairs in which a member is constant (all right or all wrong) have
    no correlation and are left out; NaN when no pair is left (e.g. M = 1).
    """
    m = correct.shape[0]
    if m < 2:
        return float("nan")
    c = correct.to(torch.float64)
    c = c - c.mean(dim=1, keepdim=True)
    norm = c.pow(2).sum(dim=1).sqrt()
    valid = norm > 0
    corr = (c @ c.T) / torch.outer(norm, norm).clamp_min(1e-300)
    mask = torch.outer(valid, valid) & ~torch.eye(m, dtype=torch.bool, device=correct.device)
    if not bool(mask.any()):
        return float("nan")
    return float(corr[mask].mean())


def disagreement(preds: torch.Tensor, num_classes: int) -> float:
    """Fraction of inputs on which two members predict different classes, averaged over pairs α ≠ β."""
    m = preds.shape[0]
    if m < 2:
        return float("nan")
    counts = torch.zeros(preds.shape[1], num_classes, dtype=torch.float64, device=preds.device)
    counts.scatter_add_(1, preds.T.long(), torch.ones(preds.shape[1], m, dtype=torch.float64, device=preds.device))
    agree_pairs = (counts * (counts - 1)).sum(dim=1)
    return float((1.0 - agree_pairs / (m * (m - 1))).mean())


def _scores(probs: torch.Tensor, labels: torch.Tensor, log_py: torch.Tensor, bins: int) -> dict:
    """Accuracy, NLL, Brier and ECE from probabilities (N, C) and log p(y) (N,)."""
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).to(probs.dtype)
    return {
        "accuracy": float((probs.argmax(dim=1) == labels).to(torch.float64).mean()),
        "nll": float(-log_py.mean()),
        "brier": float((probs - onehot).pow(2).sum(dim=1).mean()),
        "ece": expected_calibration_error(probs, labels, bins),
    }


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, *, bins: int = 15, curve: bool = True
) -> dict:
    """Metrics of every member and of the ensemble (mean of member probabilities).

    Returns ``accuracy``, ``nll``, ``brier``, ``ece`` (ensemble); ``member_accuracy``, ``member_nll``,
    ``member_brier``, ``member_ece`` (means over members) and ``members`` (per-member lists);
    ``correlation``, ``disagreement``, ``gain`` (ensemble accuracy minus mean member accuracy) and
    ``curve`` (the ensemble of the first k members, k = 1..M).
    """
    if logits.dim() != 3:
        raise DeepensError(f"logits: expected shape (members, samples, classes), got {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[1]:
        raise DeepensError(f"labels: expected shape ({logits.shape[1]},), got {tuple(labels.shape)}")
    m, n, c = logits.shape
    labels = labels.long()
    members: dict[str, list[float]] = {"accuracy": [], "nll": [], "brier": [], "ece": []}
    preds = torch.empty(m, n, dtype=torch.long, device=logits.device)
    prob_sum = torch.zeros(n, c, dtype=torch.float64, device=logits.device)
    log_py_members = torch.empty(m, n, dtype=torch.float64, device=logits.device)
    points = []
    for a in range(m):
        logp = torch.log_softmax(logits[a].to(torch.float64), dim=1)
        log_py = logp.gather(1, labels[:, None]).squeeze(1)
        probs = logp.exp()
        scores = _scores(probs, labels, log_py, bins)
        for key, value in scores.items():
            members[key].append(value)
        preds[a] = logp.argmax(dim=1)
        log_py_members[a] = log_py
        prob_sum += probs
        if curve or a == m - 1:
            k = a + 1
            ens_log_py = torch.logsumexp(log_py_members[:k], dim=0) - math.log(k)
            points.append({"k": k, **_scores(prob_sum / k, labels, ens_log_py, bins)})
    final = points[-1]
    correct = preds == labels[None]
    result = {
        "accuracy": final["accuracy"],
        "nll": final["nll"],
        "brier": final["brier"],
        "ece": final["ece"],
        "member_accuracy": sum(members["accuracy"]) / m,
        "member_nll": sum(members["nll"]) / m,
        "member_brier": sum(members["brier"]) / m,
        "member_ece": sum(members["ece"]) / m,
        "correlation": member_correlation(correct),
        "disagreement": disagreement(preds, c),
        "members": members,
        "samples": n,
    }
    result["gain"] = result["accuracy"] - result["member_accuracy"]
    if curve:
        result["curve"] = points
    return result
