"""Figures of an ensemble's uncertainty (PNG, written atomically): the reliability diagram with its confidence
histogram, score histograms in vs out of distribution, and risk–coverage curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io.figures import pyplot, save_png
from .calibration import reliability
from .selective import risk_coverage

__all__ = ["reliability_diagram", "score_histograms", "risk_coverage_plot"]


def reliability_diagram(curves: dict[str, tuple[torch.Tensor, torch.Tensor]], path: str | Path,
                        *, bins: int = 15) -> Path:
    """Accuracy against confidence per equal-width bin (the gap to the diagonal is the miscalibration) for every
    named predictive distribution ``{label: (probs (N, C), labels (N,))}``, above the histogram of confidences."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.6, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    for i, (label, (probs, labels)) in enumerate(curves.items()):
        d = reliability(probs, labels, bins=bins)
        mid = ((d["edges"][1:] + d["edges"][:-1]) / 2).numpy()
        full = ~torch.isnan(d["accuracy"])
        top.plot(d["confidence"][full].numpy(), d["accuracy"][full].numpy(), "o-", color=f"C{i}", label=label, ms=4)
        bottom.bar(mid, d["count"].numpy() / float(d["count"].sum()), width=1 / bins, alpha=0.4, color=f"C{i}")
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(fontsize=7)
    bottom.set_xlabel("confidence (max probability)")
    bottom.set_ylabel("fraction")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)


def score_histograms(score_in: torch.Tensor, scores_out: dict[str, torch.Tensor], path: str | Path,
                     *, name: str = "score") -> Path:
    """Histograms of an OOD score on the test set and on every OOD set (higher = more in-distribution)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.3))
    values = [score_in.numpy()] + [s.numpy() for s in scores_out.values()]
    lo, hi = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
    edges = np.linspace(lo, hi if hi > lo else lo + 1, 41)
    ax.hist(values[0], bins=edges, density=True, alpha=0.5, label="test (in distribution)")
    for i, (label, s) in enumerate(scores_out.items(), start=1):
        ax.hist(s.numpy(), bins=edges, density=True, alpha=0.5, label=label, color=f"C{i}")
    ax.set_xlabel(name)
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)


def risk_coverage_plot(curves: dict[str, tuple[torch.Tensor, torch.Tensor]], path: str | Path) -> Path:
    """Risk (error rate of the kept predictions) against coverage for ``{label: (confidence, correct)}``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.3))
    for label, (confidence, correct) in curves.items():
        rc = risk_coverage(confidence, correct)
        ax.plot(rc["coverage"].numpy(), rc["risk"].numpy(), label=f"{label} (AURC {float(rc['aurc']):.4f})")
    ax.set_xlabel("coverage")
    ax.set_ylabel("risk (error rate)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)
