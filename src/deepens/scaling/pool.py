"""Ensembles built from a pool of trained networks (power-laws paper §3).

Given ℓ trained networks of one size, for each ensemble size n the pool is permuted (seeded) and cut
into ⌊ℓ/n⌋ disjoint ensembles of n distinct networks; NLL, CNLL and accuracy are averaged over them.
Points averaged over fewer than 3 ensembles are flagged ``reliable = False`` and, by default, left out
of power-law fits (as in the paper).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import DeepensError, check_int
from .calibration import calibrated_nll, nll_at_temperature
from .powerlaw import fit_power_law, predict_from_prefix

__all__ = ["pool_ensembles", "pool_curve", "fit_pool_curve"]

MIN_ENSEMBLES = 3


def pool_ensembles(pool_size: int, n: int, seed: int = 0) -> np.ndarray:
    """Indices (⌊ℓ/n⌋, n) of disjoint ensembles of n distinct networks drawn from a pool of ℓ."""
    pool_size = check_int("pool_size", pool_size, minimum=1)
    n = check_int("n", n, minimum=1)
    if n > pool_size:
        raise DeepensError(f"n: an ensemble of {n} needs at least {n} networks in the pool, which has {pool_size}")
    perm = np.random.default_rng([seed, n]).permutation(pool_size)
    count = pool_size // n
    return perm[: count * n].reshape(count, n)


def pool_curve(
    logits,
    labels,
    *,
    sizes: Sequence[int] | None = None,
    seed: int = 0,
    temperature: str = "before",
    cv: str = "halves",
    repeats: int = 5,
    dtype: torch.dtype = torch.float32,
    fixed_temperatures: Sequence[float] = (),
) -> list[dict]:
    """NLL, CNLL and accuracy of ensembles of each size n drawn from a pool.

    ``logits`` is (ℓ, N, C): the pool's networks on one evaluation set. Returns one row per n with the
    mean and std over the ⌊ℓ/n⌋ ensembles and ``reliable`` (at least 3 ensembles); for every τ in
    ``fixed_temperatures`` also ``nll_tau{τ}_mean`` / ``_std``, the NLL at that fixed temperature.
    """
    z = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits)
    if z.dim() != 3:
        raise DeepensError(f"logits: expected a pool (networks, samples, classes), got shape {tuple(z.shape)}")
    finite = torch.isfinite(z) if z.is_floating_point() else torch.ones((), dtype=torch.bool)
    if not bool(finite.all()):
        net, sample, _ = (int(v) for v in (~finite).nonzero()[0])
        raise DeepensError(f"logits: non-finite values ({int((~finite).sum())} of them), the first in network {net} "
                           f"of the pool, sample {sample}")
    pool = z.shape[0]
    sizes = list(range(1, pool + 1)) if sizes is None else [check_int("sizes", s, minimum=1) for s in sizes]
    rows = []
    for n in sizes:
        groups = pool_ensembles(pool, n, seed)
        metrics = calibrated_nll(z[torch.as_tensor(groups)], labels, temperature=temperature, cv=cv,
                                 repeats=repeats, seed=seed, dtype=dtype)
        row = {"n": n, "ensembles": len(groups), "reliable": len(groups) >= MIN_ENSEMBLES}
        for key, source in (("nll", "nll"), ("cnll", "cnll"), ("accuracy", "accuracy_uncalibrated"),
                            ("temperature", "temperature")):
            values = np.asarray(metrics[source], dtype=np.float64)
            row[f"{key}_mean"] = float(values.mean())
            row[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        for tau in fixed_temperatures:
            values = np.atleast_1d(nll_at_temperature(z[torch.as_tensor(groups)], labels, tau, temperature=temperature))
            row[f"nll_tau{tau:g}_mean"] = float(values.mean())
            row[f"nll_tau{tau:g}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def fit_pool_curve(rows: list[dict], *, key: str = "cnll_mean", reliable_only: bool = True,
                   predict_k: int | None = 4) -> dict:
    """The power law of a pool curve (power-laws Eq. 6) and, optionally, the prediction of larger n from
    n <= ``predict_k`` (§7). The fit uses the reliable points; predictions are compared with every
    measured point beyond ``predict_k``, reliable or not (each row's ``reliable`` flag is kept)."""
    used = [r for r in rows if r["reliable"] or not reliable_only]
    result: dict = {"key": key, "points": [r["n"] for r in used]}
    result["fit"] = fit_power_law([r["n"] for r in used], [r[key] for r in used]).to_dict()
    if predict_k is not None:
        prefix = [r for r in used if r["n"] <= predict_k]
        later = [r for r in rows if r["n"] > predict_k]
        if len(prefix) >= 3 and later:
            pts = prefix + later
            result["prediction"] = predict_from_prefix([r["n"] for r in pts], [r[key] for r in pts], predict_k)
            reliable = {r["n"]: r["reliable"] for r in rows}
            for row in result["prediction"]["predictions"]:
                row["reliable"] = reliable[int(row["m"])]
        else:
            result["prediction"] = None
    return result
