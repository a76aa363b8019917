"""What the parts of every paper share: the :class:`Part` shape, figures, per-seed aggregation, fits."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.figures import pyplot, save_png
from .claims import Claim, measure
from .config import StudyConfig

__all__ = ["Part", "finite", "fmt", "row_metrics", "ok", "axes", "finish", "errorbar", "aggregate", "slope",
           "spearman", "per_seed", "METRICS"]


@dataclass(frozen=True)
class Part:
    """One experiment of the study.

    ``run(config, ctx)`` returns ``{"results": ..., "tables": {name: rows}, "measured": {quantity:
    measure(...)}, "scale": {...}, "reading": [sentences], "headline": sentence}``; the runner evaluates
    ``claims`` (declared here, before the run) on ``measured``. ``plot(record, folder)`` writes its PNGs.
    ``prefixes`` name the config fields it reads besides ``seed``/``seeds``/``data_dir``; ``reference`` adds the
    EE reference setup. A part with ``trains`` hands every training it needs to ``ctx.prefetch`` before it asks
    for the first result (the study's plan collects them there)."""

    name: str
    paper: str
    title: str
    prefixes: tuple[str, ...]
    units: Callable[[StudyConfig], int]  # progress units (trainings, kernel evaluations, ...)
    run: Callable[[StudyConfig, object], dict]
    plot: Callable[[dict, Path], list[Path]]
    claims: tuple[Claim, ...] = field(default=())
    reference: bool = False
    summary: str = ""  # what the part does, for the report and docs
    trains: bool = False  # its trainings go through ``ctx.prefetch`` / ``ctx.train`` (what ``--plan`` counts)


def finite(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def fmt(x, spec: str = ".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


METRICS = ("accuracy", "member_accuracy", "nll", "ece", "correlation", "gain", "train_accuracy",
           "train_member_accuracy")


def row_metrics(result, *, test: dict | None = None) -> dict:
    """Test (and train) metrics of a training, or ``diverged`` with every metric None when it diverged
    (``result`` None: ``ctx.try_train`` caught the divergence)."""
    if result is None and test is None:
        return {"diverged": True, **dict.fromkeys(METRICS)}
    test = test if test is not None else result.metrics["test"]
    out = {"diverged": False, "accuracy": test["accuracy"], "member_accuracy": test["member_accuracy"],
           "nll": test["nll"], "ece": test["ece"], "correlation": finite(test["correlation"]), "gain": test["gain"]}
    if result is not None:
        out["train_accuracy"] = result.metrics["train"]["accuracy"]
        out["train_member_accuracy"] = result.metrics["train"]["member_accuracy"]
    return out


def ok(rows: list[dict], key: str = "accuracy") -> list[dict]:
    return [r for r in rows if r.get(key) is not None]


def aggregate(rows: list[dict], keys: Sequence[str], metrics: Iterable[str] = METRICS) -> list[dict]:
    """Rows of several seeds averaged per value of ``keys``: every metric's mean over the seeds where it was
    measured, ``METRIC_std`` its standard deviation, ``seeds`` how many rows were pooled, in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, members in groups.items():
        row = dict(zip(keys, key, strict=True))
        for name in metrics:
            m = measure([r.get(name) for r in members])
            row[name], row[f"{name}_std"] = m["mean"], m["std"]
        row["seeds"] = len(members)
        row["diverged"] = sum(bool(r.get("diverged")) for r in members)
        out.append(row)
    return out


def per_seed(rows: list[dict], fn: Callable[[list[dict]], float | None], seeds: int) -> dict:
    """``measure`` of ``fn`` applied to each seed's rows (rows carry ``seed``)."""
    return measure([fn([r for r in rows if r["seed"] == s]) for s in range(seeds)])


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log y against log x (None when fewer than 2 positive points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True)
           if x is not None and y is not None and x > 0 and y > 0 and math.isfinite(y)]
    if len(pts) < 2:
        return None
    lx, ly = np.array(pts).T
    return float(np.polyfit(lx, ly, 1)[0])


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation (scipy; None when undefined, e.g. a constant sequence)."""
    from scipy.stats import spearmanr

    if len(a) < 2:
        return None
    if len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return finite(spearmanr(a, b).statistic)


def axes(n: int, width: float = 4.0, height: float = 3.3):
    plt = pyplot()
    fig, ax = plt.subplots(1, n, figsize=(width * n, height))
    return fig, np.atleast_1d(ax)


def finish(fig, ax, path: Path) -> Path:
    for a in ax:
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def errorbar(ax, rows: list[dict], x: str, y: str, label: str | None = None, **style):
    """Plot ``y`` (mean over seeds) with its ``y_std`` against ``x`` for rows where it was measured."""
    pts = [r for r in rows if r.get(y) is not None]
    return ax.errorbar([r[x] for r in pts], [r[y] for r in pts], yerr=[r.get(f"{y}_std") or 0.0 for r in pts],
                       capsize=2, label=label, **style)
