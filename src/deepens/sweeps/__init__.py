"""Resumable sweeps: a spec (YAML / TOML) expands into training tasks, an executor (local or Ray) trains
them, a store keeps one run directory per task and an SQLite index of their status."""

from .executors import EXECUTORS, LocalExecutor, Outcome, RayExecutor, train_task
from .runner import run_sweep
from .spec import SweepSpec, Task, canonical_config, chunk_seed, load_spec, task_id
from .store import Owner, Store, TaskRecord

__all__ = [
    "SweepSpec",
    "Task",
    "load_spec",
    "task_id",
    "canonical_config",
    "chunk_seed",
    "Store",
    "TaskRecord",
    "Owner",
    "run_sweep",
    "train_task",
    "Outcome",
    "LocalExecutor",
    "RayExecutor",
    "EXECUTORS",
]
