"""Timing harness: warm-up, repeats, medians; ratios are taken within one run.

Each repeat visits the candidates in a freshly shuffled (seeded) order; a candidate first runs once
untimed (so caches hold its own data, as in a training loop that repeats one step), then ``inner``
consecutive calls are timed. The result is the median over repeats of the per-call time. Shuffling
removes the bias of always following the same neighbour; the untimed call removes the cache
pollution left by the previous candidate.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def compare(
    candidates: dict[str, Callable[[], object]],
    *,
    warmup: int = 3,
    repeats: int = 15,
    inner: int = 3,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, float]:
    """Median seconds per call of each candidate (see the module docstring for the protocol)."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    sync(device)
    order = list(candidates)
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            fn = candidates[name]
            fn()
            sync(device)
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(ts) for name, ts in times.items()}
