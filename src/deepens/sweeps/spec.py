"""The sweep spec: a YAML or TOML file that expands into training tasks, validated on load.

::

    name: width-pools            # optional; default: the file's stem
    base:                        # training options shared by every task (any option of `deepens train`)
      dataset: digits
      ensemble: deep
      members: 64
      epochs: 10
      data_seed: 0               # one data split for every task, so their networks can be pooled
    grid:                        # the Cartesian product of these lists (in the file's order)
      width: [0.25, 0.5, 1, 2]
    list:                        # and / or explicit option sets, each crossed with the grid
      - {lr: 0.05}
      - {lr: 0.02, momentum: 0.0}
    members_per_task: 16         # a 64-network deep ensemble runs as 4 tasks of 16 members
    resources: {cpus: 1, gpus: 0}
    max_retries: 2               # a failed task is tried again at most this often (CLI: --max-retries)
    keep_checkpoints: false      # drop the checkpoints of finished tasks (default) or keep them

A configuration is ``base`` updated by one ``list`` entry and one grid point (a key may not be both in the
grid and in a list entry). ``members_per_task`` splits the members of deep and vectorized ensembles, whose
members are independent networks, into tasks of at most that many members; chunk ``k`` trains with the seed
:func:`chunk_seed` (seed, k) (chunk 0 keeps the seed) and the split of the configuration's ``data_seed`` (or
``seed``), so all chunks share one test set. Ensembles whose members share weights (batch, mc-dropout, lld,
collegial) are never split.

A task is identified by the hash of its training configuration (:func:`task_id`), without the options
that do not change what is trained (device, eval batch size, checkpoint interval): the same configuration
in two sweeps is one task, trained once.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeepensError, check_int
from ..training.config import TrainConfig
from ..training.trainer import RESUMABLE_CHANGES

__all__ = ["SweepSpec", "Task", "load_spec", "task_id", "canonical_config", "chunk_seed", "SPLITTABLE"]

SPLITTABLE = ("deep", "vectorized")
SPEC_KEYS = ("name", "base", "grid", "list", "members_per_task", "resources", "max_retries", "keep_checkpoints")
OPTIONS = tuple(f.name for f in fields(TrainConfig))


def canonical_config(config: TrainConfig | dict) -> dict:
    """The validated training configuration as a plain dict in its canonical form
    (:meth:`TrainConfig.canonical`), so that equal trainings have equal dicts."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    return cfg.canonical()


def task_id(config: TrainConfig | dict) -> str:
    """The task's identity: the first 16 hex digits of the SHA-256 of its canonical configuration, leaving
    out the options that a run may change when resumed (device, eval batch size, checkpoint interval)."""
    data = {k: v for k, v in canonical_config(config).items() if k not in RESUMABLE_CHANGES}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of chunk ``chunk`` of a split ensemble: ``seed`` for chunk 0, else a 31-bit seed drawn by
    numpy's SeedSequence from (seed, chunk) — distinct from the seeds of the other chunks and of the grid."""
    if chunk == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(chunk)]).generate_state(1)[0] >> 1)


@dataclass(frozen=True)
class Task:
    """One training: its id, configuration (a TrainConfig dict), where it comes from in the spec."""

    id: str
    config: dict
    point: int  # index of the configuration in the expanded spec
    chunk: int  # index of the member chunk (0 when not split)
    label: str  # the options that vary, e.g. "width=0.5 lr=0.02 [chunk 2/4]"


