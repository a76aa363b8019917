"""Calibration benchmark (issue: power laws, §8): CNLL with 2-fold × 5 test-time cross-validation for
1000 ensembles on 10,000 test points × 10 classes, against the SciPy reference run per ensemble."""

from __future__ import annotations

import time

import numpy as np

from deepens.scaling import calibrated_nll, reference_cnll


def cnll_speed(ensembles: int = 1000, members: int = 4, points: int = 10_000, classes: int = 10,
               reference_sample: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, points)
    z = (rng.standard_normal((ensembles, members, points, classes), dtype=np.float32) * 2.0)
    z[:, :, np.arange(points), y] += rng.uniform(0.0, 4.0, (ensembles, members, points)).astype(np.float32)
    z *= rng.uniform(0.7, 2.5, (ensembles, members, 1, 1)).astype(np.float32)  # mis-calibrated members
    start = time.perf_counter()
    ours = calibrated_nll(z, y, temperature="before", cv="halves", repeats=5, seed=seed)
    t_ours = (time.perf_counter() - start) / ensembles
    start = time.perf_counter()
    refs = [reference_cnll(z[e], y, temperature="before", cv="halves", repeats=5, seed=seed, grid=9)
            for e in range(reference_sample)]  # a coarse grid, then SciPy's bounded Brent: the straightforward way
    t_ref = (time.perf_counter() - start) / reference_sample
    diff = max(abs(float(ours["cnll"][e]) - refs[e]) for e in range(reference_sample))
    return {
        "name": f"CNLL, 2-fold × 5 cross-validation, {ensembles} ensembles of {members} members, {points} points × "
                f"{classes} classes",
        "seconds_per_ensemble": {"deepens": t_ours, "scipy_reference": t_ref},
        "seconds_total": {"deepens": t_ours * ensembles, "scipy_reference_extrapolated": t_ref * ensembles},
        "speedup": t_ref / t_ours,
        "max_abs_diff": diff,
        "reference_sample": reference_sample,
        "targets": {"speedup": 20.0, "max_abs_diff": 1e-4},
    }
