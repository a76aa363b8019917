"""Run directories: config, metrics, logits, weights and checkpoints of one training run."""

from .rundir import RunDir, jsonable

__all__ = ["RunDir", "jsonable"]
