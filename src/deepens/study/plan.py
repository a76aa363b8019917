"""``deepens study --plan``: what a study will train and how long it will take, before anything long starts.

Every part that trains hands all its trainings to ``ctx.prefetch`` before it asks for the first result
(:class:`~deepens.study.common.Part` ``trains``); the plan runs each selected part until that call and keeps the
option sets, so the list is the study's own, not a second description of it. Trainings are deduplicated across
parts (the power-law parts share their pools) and checked against the study's store (done ones cost nothing).

The time comes from a short calibration run per *shape* — trainings that differ only in seed, learning rate,
schedule, modulation distribution, γ or epochs run at the same speed: :meth:`deepens.training.Trainer.estimate`
times a few real optimizer steps and an evaluation pass on the study's device (one torch thread on a CPU, as
the study trains), and each training's estimate is its steps × the measured step time plus its evaluations.
Parts without trainings (kernels, Monte Carlo, the equivariance parts' own short loops) are listed with their
progress units, untimed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..errors import check_int
from .config import StudyConfig
from .parts import PARTS, part_names
from .runner import TRAIN_THREADS, StudyContext, default_workers

__all__ = ["plan_study", "study_trainings", "SPEED_FIELDS_IGNORED"]

SPEED_FIELDS_IGNORED = ("seed", "data_seed", "lr", "lr_individual", "modulation", "gamma", "momentum", "nesterov",
                        "weight_decay", "weight_decay_individual", "schedule", "step_size", "step_factor",
                        "milestones", "decay_start", "final_lr", "epochs", "eval_every", "checkpoint_seconds",
                        "trainable", "layers")
"""Training options that do not change the time of a step: trainings differing only in these share one
calibration run."""


class _Collected(Exception):
    """Raised by the planning context once a part has named its trainings."""


class _PlanContext(StudyContext):
    """A study context that records the trainings a part asks for and stops the part there."""

    def __init__(self, config: StudyConfig):
        super().__init__(config, lambda: None)
        self.option_sets: list[dict] = []

    def prefetch(self, option_sets: list[dict]) -> None:
        self.option_sets.extend(dict(o) for o in option_sets)
        raise _Collected

    def train(self, **options):
        self.option_sets.append(dict(options))
        raise _Collected


def study_trainings(config: StudyConfig, names: list[str]) -> dict[str, list]:
    """Part name → the :class:`~deepens.training.TrainConfig` of every training it asks for (parts without
    trainings: an empty list)."""
    import torch

    out = {}
    for name in names:
        part = PARTS[name]
        if not part.trains:
            out[name] = []
            continue
        ctx = _PlanContext(config)
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            try:
                part.run(config, ctx)
            except _Collected:
                pass
        out[name] = [ctx.train_config(**o) for o in ctx.option_sets]
    return out


def _shape(config) -> str:
    d = config.to_dict()
    return json.dumps({k: v for k, v in d.items() if k not in SPEED_FIELDS_IGNORED}, sort_keys=True)


def _hours(seconds: float) -> float:
    return seconds / 3600.0


def plan_study(
    config: StudyConfig,
    *,
    only: str | list[str] | None = None,
    paper: str | list[str] | None = None,
    out: str | Path | None = None,
    store=None,
    workers: int | None = None,
    steps: int = 3,
    warmup: int = 1,
    log: Callable[[str], None] | None = None,
) -> dict:
    """The plan of ``deepens study`` with these arguments: per selected part its trainings (new, and done in the
    store — ``store``, or ``out/store`` when it exists), the estimated seconds of the new ones, and for the whole
    study the number of distinct trainings, the estimated device-hours (the sum over trainings) and the wall
    time with ``workers`` processes on a CPU (one at a time on a GPU). ``steps`` / ``warmup``: optimizer steps
    timed / discarded per calibration run. Nothing is trained or written."""
    from ..sweeps.executors import torch_threads
    from ..sweeps.spec import task_id
    from ..sweeps.store import Store
    from ..training import Trainer

    config = config.validate()
    steps = check_int("steps", steps, minimum=1)
    warmup = check_int("warmup", warmup, minimum=0)
    names = part_names(only, paper)
    say = log or (lambda _msg: None)
    if store is None and out is not None and (Path(out) / "store").is_dir():
        store = Path(out) / "store"
    if store is not None and not isinstance(store, Store):
        store = Store(store) if Path(store).is_dir() else None

    per_part = study_trainings(config, names)
    seen: dict[str, dict] = {}  # task id → training record, first part that asks for it
    for name, configs in per_part.items():
        for c in configs:
            tid = task_id(c)
            if tid not in seen:
                record = store.task(tid) if store is not None else None
                seen[tid] = {"config": c, "part": name, "done": bool(record and record.status == "done")}

    calibrations: dict[str, dict] = {}
    device = None
    for record in seen.values():
        if record["done"]:
            continue
        c = record["config"]
        key = _shape(c)
        if key not in calibrations:
            say(f"plan: timing {c.model} {c.ensemble} × {c.members} on {c.dataset} ({len(calibrations) + 1})")
            with torch_threads(TRAIN_THREADS):
                measured = Trainer(c, progress=False).estimate(steps=steps, warmup=warmup)
            calibrations[key] = {"model": c.model, "ensemble": c.ensemble, "members": c.members,
                                 "dataset": c.dataset, "batch_size": c.batch_size, **measured}
            device = measured["device"]
        cal = calibrations[key]
        evaluated = -(-c.epochs // c.eval_every) * cal["val_samples"] + cal["final_samples"]
        record["seconds"] = (cal["seconds_per_step"] * cal["steps_per_epoch"] * c.epochs
                             + cal["eval_seconds_per_sample"] * evaluated)

    parts = []
    for name in names:
        part = PARTS[name]
        tids = list(dict.fromkeys(task_id(c) for c in per_part[name]))
        own = [t for t in tids if seen[t]["part"] == name]
        parts.append({
            "name": name, "paper": part.paper, "title": part.title, "trains": part.trains,
            "trainings": len(tids), "shared": len(tids) - len(own),
            "done": sum(seen[t]["done"] for t in own),
            "seconds": sum(seen[t].get("seconds", 0.0) for t in own) if part.trains else None,
            "units": part.units(config),
        })
    total = sum(r.get("seconds", 0.0) for r in seen.values())
    device = device or str(config.device)
    on_gpu = device.startswith("cuda")
    workers = (1 if on_gpu else default_workers("cpu")) if workers is None else check_int("workers", workers,
                                                                                           minimum=1)
    return {
        "preset": config.preset, "device": device, "workers": workers, "parts": parts,
        "trainings": len(seen), "done": sum(r["done"] for r in seen.values()),
        "seconds": total, "device_hours": _hours(total), "gpu_hours": _hours(total) if on_gpu else None,
        "wall_hours": _hours(total / (1 if on_gpu else workers)),
        "calibrations": list(calibrations.values()), "timed_steps": steps,
        "untimed": [p["name"] for p in parts if not p["trains"]],
    }

