"""Minibatches from tensors already on the device: batching is indexing, never I/O.

``shared`` batches give every member the same batch (input (B, ...), labels (B,)); ``independent``
batches give each member its own permutation of the data (input (M, B, ...), labels (M, B)), as for
members trained separately. The order comes from a seeded ``torch.Generator`` whose state is saved
in checkpoints, so a resumed run sees exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..errors import DeepensError, check_choice, check_int
from .datasets import Split

__all__ = ["Batches"]


class Batches:
    """Iterate over shuffled minibatches of ``split`` for one epoch at a time."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        generator: torch.Generator,
        members: int = 1,
        mode: str = "shared",
        shuffle: bool = True,
    ) -> None:
        self.split = split
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.members = check_int("members", members, minimum=1)
        self.mode = check_choice("batches", mode, ("shared", "independent"))
        self.generator = generator
        self.shuffle = shuffle
        if len(split) == 0:
            raise DeepensError("split: cannot draw batches from an empty split")

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        device = self.split.x.device
        if self.mode == "shared":
            order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
            order = order.to(device)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                yield self.split.x[idx], self.split.y[idx]
        else:
            if self.shuffle:
                keys = torch.rand(self.members, n, generator=self.generator)
                order = torch.argsort(keys, dim=1)
            else:
                order = torch.arange(n).expand(self.members, n)
            order = order.to(device)
            for start in range(0, n, self.batch_size):
                idx = order[:, start : start + self.batch_size]  # (M, B)
                yield self.split.x[idx], self.split.y[idx]
