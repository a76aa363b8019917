"""Emergent equivariance (Gerken & Kessel, ICML 2024, and the talk — "EqE") as parts of the study.

Deep ensembles (members as a tensor axis, one vectorized call) trained with data augmentation; the orbit
metrics of :mod:`deepens.symmetry.metrics` for every member, the mean member and the ensemble, in and out of
distribution, next to the infinite-width prediction where the kernel is analytic (MLPs). The settings follow
the talk, scaled to 2 CPU cores:

* ``ising`` — periodic L × L lattice of ±1 spins; target the local energies E(i) = s_i Σ_{j∈N(i)} s_j
  (equivariant under C_4) and the total energy 𝓔 = −(1/L²) Σ_i E(i) (invariant); C_4-augmented samples;
  one-hidden-layer ReLU MLPs in NTK parameterization trained by full-batch gradient descent on MSE;
  out-of-distribution spins drawn from N(0, 1).
* ``crossproduct`` — two-hidden-layer MLPs predicting x × y for x, y ~ N(0, I₃), augmented by finite
  rotation groups of increasing order; equivariance error under Haar-random SO(3) rotations on the data
  distribution and off it (x scaled by ``cross_ood_scale`` and y by its inverse: a length ratio never seen).
* ``digits`` — ConvNet ensembles on scikit-learn's digits upsampled ×2 and padded to 23 × 23, augmented by
  full C_k orbits; OSP during training on test digits and two out-of-distribution sets (photo patches, noise).
  With ``digits_dataset`` fashion-mnist (the ``paper`` preset) the talk's own setting: FashionMNIST padded to
  41 × 41, OOD sets CIFAR-10 (grey, resized) and noise.
* ``so2`` — the same ConvNets trained with k random SO(2) rotations of every image per step; the fraction of
  predictions unchanged under random rotations against k.

The seeds of a part are disjoint groups of members of one vectorized training (independent initialisations,
one data order): ``seeds`` × members are trained together and every group is measured as its own ensemble.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..ensembles import DeepEnsemble
from ..errors import DeepensError
from ..io.figures import pyplot
from ..kernels.network import Network
from ..models import MLP, ConvNet
from ..symmetry.actions import ImageRotation, LatticeRotation, Symmetry, VectorRotation, border_value, pad_for_rotation
from ..symmetry.augment import augment_orbits
from ..symmetry.groups import ROTATION_GROUPS, SO2, SO3, CyclicGroup
from ..symmetry.metrics import ensemble_orbit_metrics, orbit_outputs, orbit_same_predictions
from ..symmetry.theory import InfiniteWidthEnsemble
from .claims import Claim, Test, measure
from .common import Part, finish, fmt, spearman
from .config import StudyConfig

__all__ = ["PARTS", "ising_energies", "digit_images", "rotation_images"]

_SET_LABEL = {"in": "in distribution", "ood": "out of distribution", "test": "test digits",
              "photos": "photo patches (OOD)", "noise": "noise images (OOD)", "cifar10": "CIFAR-10, grey (OOD)"}
TALK_OSP = {"4": [3.85, 0.12], "8": [7.72, 0.34], "16": [15.24, 0.69]}  # the talk's FashionMNIST OOD table


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _groups(total: int, seeds: int) -> list[slice]:
    k = total // seeds
    return [slice(s * k, (s + 1) * k) for s in range(seeds)]


def full_batch_gd(ens: DeepEnsemble, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> list[float]:
    """Full-batch gradient descent of every member on L = (1/2N) Σ_i ‖f(x_i) − y_i‖²; returns the member-mean
    loss every step. Members are independent, so one backward of the summed losses is M separate steps."""
    opt = torch.optim.SGD(ens.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        out = ens(x)
        loss = 0.5 * (out - y).pow(2).sum(-1).mean(-1)  # (M,)
        if not bool(torch.isfinite(loss).all()):
            raise DeepensError(f"lr: training diverged at step {step} with lr {lr:g}; choose a smaller lr")
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        losses.append(float(loss.detach().mean()))
    return losses


def _ntk_network(depth: int) -> Network:
    """The analytic counterpart of ``MLP(..., parameterization="ntk")`` with ReLU (σ_w = √2, readout 1)."""
    return Network.mlp(depth, "relu", weight_std=math.sqrt(2.0), readout_std=1.0)


def _distance(ens_out: np.ndarray, mu: np.ndarray) -> dict:
    """Relative RMS distance of the ensemble mean to μ, and the part explained by Monte Carlo noise.

    ``ens_out`` (M, B, D) member outputs. E‖f̄_M − μ‖² = ‖E f̄ − μ‖² + tr Var(f)/M, so the width effect
    ‖E f̄ − μ‖ is estimated without bias by subtracting the members' sample variance / M.
    """
    m = ens_out.shape[0]
    mean = ens_out.mean(axis=0)
    scale = math.sqrt(float(np.mean(mu ** 2)))
    d2 = float(np.mean((mean - mu) ** 2))
    noise2 = float(np.mean(ens_out.var(axis=0, ddof=1))) / m if m > 1 else float("nan")
    return {"relative": math.sqrt(d2) / scale, "noise": math.sqrt(noise2) / scale if m > 1 else None,
            "width_effect": math.sqrt(max(d2 - noise2, 0.0)) / scale if m > 1 else None}


# ----------------------------------------------------------------------------------------------- Ising

def ising_energies(spins: torch.Tensor, size: int) -> torch.Tensor:
    """Local energies E(i) = s_i Σ_{j∈N(i)} s_j on a periodic ``size`` × ``size`` lattice, (B, size²)."""
    g = spins.reshape(-1, size, size)
    nb = torch.roll(g, 1, 1) + torch.roll(g, -1, 1) + torch.roll(g, 1, 2) + torch.roll(g, -1, 2)
    return (g * nb).reshape(-1, size * size)


def _ising_run(cfg: StudyConfig, ctx) -> dict:
    size, sites, k = cfg.ising_size, cfg.ising_size ** 2, cfg.ising_members
    gen = _generator(cfg.seed)
    spins = torch.randint(0, 2, (cfg.ising_samples + cfg.ising_test, sites), generator=gen).double() * 2 - 1
    train, test_in = spins[: cfg.ising_samples], spins[cfg.ising_samples:]
    sets = {"in": test_in, "ood": torch.randn(cfg.ising_test, sites, generator=gen, dtype=torch.float64)}
    action = LatticeRotation(size)
    sym = Symmetry(action, action, name="C4 lattice")
    xa, ya = augment_orbits(train, ising_energies(train, size), sym)
    total = lambda v: -v.mean(axis=-1)  # noqa: E731 - 𝓔 = −(J/n) Σ_i E(i), J = 1
    theory = InfiniteWidthEnsemble(xa, ya, _ntk_network(1), lr=cfg.ising_lr, loss="mean", steps=cfg.ising_steps,
                                   with_covariance=True)

    def metrics_of(orbit: torch.Tensor, elements) -> dict:
        return {"equivariance": ensemble_orbit_metrics(orbit, "equivariance", symmetry=sym, elements=elements),
                "orbit_std": ensemble_orbit_metrics(orbit, "orbit_std", scalar=total)}

    ntk, mu = {}, {}
    for name, x in sets.items():
        orbit, elements = orbit_outputs(theory, x, sym)
        mu[name] = orbit[0].numpy()  # μ_t at the untransformed inputs, the reference for every width
        ntk[name] = metrics_of(orbit[:, None], elements)
        ntk[name]["floor"] = math.sqrt(float(theory.variance(x).mean()) / k) / math.sqrt(float(np.mean(mu[name] ** 2)))
    rows = []
    for width in cfg.ising_widths:
        t0 = time.perf_counter()
        ens = DeepEnsemble(MLP(sites, [width], sites, parameterization="ntk"), k * cfg.seeds,
                           seed=cfg.seed + 7 * width)
        losses = full_batch_gd(ens, xa.float(), ya.float(), cfg.ising_steps, cfg.ising_lr)
        with torch.no_grad():
            orbits = {name: orbit_outputs(ens, x.float(), sym, batch_dim=1) for name, x in sets.items()}
        for s, group in enumerate(_groups(k * cfg.seeds, cfg.seeds)):
            row = {"width": width, "seed": s, "train_loss": losses[-1] if losses else None, "sets": {}}
            for name, (orbit, elements) in orbits.items():
                sub = orbit[:, group].double()
                row["sets"][name] = {"distance": _distance(sub[0].numpy(), mu[name]), **metrics_of(sub, elements)}
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
        ctx.tick()

    def drop(s):
        pts = sorted((r for r in rows if r["seed"] == s), key=lambda r: r["width"])
        a, b = pts[0]["sets"]["in"]["distance"]["relative"], pts[-1]["sets"]["in"]["distance"]["relative"]
        return 1.0 - b / a

    def beats(s):
        pts = [(r["sets"][n]["equivariance"]["ensemble"]["mean"], r["sets"][n]["equivariance"]["member"]["mean"])
               for r in rows if r["seed"] == s for n in sets]
        return sum(e < m for e, m in pts) / len(pts)

    seeds = range(cfg.seeds)
    measured = {
        "ntk_error": measure(max(ntk[n][m]["ensemble"]["mean"] for n in sets for m in ("equivariance", "orbit_std"))),
        "distance_drop": measure([drop(s) for s in seeds]),
        "ensemble_beats_member": measure([beats(s) for s in seeds]),
    }
    widest = [r for r in rows if r["width"] == max(cfg.ising_widths)]
    reading = [
        "Relative distance of the ensemble mean to the NTK prediction μ_t (in distribution, mean over seeds): "
        + ", ".join(
            f"{np.mean([r['sets']['in']['distance']['relative'] for r in rows if r['width'] == w]):.3f} (width {w})"
            for w in cfg.ising_widths) + f"; Monte Carlo floor of {k} members {ntk['in']['floor']:.3f}.",
        f"Width {max(cfg.ising_widths)}: equivariance error of E(i), mean member → ensemble: in distribution "
        f"{np.mean([r['sets']['in']['equivariance']['member']['mean'] for r in widest]):.3f} → "
        f"{np.mean([r['sets']['in']['equivariance']['ensemble']['mean'] for r in widest]):.3f}, out of distribution "
        f"{np.mean([r['sets']['ood']['equivariance']['member']['mean'] for r in widest]):.3f} → "
        f"{np.mean([r['sets']['ood']['equivariance']['ensemble']['mean'] for r in widest]):.3f}; infinite width "
        f"{measured['ntk_error']['mean']:.1e}.",
    ]
    result = {"config": {"size": size, "samples": cfg.ising_samples, "augmented": len(xa), "members": k,
                         "steps": cfg.ising_steps, "lr": cfg.ising_lr, "test": cfg.ising_test},
              "ntk": ntk, "widths": rows}
    table = [{"width": r["width"], "seed": r["seed"], "set": n, "distance": r["sets"][n]["distance"]["relative"],
              "width_effect": r["sets"][n]["distance"]["width_effect"],
              "equivariance_member": r["sets"][n]["equivariance"]["member"]["mean"],
              "equivariance_ensemble": r["sets"][n]["equivariance"]["ensemble"]["mean"],
              "orbit_std_member": r["sets"][n]["orbit_std"]["member"]["median"],
              "orbit_std_ensemble": r["sets"][n]["orbit_std"]["ensemble"]["median"]} for r in rows for n in sets]
    return {"results": result, "tables": {"ising": table}, "measured": measured,
            "scale": {"data": f"Ising {size}×{size}, {cfg.ising_samples} samples × 4", "model": "MLP, 1 hidden layer",
                      "M": k, "seeds": f"{cfg.seeds} member groups",
                      "widths": f"{cfg.ising_widths[0]}–{cfg.ising_widths[-1]}"},
            "reading": reading, "headline": reading[0]}


def _ising_plot(record: dict, folder: Path) -> list[Path]:
    result = record["results"]
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    rows = result["widths"]
    widths = sorted({r["width"] for r in rows})

    def mean_of(w, name, *path):
        vals = []
        for r in rows:
            if r["width"] == w:
                v = r["sets"][name]
                for p in path:
                    v = v[p]
                vals.append(v)
        return float(np.mean(vals))

    ax = axes[0]
    for name, color in (("in", "C0"), ("ood", "C1")):
        ax.plot(widths, [mean_of(w, name, "distance", "relative") for w in widths], "o-", color=color,
                label=f"‖f̄ − μ_t‖, {_SET_LABEL[name]}")
        ax.axhline(result["ntk"][name]["floor"], color=color, lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hidden width")
    ax.set_ylabel("relative RMS distance to the NTK prediction")
    ax.set_title(f"convergence to the NTK ({result['config']['members']} members; dashed: MC floor)", fontsize=10)
    widest = [r for r in rows if r["width"] == widths[-1]]
    for ax, metric, title in ((axes[1], "equivariance", "equivariance error of E(i)"),
                              (axes[2], "orbit_std", "relative orbit std of the total energy (median)")):
        key = "median" if metric == "orbit_std" else "mean"
        for name, color in (("in", "C0"), ("ood", "C1")):
            by = widest[0]["sets"][name][metric]["by_size"]
            sizes = [p["size"] for p in by]
            vals = np.mean([[p[key] for p in r["sets"][name][metric]["by_size"]] for r in widest], axis=0)
            ax.plot(sizes, vals, "o-", color=color, label=f"ensemble, {_SET_LABEL[name]}")
            ax.axhline(np.mean([r["sets"][name][metric]["member"][key] for r in widest]), color=color, ls="--", lw=1,
                       label=f"mean member, {_SET_LABEL[name]}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("ensemble size")
        ax.set_title(f"{title}, width {widths[-1]}", fontsize=10)
    return [finish(fig, axes, folder / "ising.png")]


ISING_CLAIMS = (
    Claim("eqe.ising.theory", "eqe", "EqE talk: theorem (Ising)",
          "Under data augmentation by group orbits the infinitely wide ensemble's mean prediction is exactly "
          "equivariant, at every training time and off the data distribution.", "exactly equivariant (0)",
          "ntk_error", {"ntk_error": "largest equivariance error / relative orbit std of the NTK prediction"},
          criterion=Test("ntk_error", "<", 1e-8)),
    Claim("eqe.ising.convergence", "eqe", "EqE talk: Ising experiment",
          "The mean of finite-width ensembles converges to the infinite-width (NTK) prediction as the width grows.",
          "converges with width", "distance_drop",
          {"distance_drop": "1 − distance to μ_t at the widest / at the narrowest width"},
          criterion=Test("distance_drop", ">", 0.0, k=1), weaker=Test("distance_drop", ">", 0.0)),
    Claim("eqe.ising.ensemble", "eqe", "EqE talk: Ising experiment",
          "The ensemble is more equivariant than its members, in and out of distribution.",
          "ensemble below the members", "ensemble_beats_member",
          {"ensemble_beats_member": "fraction of (width, set) points with ensemble error < mean member error"},
          criterion=Test("ensemble_beats_member", ">=", 0.9, k=1), weaker=Test("ensemble_beats_member", ">=", 0.5)),
)


# ------------------------------------------------------------------------------------- cross product

def _cross_run(cfg: StudyConfig, ctx) -> dict:
    k = cfg.cross_members
    gen = _generator(cfg.seed)
    pairs = torch.randn(cfg.cross_samples + cfg.cross_test, 6, generator=gen, dtype=torch.float64)

    def target(p: torch.Tensor) -> torch.Tensor:
        return torch.linalg.cross(p[:, :3], p[:, 3:])

    train, test_in = pairs[: cfg.cross_samples], pairs[cfg.cross_samples:]
    # a bias-free ReLU network is positively homogeneous (f(cx, cy) = c f(x, y)), so scaling both vectors would
    # not leave the distribution in any meaningful way; scaling x up and y down changes their ratio
    s_ood = cfg.cross_ood_scale
    sets = {"in": test_in, "ood": torch.cat([test_in[:, :3] * s_ood, test_in[:, 3:] / s_ood], dim=1)}
    so3 = SO3()
    test_sym = Symmetry(VectorRotation(so3, 2), VectorRotation(so3, 1), name="SO(3)")
    test_elements = so3.sample(cfg.cross_rotations, seed=cfg.seed + 11)
    rows = []
    for name in cfg.cross_groups:
        group = ROTATION_GROUPS[name]()
        sym = Symmetry(VectorRotation(group, 2), VectorRotation(group, 1))
        xa, ya = augment_orbits(train, target(train), sym)
        ens = DeepEnsemble(MLP(6, [cfg.cross_width, cfg.cross_width], 3, parameterization="ntk"), k * cfg.seeds,
                           seed=cfg.seed + 13)
        losses = full_batch_gd(ens, xa.float(), ya.float(), cfg.cross_steps, cfg.cross_lr)
        theory = InfiniteWidthEnsemble(xa, ya, _ntk_network(2), lr=cfg.cross_lr, loss="mean", steps=cfg.cross_steps)
        ntk, orbits = {}, {}
        with torch.no_grad():
            for set_name, x in sets.items():
                orbits[set_name] = orbit_outputs(ens, x.float(), test_sym, test_elements, batch_dim=1)
                ntk_orbit, elements = orbit_outputs(theory, x, test_sym, test_elements)
                own, own_elements = orbit_outputs(theory, x, sym)
                own_error = ensemble_orbit_metrics(own[:, None], "equivariance", symmetry=sym, elements=own_elements)
                ntk[set_name] = {
                    "so3": ensemble_orbit_metrics(ntk_orbit[:, None], "equivariance", symmetry=test_sym,
                                                  elements=elements)["ensemble"]["mean"],
                    "own": own_error["ensemble"]["mean"] if group.order > 1 else None}
        for s, members in enumerate(_groups(k * cfg.seeds, cfg.seeds)):
            row = {"group": name, "order": group.order, "augmented": len(xa), "seed": s,
                   "train_loss": losses[-1] if losses else None, "sets": {}}
            for set_name, x in sets.items():
                orbit, elements = orbits[set_name]
                sub = orbit[:, members].double()
                rel = float(((sub[0].mean(0) - target(x)).norm(dim=-1) / target(x).norm(dim=-1)).median())
                row["sets"][set_name] = {
                    "equivariance": ensemble_orbit_metrics(sub, "equivariance", symmetry=test_sym, elements=elements),
                    "ntk": ntk[set_name]["so3"], "ntk_group": ntk[set_name]["own"], "median_relative_error": rel}
            rows.append(row)
        ctx.tick()

    def order_corr(s):
        pts = [r for r in rows if r["seed"] == s]
        return spearman([r["order"] for r in pts], [r["sets"]["in"]["equivariance"]["ensemble"]["mean"] for r in pts])

    def beats(s):
        pts = [(r["sets"][n]["equivariance"]["ensemble"]["mean"], r["sets"][n]["equivariance"]["member"]["mean"])
               for r in rows if r["seed"] == s and r["order"] > 1 for n in sets]
        return sum(e < m for e, m in pts) / len(pts) if pts else None

    own = [r["sets"][n]["ntk_group"] for r in rows for n in sets if r["sets"][n]["ntk_group"] is not None]
    measured = {"order_corr": measure([order_corr(s) for s in range(cfg.seeds)]),
                "ensemble_beats_member": measure([beats(s) for s in range(cfg.seeds)]),
                "ntk_own_group": measure(max(own) if own else None)}
    reading = ["Equivariance error under random SO(3) rotations, mean member → ensemble (in distribution / out of "
               "distribution, mean over seeds): " + "; ".join(
                   f"{g} (|G| = {order}): " + " / ".join(
                       f"{np.mean([r['sets'][n]['equivariance']['member']['mean'] for r in pts]):.3f} → "
                       f"{np.mean([r['sets'][n]['equivariance']['ensemble']['mean'] for r in pts]):.3f}"
                       for n in sets)
                   for g, order, pts in ((g, o, [r for r in rows if r["group"] == g])
                                         for g, o in dict.fromkeys((r["group"], r["order"]) for r in rows)))
               + "; the infinite-width ensemble is equivariant under its own group to "
               + f"{fmt(max(own) if own else None, '.1e')}."]
    result = {"config": {"groups": list(cfg.cross_groups), "samples": cfg.cross_samples, "width": cfg.cross_width,
                         "members": k, "steps": cfg.cross_steps, "rotations": cfg.cross_rotations,
                         "ood_scale": s_ood}, "groups": rows}
    table = [{"group": r["group"], "order": r["order"], "seed": r["seed"], "set": n,
              "member": r["sets"][n]["equivariance"]["member"]["mean"],
              "ensemble": r["sets"][n]["equivariance"]["ensemble"]["mean"], "ntk_so3": r["sets"][n]["ntk"],
              "ntk_own_group": r["sets"][n]["ntk_group"]} for r in rows for n in sets]
    return {"results": result, "tables": {"crossproduct": table}, "measured": measured,
            "scale": {"data": f"{cfg.cross_samples} pairs", "model": f"MLP 6 → {cfg.cross_width} × 2 → 3", "M": k,
                      "seeds": f"{cfg.seeds} member groups", "groups": ", ".join(cfg.cross_groups)},
            "reading": reading, "headline": reading[0]}


def _cross_plot(record: dict, folder: Path) -> list[Path]:
    rows = record["results"]["groups"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    groups = list(dict.fromkeys((r["group"], r["order"]) for r in rows))
    orders = [o for _, o in groups]
    for name, color in (("in", "C0"), ("ood", "C1")):
        for key, style, label in (("member", "s--", "mean member"), ("ensemble", "o-", "ensemble")):
            ax.plot(orders, [np.mean([r["sets"][name]["equivariance"][key]["mean"] for r in rows if r["group"] == g])
                             for g, _ in groups], style, color=color, label=f"{label}, {_SET_LABEL[name]}")
        ax.plot(orders, [next(r["sets"][name]["ntk"] for r in rows if r["group"] == g) for g, _ in groups], ":",
                color=color, label=f"infinite width, {_SET_LABEL[name]}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("order of the augmenting rotation group")
    ax.set_ylabel("equivariance error under random SO(3)")
    ax.set_title("cross product x × y", fontsize=10)
    return [finish(fig, [ax], folder / "crossproduct.png")]


CROSS_CLAIMS = (
    Claim("eqe.cross.order", "eqe", "EqE paper: cross-product experiment",
          "Augmenting with larger finite subgroups of SO(3) makes the ensemble more equivariant under all rotations.",
          "error falls with the group order", "order_corr",
          {"order_corr": "Spearman(group order, ensemble equivariance error)",
           "ensemble_beats_member": "fraction of points with ensemble error < mean member error"},
          criterion=(Test("order_corr", "<=", -0.8, k=1), Test("ensemble_beats_member", ">=", 0.9)),
          weaker=Test("order_corr", "<", 0.0)),
    Claim("eqe.cross.theory", "eqe", "EqE paper: theorem (finite rotation groups)",
          "The infinite-width ensemble trained on orbit-augmented data is exactly equivariant under the augmenting "
          "group, in and out of distribution.", "exactly equivariant (0)", "ntk_own_group",
          {"ntk_own_group": "largest equivariance error of the NTK prediction under its own group"},
          criterion=Test("ntk_own_group", "<", 1e-8)),
)


# ---------------------------------------------------------------------------------------------- digits

def digit_images(seed: int, scale: int, photos: int):
    """Padded train / test digits, the standardised background value, and two out-of-distribution sets of
    ``photos`` images each, both made at the digits' native 8 × 8 resolution, mapped like the digits (raw
    0..16 → standardised) and then upsampled and padded like them:

    - grayscale patches of scikit-learn's two shipped sample photographs (china.jpg, flower.jpg), cut at random
      and area-averaged to 8 × 8;
    - noise images: 8 × 8 pixels drawn uniformly from the digits' raw range 0..16.

    Noise is drawn at 8 × 8, not at the padded size: pixel-level white noise is not a fair orbit test for
    interpolated rotations, since bilinear interpolation averages neighbouring pixels (a 45° rotation cuts the
    standard deviation of 23 × 23 white noise from 1.0 to 0.67), so its rotated copies are images of another
    kind; upsampled 8 × 8 noise keeps 0.63 vs 0.59, like the digits."""
    from sklearn.datasets import load_digits

    from ..data import load_dataset, photo_patches

    data = load_dataset("digits", seed=seed, val=0, flatten=False)
    background = float(border_value(data.train.x))  # standardised value of a blank pixel
    raw = load_digits().images
    scale_std = float(raw.std())
    rng = np.random.default_rng(seed + 5)
    photo = photo_patches(rng, photos, 8) * 16.0 / scale_std + background
    noise = torch.from_numpy(rng.uniform(0.0, 16.0, size=(photos, 1, 8, 8))).float() / scale_std + background
    pad = lambda x: pad_for_rotation(x, scale=scale, fill=background)  # noqa: E731
    return (pad(data.train.x), data.train.y, pad(data.test.x), data.test.y, background, pad(photo), pad(noise))


def rotation_images(dataset: str, seed: int, ood: int, data_dir: str | None = None) -> dict:
    """The image sets of the rotation parts for ``dataset``: ``digits`` (scikit-learn's, upsampled ×2 and padded
    to 23 × 23; OOD photo patches and noise, :func:`digit_images`) or ``fashion-mnist`` / ``mnist`` (the talk's
    data, read from ``data_dir``; 28 × 28 padded to 41 × 41; OOD: CIFAR-10's test images turned grey and
    area-resized to 28 × 28 when its files are in ``data_dir`` — the talk's OOD set — and noise images drawn
    uniformly from the pixel range). Returns ``{"train": (x, y), "test": (x, y), "background": value, "ood":
    {name: x}}`` with ``ood`` images per OOD set."""
    from ..data import load_dataset, load_ood

    if dataset == "digits":
        x_train, y_train, x_test, y_test, background, photo, noise = digit_images(seed, 2, ood)
        return {"train": (x_train, y_train), "test": (x_test, y_test), "background": background,
                "ood": {"photos": photo, "noise": noise}}
    data = load_dataset(dataset, seed=seed, val=0, flatten=False, data_dir=data_dir)
    background = float(border_value(data.train.x))  # standardised value of a blank pixel
    mean, std = data.info["channel_mean"][0], data.info["channel_std"][0]
    sets = {}
    if ood:
        try:
            sets["cifar10"] = load_ood("cifar10", data, data_dir=data_dir, seed=seed).x[:ood].float()
        except DeepensError:  # no CIFAR-10 files in data_dir: noise only
            pass
        rng = np.random.default_rng(seed + 5)
        sets["noise"] = (torch.from_numpy(rng.uniform(0.0, 1.0, size=(ood, 1, 28, 28))).float() - mean) / std
    pad = lambda x: pad_for_rotation(x, scale=1, fill=background)  # noqa: E731
    return {"train": (pad(data.train.x), data.train.y), "test": (pad(data.test.x), data.test.y),
            "background": background, "ood": {name: pad(x) for name, x in sets.items()}}


def _train_convnets(ens: DeepEnsemble, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, lr: float,
                    seed: int, transform=None, on_step=None) -> None:
    """Adam on the members' summed cross-entropies over shuffled batches; ``transform(x, y, generator)`` augments
    each batch; ``on_step(step)`` is called after every step."""
    opt = torch.optim.Adam(ens.parameters(), lr=lr)
    gen = _generator(seed)
    order, cursor = torch.randperm(len(x), generator=gen), 0
    members = ens.members
    for step in range(1, steps + 1):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(x), generator=gen), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        xb, yb = x[idx], y[idx]
        if transform is not None:
            xb, yb = transform(xb, yb, gen)
        out = ens(xb)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), yb.repeat(members), reduction="sum") / len(yb)
        if not bool(torch.isfinite(loss)):
            raise DeepensError(f"lr: training diverged at step {step}; choose a smaller lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step)


def infinite_cnn(channels: int = 8, size: int = 23, classes: int = 10):
    """The CNN whose infinite-width ensemble joins the rotated digits: three 3×3 zero-padded convolutions (NTK
    parameterization, σ_w = √2) with ReLU and a flattening readout. Its kernel is read from this module; with
    odd kernels and zero padding it is invariant under joint 90° turns of square images, so C4-orbit
    augmentation makes its prediction exactly C4-invariant (the talk's emergent equivariance, at infinite
    width); no pooling, so only same-position kernels are carried."""
    from torch import nn

    from ..layers import Conv2d, Linear

    return nn.Sequential(
        Conv2d(1, channels, 3, padding=1, parameterization="ntk", weight_std=math.sqrt(2.0)), nn.ReLU(),
        Conv2d(channels, channels, 3, padding=1, parameterization="ntk", weight_std=math.sqrt(2.0)), nn.ReLU(),
        Conv2d(channels, channels, 3, padding=1, parameterization="ntk", weight_std=math.sqrt(2.0)), nn.ReLU(),
        nn.Flatten(), Linear(channels * size * size, classes, parameterization="ntk"))


def _infinite_digits(cfg: StudyConfig, x_train, y_train, sets: dict, background: float, y_test) -> dict | None:
    """OSP (C4) of the infinite-width CNN ensemble trained to convergence (kernel regression on one-hot targets)
    on ``cfg.digits_infinite`` training digits and their C4 orbits, on every evaluation set."""
    n = cfg.digits_infinite
    if n <= 0:
        return None
    sym = Symmetry(ImageRotation(CyclicGroup(4), fill=background))
    x, y = x_train[:n].double(), F.one_hot(y_train[:n], 10).double()
    out: dict = {"train": n, "sets": {}}
    for name, (xs, ys) in {"augmented": augment_orbits(x, y, sym), "plain": (x, y)}.items():
        model = InfiniteWidthEnsemble(xs, ys, infinite_cnn(size=x.shape[-1]), lr=1.0)
        result = {}
        for set_name, images in sets.items():
            orbit, _ = orbit_outputs(model, images.double(), sym)
            osp = orbit_same_predictions(orbit)
            result[set_name] = float(np.mean(osp))
            if set_name == "test":
                result["accuracy"] = float((orbit[0].argmax(-1) == y_test).double().mean())
        out["sets"][name] = result
    return out


def _digits_run(cfg: StudyConfig, ctx) -> dict:
    k_per = cfg.digits_members
    images = rotation_images(cfg.digits_dataset, cfg.seed, cfg.digits_ood, cfg.data_dir)
    (x_train, y_train), (x_test, y_test), background = images["train"], images["test"], images["background"]
    x_test, y_test = x_test[: cfg.digits_test], y_test[: cfg.digits_test]
    sets = {"test": x_test, **images["ood"]}
    ood_sets = list(images["ood"])
    eval_at = sorted({max(1, round(cfg.digits_steps * (i + 1) / cfg.digits_evals)) for i in range(cfg.digits_evals)})
    groups = _groups(k_per * cfg.seeds, cfg.seeds)
    rows = []
    for kk in cfg.digits_groups:
        sym = Symmetry(ImageRotation(CyclicGroup(kk), fill=background))
        xa, ya = augment_orbits(x_train, y_train, sym)
        ens = DeepEnsemble(ConvNet(1, 10, channels=cfg.digits_channels), k_per * cfg.seeds, seed=cfg.seed + kk)
        history = []

        def evaluate(step, ens=ens, sym=sym, kk=kk, history=history, xa=xa):
            if step not in eval_at:
                return
            ens.eval()
            with torch.no_grad():
                orbits = {name: orbit_outputs(ens, x, sym, batch_dim=1, batch_size=512)[0] for name, x in sets.items()}
            ens.train()
            for s, members in enumerate(groups):
                point = {"k": kk, "seed": s, "step": step, "epochs": step * cfg.digits_batch_size / len(xa), "sets": {}}
                for name, orbit in orbits.items():
                    sub = orbit[:, members]
                    point["sets"][name] = ensemble_orbit_metrics(sub, "osp")
                    if name == "test":
                        probs = torch.softmax(sub[0].double(), -1)
                        point["accuracy"] = float((probs.mean(0).argmax(-1) == y_test).double().mean())
                        point["member_accuracy"] = float((probs.argmax(-1) == y_test).double().mean())
                history.append(point)

        _train_convnets(ens, xa, ya, cfg.digits_steps, cfg.digits_batch_size, cfg.digits_lr, cfg.seed + 1000 + kk,
                        on_step=evaluate)
        rows += history
        ctx.tick()

    def above(s):
        pts = [(p["sets"][n]["ensemble"]["mean"], p["sets"][n]["member"]["mean"]) for p in rows if p["seed"] == s
               for n in sets]
        return sum(e > m for e, m in pts) / len(pts)

    last = max(eval_at)

    def ood_fraction(s):
        pts = [p["sets"][n]["ensemble"]["mean"] / p["k"] for p in rows if p["seed"] == s and p["step"] == last
               for n in ood_sets]
        return float(np.mean(pts))

    infinite = _infinite_digits(cfg, x_train, y_train, sets, background, y_test)
    ctx.tick()
    measured = {"ensemble_above_member": measure([above(s) for s in range(cfg.seeds)]),
                "ood_osp_fraction": measure([ood_fraction(s) for s in range(cfg.seeds)])}
    final = [p for p in rows if p["step"] == last]
    reading = ["End of training, mean over seeds — OSP mean member → ensemble: " + "; ".join(
        f"C{kk}: " + ", ".join(
            f"{n} {np.mean([p['sets'][n]['member']['mean'] for p in final if p['k'] == kk]):.2f} → "
            f"{np.mean([p['sets'][n]['ensemble']['mean'] for p in final if p['k'] == kk]):.2f}" for n in sets)
        + f" (test accuracy {np.mean([p['accuracy'] for p in final if p['k'] == kk]):.3f})"
        for kk in cfg.digits_groups) + ". The talk (FashionMNIST, OOD): " + ", ".join(
            f"C{k} {v[0]} ± {v[1]}" for k, v in TALK_OSP.items()) + "."]
    if infinite is not None:
        aug, plain = infinite["sets"]["augmented"], infinite["sets"]["plain"]
        reading.append(f"Infinite-width CNN ensemble (kernel regression on {infinite['train']} training images, C4): "
                       "OSP with "
                       "orbit augmentation " + ", ".join(f"{n} {aug[n]:.2f}" for n in sets) + "; without "
                       + ", ".join(f"{n} {plain[n]:.2f}" for n in sets) + f" (of 4; test accuracy "
                       f"{aug['accuracy']:.3f} / {plain['accuracy']:.3f}).")
    table = [{"k": p["k"], "seed": p["seed"], "step": p["step"], "accuracy": p["accuracy"], "set": n,
              "member": p["sets"][n]["member"]["mean"], "ensemble": p["sets"][n]["ensemble"]["mean"]}
             for p in rows for n in sets]
    return {"results": {"history": rows, "infinite": infinite,
                        "config": {"image_size": x_train.shape[-1], "train": len(x_train), "test": len(x_test),
                                   "members": k_per}},
            "tables": {"digits": table}, "measured": measured,
            "scale": {"data": f"{cfg.digits_dataset} {x_train.shape[-1]}×{x_train.shape[-1]} ({len(x_test)} test, "
                              f"{cfg.digits_ood} OOD per set: {', '.join(ood_sets)})",
                      "model": f"ConvNet {cfg.digits_channels}", "M": k_per, "seeds": f"{cfg.seeds} member groups",
                      "steps": cfg.digits_steps},
            "reading": reading, "headline": reading[0]}


def _digits_plot(record: dict, folder: Path) -> list[Path]:
    rows = record["results"]["history"]
    sets = list(rows[0]["sets"])
    plt = pyplot()
    fig, axes = plt.subplots(1, len(sets), figsize=(4.8 * len(sets), 4), squeeze=False)
    ks = sorted({p["k"] for p in rows})
    for j, name in enumerate(sets):
        ax = axes[0][j]
        for i, kk in enumerate(ks):
            steps = sorted({p["step"] for p in rows if p["k"] == kk})
            for key, style in (("ensemble", "o-"), ("member", "s--")):
                ys = [np.mean([p["sets"][name][key]["mean"] for p in rows if p["k"] == kk and p["step"] == st])
                      for st in steps]
                ax.plot(steps, ys, style, color=f"C{i}", label=f"C{kk} {'mean ' if key == 'member' else ''}{key}")
        infinite = record["results"].get("infinite")
        if infinite is not None:
            for which, style in (("augmented", ":"), ("plain", "-.")):
                ax.axhline(infinite["sets"][which][name], color="black", ls=style, lw=1,
                           label=f"infinite-width CNN, C4 {'augmentation' if which == 'augmented' else 'none'}")
        ax.set_yscale("log", base=2)
        ax.set_xlabel("training step")
        ax.set_ylabel("OSP")
        ax.set_title(_SET_LABEL.get(name, name), fontsize=10)
    return [finish(fig, axes[0], folder / "digits.png")]


DIGITS_CLAIMS = (
    Claim("eqe.digits.ensemble", "eqe", "EqE talk: FashionMNIST, C_k augmentation",
          "Ensembles trained with C_k augmentation are more invariant than their members (higher orbit same "
          "predictions), also out of distribution.", "ensemble OSP above the members'", "ensemble_above_member",
          {"ensemble_above_member": "fraction of (group, step, set) points with ensemble OSP > mean member OSP"},
          criterion=Test("ensemble_above_member", ">=", 0.9, k=1), weaker=Test("ensemble_above_member", ">=", 0.5)),
    Claim("eqe.digits.level", "eqe", "EqE talk: table of OSP",
          "Deep ensembles trained with C_k augmentation predict nearly the same class on the whole orbit of "
          "out-of-distribution inputs: OSP/|G| ≈ 0.96.", "C4 3.85 ± 0.12, C8 7.72, C16 15.24 (OSP/|G| ≈ 0.96)",
          "ood_osp_fraction", {"ood_osp_fraction": "ensemble OSP/|G| on the OOD sets at the end of training"},
          criterion=Test("ood_osp_fraction", ">=", 0.9, k=1), weaker=Test("ood_osp_fraction", ">=", 0.75)),
)


# ---------------------------------------------------------------------------------------------- SO(2)

def _so2_run(cfg: StudyConfig, ctx) -> dict:
    k_per = cfg.so2_members
    images = rotation_images(cfg.so2_dataset, cfg.seed, 0, cfg.data_dir)
    (x_train, y_train), (x_test, y_test), background = images["train"], images["test"], images["background"]
    x_test, y_test = x_test[: cfg.so2_test], y_test[: cfg.so2_test]
    sym = Symmetry(ImageRotation(SO2(), fill=background))
    test_angles = SO2().sample(cfg.so2_test_rotations, seed=cfg.seed + 17)
    groups = _groups(k_per * cfg.seeds, cfg.seeds)
    rows = []
    for k in cfg.so2_rotations:
        def transform(xb, yb, gen, k=k):
            xs = xb.repeat(k, 1, 1, 1)
            angles = SO2().sample(len(xs), seed=int(torch.randint(0, 2**62, (1,), generator=gen)))
            return sym.input.apply_each(angles, xs), yb.repeat(k)

        ens = DeepEnsemble(ConvNet(1, 10, channels=cfg.so2_channels), k_per * cfg.seeds, seed=cfg.seed + 31)
        _train_convnets(ens, x_train, y_train, cfg.so2_steps, cfg.so2_batch_size, cfg.so2_lr, cfg.seed + 2000,
                        transform=transform)
        ens.eval()
        with torch.no_grad():
            orbit, _ = orbit_outputs(ens, x_test, sym, test_angles, batch_dim=1, batch_size=512)
        for s, members in enumerate(groups):
            m = ensemble_orbit_metrics(orbit[:, members], "osp")
            g = orbit.shape[0]
            probs = torch.softmax(orbit[0, members].double(), -1)
            rows.append({"rotations": k, "seed": s, "same_ensemble": m["ensemble"]["mean"] / g,
                         "same_member": m["member"]["mean"] / g,
                         "accuracy": float((probs.mean(0).argmax(-1) == y_test).double().mean())})
        ctx.tick()

    def corr(s):
        pts = [r for r in rows if r["seed"] == s]
        return spearman([r["rotations"] for r in pts], [r["same_ensemble"] for r in pts])

    def gain(s):
        pts = sorted((r for r in rows if r["seed"] == s), key=lambda r: r["rotations"])
        return pts[-1]["same_ensemble"] - pts[0]["same_ensemble"]

    measured = {"rotations_corr": measure([corr(s) for s in range(cfg.seeds)]),
                "same_gain": measure([gain(s) for s in range(cfg.seeds)])}
    reading = [f"Fraction of {cfg.so2_test_rotations} random rotations (plus the identity) of {len(x_test)} test "
               "digits predicted as the unrotated image, mean member → ensemble (mean over seeds): " + "; ".join(
                   f"{k} rotation(s) per image and step: "
                   f"{np.mean([r['same_member'] for r in rows if r['rotations'] == k]):.3f} → "
                   f"{np.mean([r['same_ensemble'] for r in rows if r['rotations'] == k]):.3f} (accuracy "
                   f"{np.mean([r['accuracy'] for r in rows if r['rotations'] == k]):.3f})" for k in cfg.so2_rotations)
               + "."]
    return {"results": {"rows": rows}, "tables": {"so2": rows}, "measured": measured,
            "scale": {"data": f"{cfg.so2_dataset} {x_train.shape[-1]}×{x_train.shape[-1]} ({len(x_test)} test)",
                      "model": f"ConvNet {cfg.so2_channels}", "M": k_per,
                      "seeds": f"{cfg.seeds} member groups", "steps": cfg.so2_steps},
            "reading": reading, "headline": reading[0]}


def _so2_plot(record: dict, folder: Path) -> list[Path]:
    rows = record["results"]["rows"]
    ks = sorted({r["rotations"] for r in rows})
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for key, style, label in (("same_ensemble", "o-", "ensemble"), ("same_member", "s--", "mean member")):
        vals = [[r[key] for r in rows if r["rotations"] == k] for k in ks]
        ax.errorbar(ks, [np.mean(v) for v in vals], yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in vals],
                    fmt=style, capsize=2, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("random rotations of each image per step")
    ax.set_ylabel("fraction of rotations with the same prediction")
    ax.set_title("SO(2): sampled augmentation", fontsize=10)
    return [finish(fig, [ax], folder / "so2.png")]


SO2_CLAIMS = (
    Claim("eqe.so2.samples", "eqe", "EqE talk: FashionMNIST, continuous symmetry",
          "For a continuous group the emergent equivariance is approximate; augmenting with more samples from the "
          "orbit increases it (more predictions unchanged under random SO(2) rotations).",
          "increases with the samples", "same_gain",
          {"same_gain": "same-prediction fraction: most − fewest rotations per step",
           "rotations_corr": "Spearman(rotations per step, same-prediction fraction)"},
          criterion=(Test("same_gain", ">", 0.0, k=1), Test("rotations_corr", ">", 0.0, k=1)),
          weaker=Test("same_gain", ">", 0.0)),
)


PARTS: tuple[Part, ...] = (
    Part("ising", "eqe", "Ising model: convergence to the NTK and equivariance", ("ising",),
         lambda c: len(c.ising_widths), _ising_run, _ising_plot, ISING_CLAIMS,
         summary="C4-augmented one-hidden-layer MLPs on the Ising lattice, full-batch gradient descent, against the "
                 "infinite-width (NTK) ensemble at the same training time."),
    Part("crossproduct", "eqe", "Cross product: equivariance against the augmenting group", ("cross",),
         lambda c: len(c.cross_groups), _cross_run, _cross_plot, CROSS_CLAIMS,
         summary="x × y with two-hidden-layer MLPs augmented by finite rotation groups of increasing order; "
                 "equivariance error under random SO(3) rotations."),
    Part("digits", "eqe", "Rotated digits: orbit same predictions", ("digits",),
         lambda c: len(c.digits_groups), _digits_run, _digits_plot, DIGITS_CLAIMS,
         summary="ConvNet ensembles on rotated digits with full C_k orbits; OSP on test digits, photo patches and "
                 "noise images during training."),
    Part("so2", "eqe", "SO(2): sampled rotations", ("so2",),
         lambda c: len(c.so2_rotations), _so2_run, _so2_plot, SO2_CLAIMS,
         summary="ConvNet ensembles trained with k random rotations of every image per step; predictions under "
                 "random SO(2) rotations of the test digits."),
)