@dataclass
class SweepSpec:
    """A validated sweep: its name, tasks, resources per task and retry / checkpoint policy."""

    name: str
    tasks: list[Task]
    resources: dict = field(default_factory=lambda: {"cpus": 1, "gpus": 0})
    max_retries: int = 2
    keep_checkpoints: bool = False
    source: dict = field(default_factory=dict)

    @property
    def hash(self) -> str:
        """SHA-256 (16 hex digits) of the expanded sweep: its task ids in order, resources and policy."""
        text = json.dumps({"tasks": [t.id for t in self.tasks], "resources": self.resources,
                           "keep_checkpoints": self.keep_checkpoints}, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Any, *, name: str | None = None) -> SweepSpec:
        """Validate a spec given as a dict (the parsed file); raises a DeepensError naming the key."""
        if not isinstance(data, dict):
            raise DeepensError(f"spec: expected a mapping with base / grid / list, got {type(data).__name__}")
        unknown = [k for k in data if k not in SPEC_KEYS]
        if unknown:
            raise DeepensError(f"spec: unknown key {unknown[0]!r}{_suggest(unknown[0], SPEC_KEYS)} "
                               f"(expected {', '.join(SPEC_KEYS)})")
        if not any(k in data for k in ("base", "grid", "list")):
            raise DeepensError("spec: declares no trainings; give base (the options every task shares), grid (options "
                               "to vary) or list (explicit option sets), e.g. 'base: {dataset: digits}'")
        spec_name = data.get("name", name)
        if not isinstance(spec_name, str) or not spec_name.strip() or any(c in spec_name for c in "/\\\n"):
            raise DeepensError(f"name: expected a one-line sweep name without slashes, got {spec_name!r}")
        base = _options("base", data.get("base", {}))
        grid = data.get("grid", {})
        if not isinstance(grid, dict):
            raise DeepensError(f"grid: expected a mapping of option: [values], got {type(grid).__name__}")
        _options("grid", grid)
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise DeepensError(f"grid.{key}: expected a non-empty list of values, got {values!r}")
        entries = data.get("list", [{}])
        if not isinstance(entries, list) or not entries:
            raise DeepensError("list: expected a non-empty list of option mappings")
        entries = [_options(f"list[{i}]", e) for i, e in enumerate(entries)]
        for i, entry in enumerate(entries):
            both = sorted(set(entry) & set(grid))
            if both:
                raise DeepensError(f"list[{i}]: option {both[0]!r} is also in the grid; give it in one place")
        per_task = data.get("members_per_task")
        if per_task is not None:
            per_task = check_int("members_per_task", per_task, minimum=1)
        resources = _resources(data.get("resources", {}))
        max_retries = check_int("max_retries", data.get("max_retries", 2), minimum=0)
        keep = data.get("keep_checkpoints", False)
        if not isinstance(keep, bool):
            raise DeepensError(f"keep_checkpoints: expected true or false, got {keep!r}")

        varying = list(dict.fromkeys([*grid, *(k for e in entries for k in e)]))
        tasks: list[Task] = []
        point = 0
        for i, entry in enumerate(entries):
            for values in itertools.product(*grid.values()):
                options = {**base, **entry, **dict(zip(grid, values, strict=True))}
                shown = [f"{k}={_short(options[k])}" for k in varying if k in options]
                head = f"list[{i}]" if len(entries) > 1 else "task"
                where = f"{head} ({', '.join(shown)})" if shown else head
                try:
                    config = TrainConfig(**options).validate()
                except (DeepensError, TypeError) as exc:
                    raise DeepensError(f"{where}: {exc}") from None
                if config.device.startswith("cuda") and resources["gpus"] == 0:
                    raise DeepensError(f"resources.gpus: {where} trains on {config.device}; request gpus: 1 "
                                       "(or more) so that its task is placed on a GPU")
                tasks.extend(_chunks(config, per_task, point, " ".join(shown)))
                point += 1
        seen: dict[str, Task] = {}
        for t in tasks:
            if t.id in seen:
                raise DeepensError(f"spec: {t.label or 'a task'} and {seen[t.id].label or 'another'} are the same "
                                   "training (duplicate configuration)")
            seen[t.id] = t
        return cls(spec_name.strip(), tasks, resources, max_retries, keep, data)

    def to_dict(self) -> dict:
        return {"name": self.name, "hash": self.hash, "resources": self.resources, "max_retries": self.max_retries,
                "keep_checkpoints": self.keep_checkpoints, "tasks": len(self.tasks), "source": self.source}


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec from a .yaml / .yml or .toml file."""
    path = Path(path)
    if not path.is_file():
        raise DeepensError(f"spec: {path} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeepensError(f"spec: cannot read {path} ({exc})") from None
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DeepensError(f"spec: {path} is not valid YAML ({' '.join(str(exc).split())})") from None
    elif suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise DeepensError(f"spec: {path} is not valid TOML ({exc})") from None
    else:
        raise DeepensError(f"spec: expected a .yaml, .yml or .toml file, got {path.name}")
    return SweepSpec.from_dict(data if data is not None else {}, name=path.stem)


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _options(where: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise DeepensError(f"{where}: expected a mapping of training options, got {value!r}")
    for key in value:
        if key not in OPTIONS:
            raise DeepensError(f"{where}.{key}: unknown training option{_suggest(str(key), OPTIONS)}")
    return dict(value)


def _resources(value: Any) -> dict:
    if not isinstance(value, dict):
        raise DeepensError(f"resources: expected a mapping such as {{cpus: 1, gpus: 0}}, got {value!r}")
    unknown = [k for k in value if k not in ("cpus", "gpus")]
    if unknown:
        raise DeepensError(f"resources.{unknown[0]}: unknown resource (expected cpus, gpus)")
    cpus = check_int("resources.cpus", value.get("cpus", 1), minimum=1)
    gpus = value.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or gpus < 0:
        raise DeepensError(f"resources.gpus: expected a number >= 0 (a fraction shares a GPU), got {gpus!r}")
    return {"cpus": cpus, "gpus": gpus}


def _short(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _chunks(config: TrainConfig, per_task: int | None, point: int, label: str) -> list[Task]:
    members = config.members
    if per_task is None or per_task >= members or config.ensemble not in SPLITTABLE:
        return [Task(task_id(config), canonical_config(config), point, 0, label)]
    count = -(-members // per_task)
    tasks = []
    for k in range(count):
        options = config.to_dict()
        options.update(members=min(per_task, members - k * per_task), seed=chunk_seed(config.seed, k),
                       data_seed=config.split_seed())
        chunk = TrainConfig.from_dict(options)
        tag = f"[chunk {k + 1}/{count}]"
        tasks.append(Task(task_id(chunk), canonical_config(chunk), point, k, f"{label} {tag}".strip()))
    return tasks
