"""The run directory: the contract between training and every analysis.

::

    DIR/config.json         the training configuration (complete enough to re-run) + versions + data
    DIR/metrics.jsonl       one JSON object per evaluated epoch
    DIR/metrics.json        final metrics per split (train / val / test)
    DIR/logits.safetensors  member logits on val and test, shape (M, N, C), with the labels
    DIR/model.safetensors   final weights (state_dict of the ensemble)
    DIR/checkpoint.json     pointer to the latest complete checkpoint
    DIR/checkpoints/epoch-NNNNNN/{model.safetensors, optimizer.safetensors, state.json}

Every file is written atomically (temporary file + rename). A checkpoint is a directory written in
full before ``checkpoint.json`` is switched to it, so the pointer always names a complete checkpoint,
whenever the process is killed; older checkpoints are deleted only after the switch.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import DeepensError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["RunDir", "encode_state", "decode_state", "jsonable"]


def jsonable(obj: Any) -> Any:
    """Replace NaN / inf by None and tensors / numpy scalars by Python numbers, recursively."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def encode_state(t: torch.Tensor) -> str:
    """A byte tensor (e.g. an RNG state) as base64 text for JSON."""
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def decode_state(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def _tensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    return st_save(clean, metadata=metadata)


class RunDir:
    """Paths and atomic readers / writers of one run directory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # -- paths ---------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def history_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def logits_path(self) -> Path:
        return self.path / "logits.safetensors"

    @property
    def weights_path(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def pointer_path(self) -> Path:
        return self.path / "checkpoint.json"

    def exists(self) -> bool:
        return self.config_path.exists()

    def is_finished(self) -> bool:
        return self.metrics_path.exists()

    def prepare(self) -> None:
        """Create the directory, or fail clearly if it cannot be written."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise DeepensError(f"out: cannot write to {self.path} ({exc.strerror or exc})") from None

    RUN_FILES = ("config.json", "metrics.jsonl", "metrics.json", "logits.safetensors", "model.safetensors",
                 "checkpoint.json", "checkpoints")

    def clear(self) -> None:
        """Delete the run's own files (those listed in the module docstring; anything else in the folder stays),
        so that a new training can be written here (``deepens train --overwrite``). The final weights go first
        and the configuration last, so an interrupted clear leaves an unfinished run, never a finished one
        with the wrong files."""
        for name in ("metrics.json", "model.safetensors", "logits.safetensors", "metrics.jsonl", "checkpoint.json",
                     "checkpoints", "config.json"):
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    # -- JSON files ----------------------------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config_path, jsonable(config))

    def read_config(self) -> dict:
        return self._read_json(self.config_path, "config")

    def write_history(self, rows: list[dict]) -> None:
        atomic_write_text(self.history_path, "".join(json.dumps(jsonable(r)) + "\n" for r in rows))

    def read_history(self) -> list[dict]:
        if not self.history_path.exists():
            return []
        return [json.loads(line) for line in self.history_path.read_text().splitlines() if line.strip()]

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.metrics_path, jsonable(metrics))

    def read_metrics(self) -> dict:
        return self._read_json(self.metrics_path, "metrics")

    def _read_json(self, path: Path, what: str) -> dict:
        if not path.exists():
            raise DeepensError(f"{what}: {self.path} has no {path.name} (not a deepens run directory?)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DeepensError(f"{what}: {path} is corrupt ({exc})") from None
        if not isinstance(data, dict):
            raise DeepensError(f"{what}: {path} is corrupt (expected a JSON object)")
        return data

    # -- tensors -------------------------------------------------------------------------------------
    def write_logits(self, tensors: dict[str, torch.Tensor]) -> None:
        atomic_write_bytes(self.logits_path, _tensors_bytes(tensors))

    def read_logits(self) -> dict[str, torch.Tensor]:
        return self._read_tensors(self.logits_path, "logits")

    def write_weights(self, state: dict[str, torch.Tensor]) -> None:
        atomic_write_bytes(self.weights_path, _tensors_bytes(state))

    def read_weights(self) -> dict[str, torch.Tensor]:
        return self._read_tensors(self.weights_path, "weights")

    def _read_tensors(self, path: Path, what: str) -> dict[str, torch.Tensor]:
        if not path.exists():
            raise DeepensError(f"{what}: {self.path} has no {path.name}")
        try:
            return st_load(path.read_bytes())
        except (SafetensorError, ValueError, OSError) as exc:
            raise DeepensError(f"{what}: {path} is corrupt ({exc})") from None

    # -- checkpoints ---------------------------------------------------------------------------------
    def save_checkpoint(
        self,
        epoch: int,
        model_state: dict[str, torch.Tensor],
        optimizer_tensors: dict[str, torch.Tensor],
        state: dict,
    ) -> Path:
        """Write a complete checkpoint directory, then switch ``checkpoint.json`` to it."""
        name = f"epoch-{epoch:06d}"
        final = self.path / "checkpoints" / name
        staging = self.path / "checkpoints" / f".{name}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        atomic_write_bytes(staging / "model.safetensors", _tensors_bytes(model_state))
        atomic_write_bytes(staging / "optimizer.safetensors", _tensors_bytes(optimizer_tensors))
        atomic_write_json(staging / "state.json", jsonable(state))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        atomic_write_json(self.pointer_path, {"epoch": epoch, "dir": f"checkpoints/{name}"})
        for old in (self.path / "checkpoints").iterdir():
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict] | None:
        """The latest complete checkpoint (model state, optimizer tensors, state), or None if none."""
        if not self.pointer_path.exists():
            return None
        pointer = self._read_json(self.pointer_path, "checkpoint")
        directory = self.path / str(pointer.get("dir", ""))
        if not isinstance(pointer.get("dir"), str) or not directory.is_dir():
            raise DeepensError(f"checkpoint: {self.pointer_path} names {pointer.get('dir')!r}, which does not exist")
        model = self._read_tensors(directory / "model.safetensors", "checkpoint")
        optim = self._read_tensors(directory / "optimizer.safetensors", "checkpoint")
        state = self._read_json(directory / "state.json", "checkpoint")
        return model, optim, state
