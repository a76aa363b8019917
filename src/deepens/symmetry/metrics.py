"""Orbit metrics of invariance and equivariance (emergent-equivariance talk; reference notes).

Outputs on an orbit are arrays with the group-element axis first: (G, B, ...) for one model, and
(G, M, B, ...) for M ensemble members (member axis right after the element axis).

* OSP, orbit same predictions: for input x, #{g : argmax f(ρ_X(g)x) = argmax f(x)} (at most |G|); the
  untransformed input must be element 0 of the orbit (the identity).
* relative orbit std of an invariant scalar: std_g f(ρ_X(g)x) / |mean_g f(ρ_X(g)x)| (population std).
* equivariance error: ‖f(ρ_X(g)x) − ρ_Y(g) f(x)‖ / ‖f(x)‖ averaged over g ≠ e and x.

Every metric is returned per input (so it can be summarised as mean ± std over inputs); the
``*_summary`` helpers and :func:`ensemble_orbit_metrics` do the summaries for each member, the mean member,
and the ensemble (the mean of the members' outputs, or of their softmax probabilities) at several
ensemble sizes (averaged over disjoint groups of members).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..errors import DeepensError
from .actions import Symmetry

__all__ = [
    "orbit_same_predictions",
    "relative_orbit_std",
    "equivariance_error",
    "summarize",
    "orbit_outputs",
    "ensemble_orbit_metrics",
    "METRICS",
]

METRICS = ("osp", "orbit_std", "equivariance")


def _np(a) -> np.ndarray:
    return a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float64)


def orbit_same_predictions(outputs) -> np.ndarray:
    """OSP per input from outputs on an orbit (G, ..., C) with element 0 the identity: (...,) counts."""
    out = _np(outputs)
    if out.ndim < 2:
        raise DeepensError(f"outputs: expected (G, ..., C) class scores on an orbit, got shape {out.shape}")
    pred = out.argmax(-1)
    return (pred == pred[0:1]).sum(axis=0).astype(np.float64)


def relative_orbit_std(values) -> np.ndarray:
    """std_g / |mean_g| of an invariant scalar on an orbit (G, ...): (...,) per input."""
    v = _np(values)
    if v.ndim < 1 or v.shape[0] < 2:
        raise DeepensError(f"values: expected (G, ...) with G >= 2 orbit elements, got shape {v.shape}")
    mean = v.mean(axis=0)
    return v.std(axis=0) / np.maximum(np.abs(mean), 1e-300)


def equivariance_error(transformed, expected, reference, *, skip_first: bool = True) -> np.ndarray:
    """‖f(ρ_X(g)x) − ρ_Y(g)f(x)‖ / ‖f(x)‖ averaged over orbit elements: (...,) per input.

    ``transformed`` = f(ρ_X(g)x) and ``expected`` = ρ_Y(g) f(x), both (G, ..., D); ``reference`` = f(x),
    (..., D). With ``skip_first`` element 0 (the identity, error 0 by construction) is left out.
    """
    a, b, r = _np(transformed), _np(expected), _np(reference)
    if a.shape != b.shape or a.shape[1:] != r.shape:
        raise DeepensError(f"outputs: expected transformed/expected (G, ..., D) and reference (..., D), got "
                           f"{a.shape}, {b.shape}, {r.shape}")
    if skip_first and a.shape[0] > 1:
        a, b = a[1:], b[1:]
    err = np.linalg.norm(a - b, axis=-1) / np.maximum(np.linalg.norm(r, axis=-1), 1e-300)
    return err.mean(axis=0)


def summarize(values) -> dict:
    """Mean, std, median over inputs (the last axis)."""
    v = _np(values)
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v))}


@torch.no_grad()
def orbit_outputs(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, symmetry: Symmetry,
                  elements: Sequence | None = None, *, batch_dim: int = 0,
                  batch_size: int = 4096) -> tuple[torch.Tensor, list]:
    """``fn`` on the orbit of every input: (G, *fn-output-shape) with the identity first.

    ``batch_dim`` is the axis of ``fn``'s output that runs over inputs (0 for a model's (B, D), 1 for an
    ensemble's (M, B, D)); inputs are fed in chunks of ``batch_size``. ``elements`` default to all
    elements of a finite group; a list that does not start with the identity gets it prepended.
    Returns the outputs and the elements used.
    """
    group = symmetry.group
    if elements is None:
        elements = group.elements()
    elements = list(elements)
    ident = group.identity()
    if not elements or not _is_identity(elements[0], ident):
        elements = [ident, *elements]
    outs = []
    for g in elements:
        xg = symmetry.input(g, x)
        parts = [fn(xg[i : i + batch_size]) for i in range(0, xg.shape[0], batch_size)]
        outs.append(torch.cat(parts, dim=batch_dim))
    return torch.stack(outs), elements


def _is_identity(g, ident) -> bool:
    if isinstance(ident, np.ndarray):
        return isinstance(g, np.ndarray) and np.allclose(g, ident)
    return g == ident


def _disjoint_groups(members: int, size: int) -> list[np.ndarray]:
    return [np.arange(i * size, (i + 1) * size) for i in range(members // size)]


def ensemble_orbit_metrics(
    outputs: torch.Tensor,
    metric: str,
    *,
    symmetry: Symmetry | None = None,
    elements: Sequence | None = None,
    sizes: Sequence[int] | None = None,
    scalar: Callable[[np.ndarray], np.ndarray] | None = None,
    combine: str = "mean",
) -> dict:
    """A metric for every member, the mean member and the ensemble, from member outputs on an orbit.

    ``outputs``: (G, M, B, D) member outputs on the orbit (element 0 the identity). ``metric``:
    ``osp`` (class scores), ``orbit_std`` (an invariant
    scalar: D = 1, or ``scalar`` maps outputs (..., D) to scalars (...)), ``equivariance`` (needs
    ``symmetry`` and the orbit's ``elements`` for ρ_Y). ``sizes``: ensemble sizes to evaluate
    (averaged over ⌊M/n⌋ disjoint groups of members; default powers of two up to M). ``combine``: how
    members' outputs make the ensemble's: ``mean`` (the mean output f̄ = (1/M) Σ f_α, the quantity of the
    infinite-width statement; for classifiers the mean logits) or ``probabilities`` (the mean of the
    members' softmax probabilities, the usual deep-ensemble predictive distribution).
    """
    out = outputs.detach().double().cpu() if isinstance(outputs, torch.Tensor) else torch.as_tensor(outputs).double()
    if out.dim() != 4:
        raise DeepensError(f"outputs: expected member outputs on an orbit (G, M, B, D), got shape {tuple(out.shape)}")
    if metric not in METRICS:
        raise DeepensError(f"metric: expected one of {', '.join(METRICS)}; got {metric!r}")
    if combine not in ("mean", "probabilities"):
        raise DeepensError(f"combine: expected mean or probabilities, got {combine!r}")
    if metric == "equivariance" and (symmetry is None or elements is None):
        raise DeepensError("symmetry: the equivariance error needs the symmetry and the orbit's elements")
    m = out.shape[1]
    sizes = sorted({1, *(2 ** i for i in range(int(np.log2(m)) + 1)), m}) if sizes is None else list(sizes)
    for n in sizes:
        if not 1 <= int(n) <= m:
            raise DeepensError(f"sizes: expected ensemble sizes in 1..{m}, got {n}")

    def merge(chunk: torch.Tensor) -> torch.Tensor:  # (G, n, B, D) → (G, B, D)
        if combine == "probabilities":
            return torch.softmax(chunk, dim=-1).mean(dim=1)
        return chunk.mean(dim=1)

    def per_input(o: torch.Tensor) -> np.ndarray:  # (G, B, D) → (B,)
        if metric == "osp":
            return orbit_same_predictions(o)
        if metric == "orbit_std":
            vals = _np(o)
            vals = scalar(vals) if scalar is not None else vals[..., 0]
            return relative_orbit_std(vals)
        expected = torch.stack([symmetry.output(g, o[0]) for g in elements])
        return equivariance_error(o, expected, o[0])

    members = np.stack([per_input(out[:, a]) for a in range(m)])  # (M, B)
    member_means = members.mean(axis=1)
    by_size = []
    for n in sizes:
        vals = [per_input(merge(out[:, idx])) for idx in _disjoint_groups(m, int(n))]
        stacked = np.stack(vals)  # (groups, B)
        by_size.append({"size": int(n), "mean": float(stacked.mean()), "groups": len(vals),
                        "spread": float(stacked.mean(axis=1).std()), "median": float(np.median(stacked))})
    ensemble = per_input(merge(out))
    return {
        "metric": metric,
        "combine": combine,
        "members": member_means.tolist(),
        "member": {"mean": float(member_means.mean()), "std": float(member_means.std()),
                   "median": float(np.median(members))},
        "ensemble": summarize(ensemble),
        "by_size": by_size,
        "orbit_size": int(out.shape[0]),
        "inputs": int(out.shape[2]),
    }
