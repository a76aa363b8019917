"""How much memory a training needs, known before the ensemble is built (``deepens train`` refuses a training
that cannot fit instead of allocating until the machine runs out).

Everything an ensemble holds grows linearly in its number of members M (stacked weights, modulations, per-member
batch norms, activations of M members), so the estimate builds the same ensemble with 2 and with 3 members — the
real modules, small whatever M is — and extrapolates (one member, whose layouts need no re-laid-out copies, is
measured as it is): parameters, buffers, and the bytes autograd saves for the
backward pass of one training step (measured with ``torch.autograd.graph.saved_tensors_hooks`` on a batch of
at most 8 samples, in the run's precision, then scaled to the batch size; what a lean forward recomputes instead
of keeping is not counted, see :mod:`deepens.layers.recompute`). Gradients take one copy of the
parameters, SGD with momentum one more, Adam two; the dataset lies on the training device.
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch

from ..data.datasets import Dataset
from ..data.loader import Batches
from ..errors import DeepensError, parse_memory
from ..layers.recompute import saved_bytes
from .build import build_ensemble
from .config import TrainConfig

__all__ = ["training_memory", "available_memory", "check_training_memory"]

_PROBE_BATCH = 8


def _footprint(config: TrainConfig, data: Dataset, members: int, batch: int) -> dict:
    """Parameter, buffer and saved-for-backward bytes of the ensemble of ``members`` members on a batch of
    ``batch`` samples (in the configuration's batching mode and precision), on the CPU. Saved tensors are counted
    once per storage, and not at all when they are the parameters themselves (already counted)."""
    from dataclasses import replace

    from .losses import member_losses

    small = replace(config, members=members)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = build_ensemble(small, data)
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        buffers = sum(b.numel() * b.element_size() for b in model.buffers())
        split = data.train
        probe = type(split)(split.x[:batch].cpu(), split.y[:batch].cpu())
        batches = Batches(probe, batch, generator=torch.Generator().manual_seed(0), members=members,
                          mode=config.batches, shuffle=False)
        x, y = next(iter(batches.epoch()))
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if config.amp else nullcontext()
        # counted as a lean forward (deepens.layers.recompute) keeps its tensors, as training does
        with saved_bytes(model.parameters()) as saved, amp:
            out = model(x, per_member=y.dim() == 2)
            member_losses(out.float(), y, config.loss).sum()
    return {"parameters": params, "buffers": buffers, "activations": saved["bytes"], "batch": int(y.shape[-1])}


def training_memory(config: TrainConfig, data: Dataset) -> dict:
    """Estimated bytes of the training ``config`` on ``data``: ``parameters``, ``gradients``, ``optimizer``,
    ``buffers``, ``activations`` (saved for the backward pass of one step at the configured batch size),
    ``data`` (every split, on the device) and their ``total``; ``per_member`` is the growth per member.
    Activations are fitted as (a + b·B) per member count from batches of 4 and 8 samples of 2 and 3 members (1 for
    a one-member training)."""
    small, big = min(4, len(data.train)), min(_PROBE_BATCH, len(data.train))
    m = config.members
    # one member is a special case (its member-major and batch-major layouts coincide: no re-laid-out copies), so
    # ensembles are extrapolated from 2 and 3 members, one member measured as it is
    low = 1 if m == 1 else 2
    probes = {(k, b): _footprint(config, data, k, b) for k in (low, low + 1) for b in sorted({small, big})}

    def at(members: int, key: str) -> float:  # linear in the batch size from the two probe batches
        lo, hi = probes[(members, small)], probes[(members, big)]
        if hi["batch"] == lo["batch"]:
            return hi[key] * (config.batch_size / max(1, hi["batch"]) if key == "activations" else 1.0)
        slope = (hi[key] - lo[key]) / (hi["batch"] - lo["batch"])
        return lo[key] + slope * (config.batch_size - lo["batch"]) if key == "activations" else hi[key]

    def extrapolate(key: str) -> float:
        return at(low, key) + (m - low) * (at(low + 1, key) - at(low, key))

    params = extrapolate("parameters")
    state = {"sgd": 1.0 if config.momentum else 0.0, "adam": 2.0}[config.optimizer]
    data_bytes = sum(s.x.numel() * s.x.element_size() + s.y.numel() * s.y.element_size()
                     for s in (data.train, data.val, data.test))
    out = {"parameters": params, "gradients": params, "optimizer": state * params, "buffers": extrapolate("buffers"),
           "activations": max(0.0, extrapolate("activations")), "data": float(data_bytes)}
    out = {k: float(v) for k, v in out.items()}
    out["total"] = sum(out.values())
    hi = low + 1
    out["per_member"] = float((at(hi, "parameters") - at(low, "parameters")) * (2 + state)
                              + at(hi, "buffers") - at(low, "buffers") + at(hi, "activations") - at(low, "activations"))
    return out


def available_memory(device: torch.device | str) -> int | None:
    """Free memory of ``device`` in bytes: the GPU's free memory, or the machine's available memory (Linux
    ``MemAvailable``); None where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def check_training_memory(config: TrainConfig, data: Dataset, device: torch.device | str,
                          max_memory: int | float | str | None = None) -> dict:
    """The estimate of :func:`training_memory`, refused with a :class:`DeepensError` (naming ``members`` and the
    estimate) when it exceeds ``max_memory`` or, without one, the memory available on ``device`` (which the
    already loaded data no longer counts in, so the data is left out of that comparison)."""
    estimate = training_memory(config, data)
    budget = parse_memory(max_memory) if max_memory is not None else available_memory(device)
    estimate["budget"] = budget
    # the data is loaded (on the device) by the time this runs: the free memory no longer includes it
    needed = estimate["total"] - (estimate["data"] if max_memory is None else 0.0)
    if budget is not None and needed > budget:
        parts = ", ".join(f"{k} {_gib(estimate[k])}" for k in ("parameters", "gradients", "optimizer", "activations",
                                                                 "data") if estimate[k] >= 0.05 * estimate["total"])
        fit = int(max(0, (budget - (estimate["total"] - config.members * estimate["per_member"]))
                      // max(estimate["per_member"], 1)))
        where = f"--max-memory {_gib(budget)}" if max_memory is not None else f"the {_gib(budget)} available"
        plural = "" if fit == 1 else "s"
        raise DeepensError(f"members: this training needs about {_gib(estimate['total'])} ({parts}) but {where} "
                           f"allow(s) less; at most {fit} member{plural} fit — use fewer members, a smaller batch or "
                           "network, or --max-memory to set the budget")
    return estimate
