"""Calibration of predictive distributions, for many ensembles at once: probabilities ``(..., N, C)`` and labels
``(N,)`` (or ``(..., N)``); every result has the leading shape ``(...)``.

* ``accuracy`` — the fraction of samples whose top-1 class (the first largest probability) is the label;
* ``ece`` — Σ_b (n_b/N) |acc_b − conf_b| over ``bins`` equal-width confidence bins (lo, hi] (Guo et al. 2017);
* ``mce`` — the largest |acc_b − conf_b| over non-empty bins;
* ``adaptive_ece`` — the same over equal-mass bins (samples sorted by confidence, split into ``bins`` groups of
  ⌊N/bins⌋ or ⌈N/bins⌉; Nixon et al. 2019);
* ``classwise_ece`` — (1/C) Σ_c Σ_b (n_cb/N) |freq_cb − conf_cb| with the probability of each class binned
  (Kull et al. 2019);
* ``brier`` — mean of Σ_c (p_c − 1[y = c])².

:func:`reliability` gives the per-bin counts, confidences and accuracies a reliability diagram draws.
"""

from __future__ import annotations

import torch

from ..errors import DeepensError, all_finite, check_int

__all__ = ["calibration_metrics", "reliability", "expected_calibration_error"]


def _inputs(probs, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities in their own floating dtype (maxima and comparisons are exact in it; sums are taken in
    float64) and labels broadcast to (..., N)."""
    p = torch.as_tensor(probs)
    if not p.is_floating_point():
        p = p.double()
    y = torch.as_tensor(labels).long()
    if p.dim() < 2:
        raise DeepensError(f"probs: expected (..., samples, classes), got shape {tuple(p.shape)}")
    if not all_finite(p):
        raise DeepensError("probs: non-finite values")
    if y.shape[-1] != p.shape[-2]:
        raise DeepensError(f"labels: expected {p.shape[-2]} labels, got shape {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= p.shape[-1]):
        raise DeepensError(f"labels: expected classes in 0..{p.shape[-1] - 1}")
    return p, y.expand(p.shape[:-1])


def _binned(conf: torch.Tensor, hit: torch.Tensor, index: torch.Tensor, bins: int):
    """Per-bin counts, confidence sums and hit sums (..., bins)."""
    shape = (*conf.shape[:-1], bins)
    zeros = torch.zeros(shape, dtype=torch.float64, device=conf.device)
    count = zeros.clone().scatter_add_(-1, index, torch.ones_like(conf))
    conf_sum = zeros.clone().scatter_add_(-1, index, conf)
    hit_sum = zeros.scatter_add_(-1, index, hit)
    return count, conf_sum, hit_sum


def _top1(p: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-1 confidence in float64 (the maximum is taken in p's own dtype: exact) and whether the top-1 class
    (the first largest probability, as argmax) is the label (bool)."""
    conf, pred = p.max(-1)
    return conf.double(), pred == y


def _width_index(conf: torch.Tensor, bins: int) -> torch.Tensor:
    """The equal-width bin (lo, hi] of each float64 confidence: ceil(conf · bins) − 1, clamped (in place on one
    working copy)."""
    return (conf * bins).ceil_().sub_(1).clamp_(0, bins - 1).long()


def reliability(probs, labels, *, bins: int = 15) -> dict[str, torch.Tensor]:
    """Equal-width bins of the top-1 confidence: ``count``, mean ``confidence`` and ``accuracy`` per bin (NaN in
    empty bins), and the bin ``edges``; shapes (..., bins) and (bins + 1,)."""
    bins = check_int("bins", bins, minimum=1)
    p, y = _inputs(probs, labels)
    conf, right = _top1(p, y)
    count, conf_sum, hit_sum = _binned(conf, right.double(), _width_index(conf, bins), bins)
    safe = count.clamp_min(1)
    nan = torch.full_like(count, float("nan"))
    return {"count": count, "confidence": torch.where(count > 0, conf_sum / safe, nan),
            "accuracy": torch.where(count > 0, hit_sum / safe, nan),
            "edges": torch.linspace(0, 1, bins + 1, dtype=torch.float64, device=conf.device)}


def expected_calibration_error(probs, labels, *, bins: int = 15) -> torch.Tensor:
    """ECE alone (the ``ece`` of :func:`calibration_metrics`, without the other metrics' work)."""
    return calibration_metrics(probs, labels, bins=bins, metrics=("ece",))["ece"]


METRICS = ("accuracy", "ece", "mce", "adaptive_ece", "classwise_ece", "brier")


def calibration_metrics(probs, labels, *, bins: int = 15, metrics=METRICS) -> dict[str, torch.Tensor]:
    """``accuracy``, ``ece``, ``mce``, ``adaptive_ece``, ``classwise_ece`` and ``brier`` (see the module
    docstring), or the subset named in ``metrics`` (only their work is done: the top-1 metrics share one maximum,
    ECE and MCE one pass of per-bin sums)."""
    bins = check_int("bins", bins, minimum=1)
    wanted = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = sorted(set(wanted) - set(METRICS))
    if unknown or not wanted:
        raise DeepensError(f"metrics: expected some of {', '.join(METRICS)}; got {list(wanted)}")
    p, y = _inputs(probs, labels)
    n, classes = p.shape[-2], p.shape[-1]
    out: dict[str, torch.Tensor] = {}
    if {"accuracy", "ece", "mce", "adaptive_ece"} & set(wanted):
        conf, right = _top1(p, y)
        if "accuracy" in wanted:
            out["accuracy"] = right.sum(-1).double() / n  # an exact count
    if "ece" in wanted or "mce" in wanted:
        index = _width_index(conf, bins)
        gap = torch.zeros((*conf.shape[:-1], bins), dtype=torch.float64, device=conf.device).scatter_add_(
            -1, index, right.double().sub_(conf))
        if "ece" in wanted:
            out["ece"] = gap.abs().sum(-1) / n
        if "mce" in wanted:
            ones = torch.ones((), dtype=torch.float64, device=conf.device).expand(index.shape)
            count = torch.zeros_like(gap).scatter_add_(-1, index, ones)
            out["mce"] = torch.where(count > 0, gap.abs() / count.clamp_min(1), torch.zeros_like(gap)).max(-1).values
    if "adaptive_ece" in wanted:
        order = torch.argsort(conf, dim=-1, stable=True)  # equal mass: ranks split into `bins` groups
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(n).expand_as(order))
        _, mass_conf, mass_hit = _binned(conf, right.double(), (rank * bins) // n, bins)
        out["adaptive_ece"] = (mass_hit - mass_conf).abs().sum(-1) / n
    if "classwise_ece" in wanted or "brier" in wanted:
        pd = p.double()
        onehot = torch.nn.functional.one_hot(y, classes).double()
        if "classwise_ece" in wanted:
            pc = pd.transpose(-1, -2)  # (..., C, N)
            _, c_conf, c_hit = _binned(pc, onehot.transpose(-1, -2), _width_index(pc, bins), bins)
            out["classwise_ece"] = (c_hit - c_conf).abs().sum(-1).sum(-1) / (n * classes)
        if "brier" in wanted:
            out["brier"] = (pd - onehot).pow(2).sum(-1).mean(-1)
    return {k: out[k] for k in METRICS if k in out}
