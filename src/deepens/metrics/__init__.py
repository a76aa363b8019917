"""Uncertainty evaluation of ensembles: decomposition, out-of-distribution detection, calibration, selective
classification and temperature scaling — every function vectorised over members and over many ensembles at once
(leading axes), float64 inside.

- :func:`uncertainty_decomposition` — total / aleatoric / epistemic uncertainty, variation ratio, disagreement;
- :func:`ood_scores`, :func:`ood_detection` — scores (higher = in-distribution) and AUROC, AUPR-in/out, FPR95;
- :func:`calibration_metrics`, :func:`reliability` — ECE, MCE, adaptive and classwise ECE, Brier; diagram bins;
- :func:`risk_coverage` — risk–coverage curve, AURC, accuracy at fixed coverage;
- :class:`TemperatureScaler` — temperature before / after averaging (scalar or per class), fitted, saved, applied;
- :func:`ensemble_metrics` — all of the above for member logits ``(..., M, N, C)``, for the ensemble and its mean
  member, in one call.
"""

from __future__ import annotations

import math

import torch

from ..errors import DeepensError, all_finite, check_int
from .calibration import METRICS as CALIBRATION
from .calibration import calibration_metrics, reliability
from .ood import SCORES, ood_detection, ood_scores, scores_from
from .selective import risk_coverage
from .temperature import TemperatureScaler
from .uncertainty import member_probabilities, uncertainty_decomposition

__all__ = ["uncertainty_decomposition", "ood_scores", "ood_detection", "SCORES", "calibration_metrics", "reliability",
           "risk_coverage", "TemperatureScaler", "ensemble_metrics", "member_probabilities"]


def _scores(log_p: torch.Tensor, logits: torch.Tensor) -> tuple[dict, dict]:
    """Uncertainty parts and OOD scores of ensembles from member log-probabilities and logits (E, M, N, C),
    computed once (the scores of :func:`ood_scores`)."""
    parts = uncertainty_decomposition(log_p.exp(), _checked=True)
    return parts, scores_from(parts, logits)


def _summary(logits: torch.Tensor, labels: torch.Tensor, bins: int, ood: torch.Tensor | None) -> dict:
    """Metrics of ensembles given member logits (E, M, N, C): one value per ensemble."""
    log_p = torch.log_softmax(logits, dim=-1)
    log_mean = torch.logsumexp(log_p, dim=-3) - math.log(logits.shape[-3])  # (E, N, C)
    parts, score_in = _scores(log_p, logits)
    probs = parts["mean"]
    y = labels.expand(probs.shape[:-1])
    correct = (probs.argmax(-1) == y).double()
    out = {"accuracy": correct.mean(-1), "nll": -log_mean.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(-1),
           **calibration_metrics(probs, y, bins=bins, metrics=CALIBRATION[1:]),  # the accuracy is above
           "aurc": risk_coverage(parts["confidence"], correct)["aurc"]}
    for key in ("total", "aleatoric", "epistemic", "variation_ratio", "disagreement"):
        out[f"{key}_uncertainty" if key in ("total", "aleatoric", "epistemic") else key] = parts[key].mean(-1)
    if ood is not None:
        parts_out, score_out = _scores(torch.log_softmax(ood, dim=-1), ood)
        for name in SCORES:
            for key, value in ood_detection(score_in[name], score_out[name]).items():
                out[f"ood_{name}_{key}"] = value
        out["ood_epistemic_uncertainty"] = parts_out["epistemic"].mean(-1)
    return out


def ensemble_metrics(logits, labels, *, ood_logits=None, bins: int = 15, max_bytes: float = 512 * 2**20) -> dict:
    """Every metric of this module for ensembles given member logits ``(M, N, C)`` (one ensemble) or
    ``(E, M, N, C)`` (many) and labels ``(N,)``: for the ensemble (mean of member probabilities) ``accuracy``,
    ``nll``, ``ece``, ``mce``, ``adaptive_ece``, ``classwise_ece``, ``brier``, ``aurc``, the mean ``total`` /
    ``aleatoric`` / ``epistemic`` uncertainty, ``variation_ratio``, ``disagreement`` and, with ``ood_logits``
    (the members' logits on out-of-distribution inputs, ``(M, N_out, C)`` / ``(E, M, N_out, C)``), for every
    score of :data:`SCORES` its AUROC, AUPR-in/out and FPR95 (``ood_SCORE_METRIC``); under ``member`` the same
    (without the ensemble-only ones) averaged over the members taken one at a time. Floats for one ensemble,
    (E,) tensors for many; processed in chunks of ensembles of about ``max_bytes``."""
    bins = check_int("bins", bins, minimum=1)
    z = torch.as_tensor(logits)
    single = z.dim() == 3
    if single:
        z = z.unsqueeze(0)
    if z.dim() != 4 or not z.is_floating_point():
        raise DeepensError(f"logits: expected floating-point (members, samples, classes) or (ensembles, members, "
                           f"samples, classes), got {z.dtype} {tuple(z.shape)}")
    if not all_finite(z):
        raise DeepensError("logits: non-finite values")
    y = torch.as_tensor(labels).long()
    if y.shape != (z.shape[2],) or (y.numel() and (int(y.min()) < 0 or int(y.max()) >= z.shape[3])):
        raise DeepensError(f"labels: expected {z.shape[2]} classes in 0..{z.shape[3] - 1}")
    o = None
    if ood_logits is not None:
        o = torch.as_tensor(ood_logits)
        o = o.unsqueeze(0) if o.dim() == 3 else o
        if o.dim() != 4 or o.shape[0] != z.shape[0] or o.shape[1] != z.shape[1] or o.shape[3] != z.shape[3]:
            raise DeepensError(f"ood_logits: expected the members' logits on OOD inputs, (ensembles, members, "
                               f"samples, {z.shape[3]}) matching logits {tuple(z.shape)}, got {tuple(o.shape)}")
        if not all_finite(o):
            raise DeepensError("ood_logits: non-finite values")
    e, m, n, c = z.shape
    per = 8 * 12 * m * (n + (o.shape[2] if o is not None else 0)) * c  # a dozen float64 working copies
    chunk = max(1, min(e, int(max_bytes // max(per, 1))))
    pieces: list[dict] = []
    member_pieces: list[dict] = []
    for start in range(0, e, chunk):
        zs = z[start: start + chunk].double()
        os_ = o[start: start + chunk].double() if o is not None else None
        pieces.append(_summary(zs, y, bins, os_))
        # the members alone: every member an ensemble of one, then averaged over the members
        alone = _summary(zs.reshape(-1, 1, n, c), y, bins,
                         os_.reshape(-1, 1, os_.shape[2], c) if os_ is not None else None)
        member_pieces.append({k: v.reshape(-1, m).mean(-1) for k, v in alone.items()
                              if k not in ("epistemic_uncertainty", "variation_ratio", "disagreement",
                                           "ood_epistemic_uncertainty") and "mutual_information" not in k})
    out = {k: torch.cat([p[k] for p in pieces]) for k in pieces[0]}
    out["member"] = {k: torch.cat([p[k] for p in member_pieces]) for k in member_pieces[0]}
    if single:
        out = {k: (float(v[0]) if not isinstance(v, dict) else {kk: float(vv[0]) for kk, vv in v.items()})
               for k, v in out.items()}
    return out
