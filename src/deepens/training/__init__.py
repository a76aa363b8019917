"""Training and evaluation of ensembles (EE Eqs. 2-4), run directories, metrics."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import DeepensError
from .build import build_ensemble, build_reference
from .config import TrainConfig, parse_gamma, parse_modulation
from .losses import member_losses
from .metrics import classification_metrics, disagreement, expected_calibration_error, member_correlation
from .schedules import lr_factor
from .trainer import (
    DivergenceError,
    Trainer,
    TrainResult,
    evaluate_run,
    load_run,
    predict_logits,
    training_step,
)

__all__ = [
    "TrainConfig",
    "Trainer",
    "TrainResult",
    "training_step",
    "DivergenceError",
    "train",
    "evaluate_run",
    "load_run",
    "predict_logits",
    "build_ensemble",
    "build_reference",
    "member_losses",
    "lr_factor",
    "classification_metrics",
    "expected_calibration_error",
    "member_correlation",
    "disagreement",
    "parse_gamma",
    "parse_modulation",
]


def train(
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    max_memory: int | float | str | None = None,
    threads: int | str | None = None,
    **options,
) -> TrainResult:
    """Train an ensemble: ``deepens.train(dataset="digits", ensemble="batch", members=8, epochs=20)``.

    ``options`` override fields of ``config`` (a :class:`TrainConfig`; defaults when omitted). With
    ``out`` the run is written to that run directory (and ``resume=True`` continues it). A training whose
    estimated memory (:func:`~deepens.training.memory.training_memory`) exceeds ``max_memory`` (bytes or
    ``"8GiB"``; default: what the device has free) is refused before anything is allocated. ``threads``: torch
    threads while training, a number or ``"auto"`` (:func:`~deepens.training.threads.resolve_threads`; default:
    leave the caller's setting).
    """
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise DeepensError(f"train: unknown option(s) {', '.join(unknown)}")
    cfg = TrainConfig(**options) if config is None else dataclasses.replace(config, **options)
    return Trainer(cfg, out, progress=progress, max_memory=max_memory, threads=threads).fit(resume=resume)
