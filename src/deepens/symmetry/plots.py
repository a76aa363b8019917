"""PNG figures of the emergent-equivariance experiments (matplotlib, Agg, written atomically)."""

from __future__ import annotations

from pathlib import Path

from ..io.figures import pyplot, save_png

__all__ = ["plot_experiment"]

_SET_LABEL = {"in": "in distribution", "ood": "out of distribution", "test": "test digits",
              "photos": "photo patches (OOD)", "noise": "noise images (OOD)"}


def _ising(result: dict, path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    rows = result["widths"]
    widths = [r["width"] for r in rows]
    ax = axes[0]
    for name, color in (("in", "C0"), ("ood", "C1")):
        ax.plot(widths, [r["sets"][name]["distance"]["relative"] for r in rows], "o-", color=color,
                label=f"‖f̄ − μ_t‖, {_SET_LABEL[name]}")
        ax.plot(widths, [r["sets"][name]["distance"]["width_effect"] for r in rows], "s:", color=color,
                label="minus the members' Monte Carlo noise")
        ax.axhline(result["ntk"][name]["floor"], color=color, lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hidden width")
    ax.set_ylabel("relative RMS distance to the NTK prediction")
    ax.set_title(f"(i) convergence to the NTK\n({result['config']['members']} members; dashed: MC floor)", fontsize=10)
    ax.legend(fontsize=7)
    widest = rows[-1]
    for ax, metric, title in ((axes[1], "equivariance", "equivariance error of E(i)"),
                              (axes[2], "orbit_std", "relative orbit std of the total energy (median)")):
        for name, color in (("in", "C0"), ("ood", "C1")):
            m = widest["sets"][name][metric]
            key = "median" if metric == "orbit_std" else "mean"
            sizes = [p["size"] for p in m["by_size"]]
            ax.plot(sizes, [p[key] for p in m["by_size"]], "o-", color=color, label=f"ensemble, {_SET_LABEL[name]}")
            ax.axhline(m["member"][key], color=color, ls="--", lw=1, label=f"mean member, {_SET_LABEL[name]}")
        ntk = max(result["ntk"][n][metric]["ensemble"][key] for n in ("in", "ood"))
        ax.text(0.02, 0.03, f"infinite width (NTK): ≤ {ntk:.0e}", transform=ax.transAxes, fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("ensemble size")
        ax.set_title(f"(ii) {title}\nwidth {widest['width']}", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle("Ising model, C4-augmented: deep ensembles become equivariant", fontsize=11)
    return save_png(fig, path)


def _crossproduct(result: dict, path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    for i, row in enumerate(result["groups"]):
        m = row["sets"]["in"]["equivariance"]
        sizes = [p["size"] for p in m["by_size"]]
        ax.plot(sizes, [p["mean"] for p in m["by_size"]], "o-", color=f"C{i}",
                label=f"{row['group']} (|G| = {row['order']})")
        ax.axhline(row["sets"]["in"]["ntk"]["mean"], color=f"C{i}", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("ensemble size")
    ax.set_ylabel("equivariance error under random SO(3)")
    ax.set_title("against ensemble size (dotted: infinite width)")
    ax.legend(fontsize=8)
    ax = axes[1]
    orders = [row["order"] for row in result["groups"]]
    for name, color in (("in", "C0"), ("ood", "C1")):
        ax.plot(orders, [r["sets"][name]["equivariance"]["member"]["mean"] for r in result["groups"]], "s--",
                color=color, label=f"mean member, {_SET_LABEL[name]}")
        ax.plot(orders, [r["sets"][name]["equivariance"]["ensemble"]["mean"] for r in result["groups"]], "o-",
                color=color, label=f"ensemble, {_SET_LABEL[name]}")
        ax.plot(orders, [r["sets"][name]["ntk"]["mean"] for r in result["groups"]], ":", color=color,
                label="infinite width (NTK)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("order of the augmenting rotation group")
    ax.set_title("against the number of augmenting rotations")
    ax.legend(fontsize=7)
    fig.suptitle("Cross product x × y: emergent SO(3) equivariance", fontsize=11)
    return save_png(fig, path)


def _digits(result: dict, path: Path) -> Path:
    plt = pyplot()
    sets = list(result["groups"][0]["final"]["sets"])
    fig, axes = plt.subplots(2, len(sets), figsize=(4.8 * len(sets), 8), squeeze=False)
    for j, name in enumerate(sets):
        ax = axes[0][j]
        for i, row in enumerate(result["groups"]):
            steps = [p["step"] for p in row["history"]]
            ax.plot(steps, [p["sets"][name]["ensemble"]["mean"] for p in row["history"]], "o-", color=f"C{i}",
                    label=f"C{row['k']} ensemble")
            ax.plot(steps, [p["sets"][name]["member"]["mean"] for p in row["history"]], "s--", color=f"C{i}",
                    label=f"C{row['k']} mean member")
        ax.set_yscale("log", base=2)
        ax.set_xlabel("training step")
        ax.set_ylabel("OSP")
        ax.set_title(f"OSP during training: {_SET_LABEL.get(name, name)}")
        ax.legend(fontsize=7)
        ax = axes[1][j]
        for i, row in enumerate(result["groups"]):
            m = row["final"]["sets"][name]
            sizes = [p["size"] for p in m["by_size"]]
            ax.plot(sizes, [p["mean"] / row["k"] for p in m["by_size"]], "o-", color=f"C{i}", label=f"C{row['k']}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ensemble size")
        ax.set_ylabel("OSP / |G|")
        ax.set_title(f"end of training: {_SET_LABEL.get(name, name)}")
        ax.legend(fontsize=7)
    fig.suptitle("Rotated digits, C_k-augmented ConvNet ensembles: orbit same predictions", fontsize=11)
    return save_png(fig, path)


def plot_experiment(result: dict, path: str | Path) -> Path:
    """The figure of an experiment result from :mod:`deepens.symmetry.experiments`."""
    kind = result.get("experiment")
    plot = {"ising": _ising, "crossproduct": _crossproduct, "digits": _digits}.get(kind)
    if plot is None:
        from ..errors import DeepensError

        raise DeepensError(f"result: expected an ising, crossproduct or digits result, got {kind!r}")
    return plot(result, Path(path))
