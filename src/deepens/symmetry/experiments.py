"""The emergent-equivariance experiments behind ``deepens equivariance ising | crossproduct | digits``.

Each function trains deep ensembles (members as a tensor axis, one vectorized call) with data
augmentation, measures the orbit metrics of :mod:`deepens.symmetry.metrics` for every member, the mean
member and the ensemble at several sizes, in and out of distribution, next to the infinite-width
prediction where the kernel is analytic (MLPs), and returns a JSON-ready dict. Every random choice
comes from ``seed``. The settings follow the emergent-equivariance talk, scaled to 2 CPU cores:

* :func:`ising` — periodic L × L lattice of ±1 spins; target the local energies E(i) = Σ_{j∈N(i)} s_i s_j
  (equivariant under C_4) and, derived from them, the total energy 𝓔 = −(1/L²) Σ_i E(i) (invariant);
  128 samples augmented by C_4 to 512; one-hidden-layer ReLU MLPs in NTK parameterization trained by
  full-batch gradient descent on MSE; out-of-distribution spins drawn from N(0, 1).
* :func:`crossproduct` — two-hidden-layer MLPs predicting x × y for x, y ~ N(0, I₃), augmented by finite
  rotation groups of increasing order; equivariance error under Haar-random SO(3) rotations on the data
  distribution and off it (x scaled by ``ood_scale`` and y by 1/``ood_scale``: a length ratio never seen).
* :func:`digits` — ConvNet ensembles on scikit-learn's digits upsampled ×2 and padded to an odd size
  (23 × 23), augmented by C_k; OSP during training on test images and on two out-of-distribution sets
  (patches of photographs, 8 × 8 noise images; see :func:`_digit_images`), against ensemble size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..ensembles import DeepEnsemble
from ..errors import DeepensError, check_int, check_real
from ..kernels.analytic import Network
from ..models import MLP, ConvNet
from .actions import ImageRotation, LatticeRotation, Symmetry, VectorRotation, border_value, pad_for_rotation
from .augment import augment_orbits
from .groups import SO3, CyclicGroup, MatrixGroup, axis_rotations, icosahedral, octahedral, tetrahedral
from .metrics import ensemble_orbit_metrics, orbit_outputs
from .theory import InfiniteWidthEnsemble

__all__ = ["ising", "crossproduct", "digits", "ising_energies", "ROTATION_GROUPS", "EXPERIMENTS"]

EXPERIMENTS = ("ising", "crossproduct", "digits")
ROTATION_GROUPS: dict[str, Callable[[], MatrixGroup]] = {
    "c1": lambda: axis_rotations(1),
    "c2": lambda: axis_rotations(2),
    "c4": lambda: axis_rotations(4),
    "t": tetrahedral,
    "o": octahedral,
    "i": icosahedral,
}


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _sizes(members: int) -> list[int]:
    return sorted({1, *(2 ** i for i in range(int(math.log2(members)) + 1)), members})


def _full_batch_gd(ens: DeepEnsemble, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> list[float]:
    """Full-batch gradient descent of every member on L = (1/2N) Σ_i ‖f(x_i) − y_i‖²; returns the member-mean
    loss every step. Members are independent, so one backward of the summed losses is M separate steps."""
    opt = torch.optim.SGD(ens.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        out = ens(x)
        loss = 0.5 * (out - y).pow(2).sum(-1).mean(-1)  # (M,)
        if not bool(torch.isfinite(loss).all()):
            raise DeepensError(f"lr: training diverged at step {step} with lr {lr:g}; choose a smaller --lr")
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


def ising(
    *,
    size: int = 6,
    samples: int = 128,
    widths: Sequence[int] = (64, 256, 1024, 2048),
    members: int = 32,
    steps: int = 200,
    lr: float = 3.0,
    test: int = 128,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """The Ising experiment (see the module docstring): distance to the NTK prediction against width,
    equivariance error of E(i) and relative orbit std of 𝓔 for members vs ensembles, in and out of
    distribution."""
    size = check_int("size", size, minimum=2)
    samples = check_int("samples", samples, minimum=1)
    members = check_int("members", members, minimum=1)
    steps = check_int("steps", steps, minimum=0)
    test = check_int("test", test, minimum=1)
    lr = check_real("lr", lr, low=0.0, low_open=True)
    widths = [check_int("widths", w, minimum=1) for w in widths]
    started = time.perf_counter()
    sites = size * size
    gen = _generator(seed)
    spins = torch.randint(0, 2, (samples + test, sites), generator=gen).double() * 2 - 1
    train, test_in = spins[:samples], spins[samples:]
    test_ood = torch.randn(test, sites, generator=gen, dtype=torch.float64)
    action = LatticeRotation(size)
    sym = Symmetry(action, action, name="C4 lattice")
    xa, ya = augment_orbits(train, ising_energies(train, size), sym)
    total = lambda v: -v.mean(axis=-1)  # noqa: E731 - 𝓔 = −(J/n) Σ_i E(i), J = 1
    theory = InfiniteWidthEnsemble(xa, ya, _ntk_network(1), lr=lr, loss="mean", steps=steps, with_covariance=True)
    sets = {"in": test_in, "ood": test_ood}

    def metrics_of(orbit: torch.Tensor, elements) -> dict:
        return {"equivariance": ensemble_orbit_metrics(orbit, "equivariance", symmetry=sym, elements=elements),
                "orbit_std": ensemble_orbit_metrics(orbit, "orbit_std", scalar=total)}

    ntk, mu = {}, {}
    for name, x in sets.items():
        orbit, elements = orbit_outputs(theory, x, sym)
        mu[name] = orbit[0].numpy()  # μ_t at the untransformed inputs, the reference for every width
        ntk[name] = metrics_of(orbit[:, None], elements)
        ntk[name]["floor"] = math.sqrt(float(theory.variance(x).mean()) / members) / math.sqrt(
            float(np.mean(mu[name] ** 2)))
    rows = []
    for width in widths:
        t0 = time.perf_counter()
        ens = DeepEnsemble(MLP(sites, [width], sites, parameterization="ntk"), members, seed=seed + 7 * width)
        losses = _full_batch_gd(ens, xa.float(), ya.float(), steps, lr)
        row = {"width": width, "train_loss": losses[-1] if losses else None, "seconds": 0.0, "sets": {}}
        with torch.no_grad():
            for name, x in sets.items():
                orbit, elements = orbit_outputs(ens, x.float(), sym, batch_dim=1)
                orbit = orbit.double()
                row["sets"][name] = {"distance": _distance(orbit[0].numpy(), mu[name]), **metrics_of(orbit, elements)}
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if progress:
            d = row["sets"]["in"]["distance"]
            progress(f"width {width}: loss {row['train_loss']:.4f}, distance to NTK {d['relative']:.4f} "
                     f"({row['seconds']:.1f} s)")
    return {
        "experiment": "ising",
        "config": {"size": size, "samples": samples, "augmented": len(xa), "widths": widths, "members": members,
                   "steps": steps, "lr": lr, "test": test, "seed": seed, "loss": "(1/2N) Σ ‖f − E‖²",
                   "network": f"{sites} → width → {sites}, ReLU, NTK parameterization, no biases"},
        "ntk": ntk,
        "widths": rows,
        "sizes": _sizes(members),
        "seconds": time.perf_counter() - started,
    }


# ------------------------------------------------------------------------------------- cross product
def crossproduct(
    *,
    groups: Sequence[str] = ("c1", "c4", "t", "o"),
    samples: int = 48,
    width: int = 128,
    members: int = 32,
    steps: int = 300,
    lr: float = 1.0,
    test: int = 128,
    rotations: int = 16,
    ood_scale: float = 3.0,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """The cross-product experiment: equivariance error under random SO(3) rotations against ensemble
    size and against the order of the augmenting rotation group, on and off the data distribution."""
    for g in groups:
        if g not in ROTATION_GROUPS:
            raise DeepensError(f"groups: expected names from {', '.join(ROTATION_GROUPS)}; got {g!r}")
    samples = check_int("samples", samples, minimum=1)
    width = check_int("width", width, minimum=1)
    members = check_int("members", members, minimum=1)
    steps = check_int("steps", steps, minimum=0)
    test = check_int("test", test, minimum=1)
    rotations = check_int("rotations", rotations, minimum=1)
    lr = check_real("lr", lr, low=0.0, low_open=True)
    ood_scale = check_real("ood_scale", ood_scale, low=0.0, low_open=True)
    started = time.perf_counter()
    gen = _generator(seed)
    pairs = torch.randn(samples + test, 6, generator=gen, dtype=torch.float64)

    def target(p: torch.Tensor) -> torch.Tensor:
        return torch.linalg.cross(p[:, :3], p[:, 3:])

    train, test_in = pairs[:samples], pairs[samples:]
    # a bias-free ReLU network is positively homogeneous (f(cx, cy) = c f(x, y)), so scaling both vectors
    # would not leave the distribution in any meaningful way; scaling x up and y down changes their ratio
    ood = torch.cat([test_in[:, :3] * ood_scale, test_in[:, 3:] / ood_scale], dim=1)
    sets = {"in": test_in, "ood": ood}
    so3 = SO3()
    test_sym = Symmetry(VectorRotation(so3, 2), VectorRotation(so3, 1), name="SO(3)")
    test_elements = so3.sample(rotations, seed=seed + 11)
    rows = []
    for name in groups:
        t0 = time.perf_counter()
        group = ROTATION_GROUPS[name]()
        sym = Symmetry(VectorRotation(group, 2), VectorRotation(group, 1))
        xa, ya = augment_orbits(train, target(train), sym)
        ens = DeepEnsemble(MLP(6, [width, width], 3, parameterization="ntk"), members, seed=seed + 13)
        losses = _full_batch_gd(ens, xa.float(), ya.float(), steps, lr)
        theory = InfiniteWidthEnsemble(xa, ya, _ntk_network(2), lr=lr, loss="mean", steps=steps)
        row = {"group": name, "order": group.order, "augmented": len(xa), "train_loss": losses[-1] if losses else None,
               "sets": {}}
        with torch.no_grad():
            for set_name, x in sets.items():
                orbit, elements = orbit_outputs(ens, x.float(), test_sym, test_elements, batch_dim=1)
                orbit = orbit.double()
                ntk_orbit, _ = orbit_outputs(theory, x, test_sym, elements)
                group_orbit, group_elements = orbit_outputs(theory, x, sym)
                rel_err = float(((orbit[0].mean(0) - target(x)).norm(dim=-1) / target(x).norm(dim=-1)).median())
                row["sets"][set_name] = {
                    "equivariance": ensemble_orbit_metrics(orbit, "equivariance", symmetry=test_sym,
                                                           elements=elements),
                    "ntk": ensemble_orbit_metrics(ntk_orbit[:, None], "equivariance", symmetry=test_sym,
                                                  elements=elements)["ensemble"],
                    "ntk_group": ensemble_orbit_metrics(group_orbit[:, None], "equivariance", symmetry=sym,
                                                        elements=group_elements)["ensemble"]
                    if group.order > 1 else None,
                    "median_relative_error": rel_err,
                }
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if progress:
            e = row["sets"]["in"]["equivariance"]
            progress(f"{name} (|G| = {group.order}): member {e['member']['mean']:.4f}, ensemble "
                     f"{e['ensemble']['mean']:.4f} ({row['seconds']:.1f} s)")
    return {
        "experiment": "crossproduct",
        "config": {"groups": list(groups), "samples": samples, "width": width, "members": members, "steps": steps,
                   "lr": lr, "test": test, "rotations": rotations, "ood_scale": ood_scale, "seed": seed,
                   "network": "6 → width → width → 3, ReLU, NTK parameterization, no biases"},
        "groups": rows,
        "sizes": _sizes(members),
        "seconds": time.perf_counter() - started,
    }


# ---------------------------------------------------------------------------------------------- digits
def _digit_images(seed: int, scale: int, photos: int):
    """Padded train / test digits, the standardised background value, and two out-of-distribution sets of
    ``photos`` images each, both made at the digits' native 8 × 8 resolution, mapped like the digits
    (raw 0..16 → standardised) and then upsampled and padded like them:

    - grayscale patches of scikit-learn's two shipped sample photographs (china.jpg, flower.jpg), cut at
      random and area-averaged to 8 × 8;
    - noise images: 8 × 8 pixels drawn uniformly from the digits' raw range 0..16.

    Noise is drawn at 8 × 8, not at the padded size: pixel-level white noise is not a fair orbit test for
    interpolated rotations, since bilinear interpolation averages neighbouring pixels (a 45° rotation cuts
    the standard deviation of 23 × 23 white noise from 1.0 to 0.67), so its rotated copies are images of
    another kind; upsampled 8 × 8 noise keeps 0.63 vs 0.59, like the digits."""
    from sklearn.datasets import load_digits, load_sample_images

    from ..data import load_dataset

    data = load_dataset("digits", seed=seed, val=0, flatten=False)
    background = float(border_value(data.train.x))  # standardised value of a blank pixel
    raw = load_digits().images
    scale_std = float(raw.std())
    rng = np.random.default_rng(seed + 5)
    patches = []
    images = [img.mean(axis=-1) / 255.0 for img in load_sample_images().images]
    for i in range(photos):
        img = images[i % len(images)]
        side = int(rng.integers(24, 97))
        r, c = rng.integers(0, img.shape[0] - side), rng.integers(0, img.shape[1] - side)
        patch = torch.from_numpy(img[r : r + side, c : c + side].copy()).float()[None, None]
        patches.append(F.adaptive_avg_pool2d(patch, 8)[0])
    photo = torch.stack(patches) * 16.0 / scale_std + background if photos else torch.zeros(0, 1, 8, 8)
    noise = torch.from_numpy(rng.uniform(0.0, 16.0, size=(photos, 1, 8, 8))).float() / scale_std + background
    pad = lambda x: pad_for_rotation(x, scale=scale, fill=background)  # noqa: E731
    return (pad(data.train.x), data.train.y, pad(data.test.x), data.test.y, background, pad(photo),
            pad(noise))


def digits(
    *,
    groups: Sequence[int] = (4, 8, 16),
    members: int = 8,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 2e-3,
    channels: Sequence[int] = (8, 16, 32, 64),
    scale: int = 2,
    evals: int = 4,
    noise: int = 200,
    test: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """The rotated-digits experiment: OSP of ConvNet ensembles vs their members, through training and
    against ensemble size, on test digits and on noise images (out of distribution), for C_k augmentation."""
    groups = [check_int("groups", k, minimum=1) for k in groups]
    members = check_int("members", members, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    evals = check_int("evals", evals, minimum=1)
    noise = check_int("noise", noise, minimum=1)
    scale = check_int("scale", scale, minimum=1)
    lr = check_real("lr", lr, low=0.0, low_open=True)
    started = time.perf_counter()
    x_train, y_train, x_test, y_test, background, x_photo, x_noise = _digit_images(seed, scale, noise)
    if test is not None:
        x_test, y_test = x_test[: check_int("test", test, minimum=1)], y_test[:test]
    side = x_train.shape[-1]
    sets = {"test": x_test, "photos": x_photo, "noise": x_noise}
    eval_at = sorted({max(1, round(steps * (i + 1) / evals)) for i in range(evals)})
    rows = []
    for k in groups:
        t0 = time.perf_counter()
        sym = Symmetry(ImageRotation(CyclicGroup(k), fill=background))
        xa, ya = augment_orbits(x_train, y_train, sym)
        ens = DeepEnsemble(ConvNet(1, 10, channels=channels), members, seed=seed + k)
        opt = torch.optim.Adam(ens.parameters(), lr=lr)
        order_gen = _generator(seed + 1000 + k)
        order = torch.randperm(len(xa), generator=order_gen)
        cursor = 0
        history = []
        for step in range(1, steps + 1):
            if cursor + batch_size > len(order):
                order, cursor = torch.randperm(len(xa), generator=order_gen), 0
            idx = order[cursor : cursor + batch_size]
            cursor += batch_size
            out = ens(xa[idx])
            loss = F.cross_entropy(out.reshape(-1, 10), ya[idx].repeat(members), reduction="sum") / len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step in eval_at:
                ens.eval()
                point = {"step": step, "epochs": step * batch_size / len(xa), "sets": {}}
                with torch.no_grad():
                    for name, x in sets.items():
                        orbit, _ = orbit_outputs(ens, x, sym, batch_dim=1, batch_size=512)
                        point["sets"][name] = ensemble_orbit_metrics(orbit, "osp")
                        point["sets"][name]["probabilities"] = ensemble_orbit_metrics(
                            orbit, "osp", combine="probabilities")["by_size"]
                        if name == "test":
                            probs = torch.softmax(orbit[0].double(), -1)
                            point["accuracy"] = float((probs.mean(0).argmax(-1) == y_test).double().mean())
                            point["member_accuracy"] = float((probs.argmax(-1) == y_test).double().mean())
                history.append(point)
                ens.train()
        last = history[-1]
        rows.append({"k": k, "augmented": len(xa), "history": history, "final": last,
                     "seconds": time.perf_counter() - t0})
        if progress:
            parts = ", ".join(f"{name} {m['member']['mean']:.2f} → {m['ensemble']['mean']:.2f}"
                              for name, m in last["sets"].items())
            progress(f"C{k}: accuracy {last['accuracy']:.3f}, OSP member → ensemble: {parts} "
                     f"({rows[-1]['seconds']:.0f} s)")
    return {
        "experiment": "digits",
        "config": {"groups": groups, "members": members, "steps": steps, "batch_size": batch_size, "lr": lr,
                   "channels": list(channels), "scale": scale, "image_size": side, "noise": noise,
                   "test": len(x_test), "train": len(x_train), "seed": seed, "optimizer": "adam",
                   "network": "ConvNet (EE App. C) with the given channels"},
        "groups": rows,
        "sizes": _sizes(members),
        "reference": {"talk_fashionmnist_ood_osp": {"4": [3.85, 0.12], "8": [7.72, 0.34], "16": [15.24, 0.69]}},
        "seconds": time.perf_counter() - started,
    }
