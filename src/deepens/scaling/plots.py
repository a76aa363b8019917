"""PNG figures of power laws, the (n, size) plane and CNLL against the memory budget (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.figures import pyplot, save_png

__all__ = ["plot_power_law", "plot_plane", "plot_budget"]


def plot_power_law(curves: dict[str, tuple[list[float], list[float], dict | None]], path: str | Path,
                   *, ylabel: str = "CNLL", xlabel: str = "ensemble size n") -> Path:
    """Left: the measured values against m (log axis) with each fitted c + b·m^a. Right: log₂(ŷ − c) against
    log₂ m, where a power law is a straight line. ``curves`` maps a label to (m, ŷ, fit dict or None)."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, (m, y, fit) in curves.items():
        m, y = np.asarray(m, dtype=float), np.asarray(y, dtype=float)
        line = left.plot(m, y, "o", label=label)[0]
        if fit:
            grid = np.geomspace(m.min(), m.max(), 200)
            left.plot(grid, fit["c"] + fit["b"] * grid ** fit["a"], "-", color=line.get_color(), alpha=0.8)
            keep = y > fit["c"]
            right.plot(np.log2(m[keep]), np.log2(y[keep] - fit["c"]), "o", color=line.get_color(), label=label)
            right.plot(np.log2(grid), np.log2(fit["b"]) + fit["a"] * np.log2(grid), "-", color=line.get_color(),
                       alpha=0.8)
    left.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    left.xaxis.set_major_formatter(ScalarFormatter())
    left.xaxis.set_minor_formatter(NullFormatter())
    left.set_xlabel(xlabel)
    left.set_ylabel(ylabel)
    left.set_title("measured (points) and c + b·m^a (lines)")
    right.set_xlabel(f"log2 {xlabel.split()[-1]}")
    right.set_ylabel(f"log2({ylabel} − c)")
    right.set_title("log-space: a power law is a line")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return save_png(fig, path)


def plot_plane(curves: dict[float, list[dict]], path: str | Path, *, key: str = "cnll_mean") -> Path:
    """The (n, network size) plane of a metric as a heat map (power-laws Fig. 1, left)."""
    plt = pyplot()
    sizes = sorted(curves)
    ns = sorted({r["n"] for rows in curves.values() for r in rows})
    grid = np.full((len(sizes), len(ns)), np.nan)
    for i, s in enumerate(sizes):
        for r in curves[s]:
            grid[i, ns.index(r["n"])] = r[key]
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * len(ns), 1.0 + 0.6 * len(sizes)))
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis_r")
    ax.set_xticks(range(len(ns)), [str(n) for n in ns])
    ax.set_yticks(range(len(sizes)), [f"{int(s):,}" for s in sizes])
    ax.set_xlabel("ensemble size n")
    ax.set_ylabel("parameters per network")
    fig.colorbar(image, ax=ax, label=key.replace("_mean", "").upper())
    return save_png(fig, path)


def plot_budget(envelope: dict, path: str | Path) -> Path:
    """CNLL against the total parameter count n·s for each network size, the lower envelope and its
    power law (power-laws Fig. 5)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    by_size: dict[float, list[dict]] = {}
    for p in envelope["points"]:
        by_size.setdefault(p["size"], []).append(p)
    for size, pts in sorted(by_size.items()):
        pts = sorted(pts, key=lambda p: p["budget"])
        ax.plot([p["budget"] for p in pts], [p["value"] for p in pts], "o-", ms=3, alpha=0.7,
                label=f"{int(size):,} params/net")
    env = envelope["envelope"]
    ax.plot([p["budget"] for p in env], [p["value"] for p in env], "k--", lw=1.5, label="lower envelope")
    if envelope.get("fit"):
        fit = envelope["fit"]
        grid = np.geomspace(env[0]["budget"], env[-1]["budget"], 200)
        ax.plot(grid, fit["c"] + fit["b"] * grid ** fit["a"], "r-", lw=1, label="power law of the envelope")
    ax.set_xscale("log")
    ax.set_xlabel("memory budget (total parameters)")
    ax.set_ylabel("CNLL")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_png(fig, path)
