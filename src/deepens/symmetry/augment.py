"""Data augmentation by group orbits (finite groups) or random group elements (continuous groups).

Full-orbit augmentation (the talk's T_aug = {(ρ_X(g)x, ρ_Y(g)y) | g ∈ G, (x, y) ∈ T}) lists the samples
element-major: augmented index g·N + i holds (ρ_X(g)x_i, ρ_Y(g)y_i), so acting with an exact ρ_X(h) on
the augmented inputs permutes them (the permutation Π(h) of the talk's proof). Class labels (integer
tensors) are invariant. For continuous groups :class:`RandomAugmentation` draws one element per sample
and batch from a ``torch.Generator`` (so a resumed run redraws the same elements).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import DeepensError
from .actions import ImageRotation, Symmetry
from .groups import SO2, CyclicGroup, Group

__all__ = ["augment_orbits", "RandomAugmentation", "draw_elements", "image_augmentation", "orbit_permutation",
           "AUGMENT_HELP"]

AUGMENT_HELP = "cK (K ≥ 1: full C_K orbits, e.g. c4, c8, c16) or so2 (a random rotation per sample and batch)"


def augment_orbits(x: torch.Tensor, y: torch.Tensor, symmetry: Symmetry,
                   elements: Sequence | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The orbit-augmented dataset, element-major: (|G|·N, ...) inputs and labels.

    ``elements`` defaults to all elements of a finite group (identity first); for a continuous group pass
    the elements to augment with. Integer labels are kept as they are (classification: invariant).
    """
    if x.shape[0] != y.shape[0]:
        raise DeepensError(f"y: expected {x.shape[0]} labels for {x.shape[0]} inputs, got {y.shape[0]}")
    if elements is None and not symmetry.group.is_finite:
        raise DeepensError(f"elements: {symmetry.group.name} is continuous; pass the elements to augment with")
    elements = symmetry.group.elements() if elements is None else list(elements)
    xs = symmetry.input.orbit(x, elements).reshape(len(elements) * x.shape[0], *x.shape[1:])
    if _class_labels(y, symmetry):
        ys = y.repeat(len(elements))
    else:
        ys = symmetry.output.orbit(y, elements).reshape(len(elements) * y.shape[0], *y.shape[1:])
    return xs, ys


def orbit_permutation(symmetry: Symmetry, g, n: int) -> np.ndarray:
    """Π(g) on an element-major orbit-augmented set of N = ``n`` samples: ρ_X(g) x_aug[j] = x_aug[π(j)]."""
    group = symmetry.group
    if not group.is_finite:
        raise DeepensError("symmetry: Π(g) exists for finite groups only")
    perm = np.empty(group.order * n, dtype=np.int64)
    for h in range(group.order):
        gh = group.compose(g, h)
        perm[h * n : (h + 1) * n] = gh * n + np.arange(n)
    return perm


def draw_elements(group: Group, n: int, generator: torch.Generator) -> list:
    """``n`` Haar-random elements drawn from ``generator`` (uniform for finite groups; a continuous group
    samples with its own ``sample`` from a seed drawn from ``generator``)."""
    if group.is_finite:
        return torch.randint(0, group.order, (n,), generator=generator).tolist()
    return group.sample(n, seed=int(torch.randint(0, 2**62, (1,), generator=generator)))


def _class_labels(y: torch.Tensor, symmetry: Symmetry) -> bool:
    """Integer labels of an invariant target: left as they are by augmentation."""
    return not torch.is_floating_point(y) and symmetry.invariant


class RandomAugmentation:
    """Transform each sample of a batch by its own random group element (continuous groups)."""

    def __init__(self, symmetry: Symmetry) -> None:
        self.symmetry = symmetry

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        elements = draw_elements(self.symmetry.group, x.shape[0], generator)
        xs = self.symmetry.input.apply_each(elements, x)
        if _class_labels(y, self.symmetry):
            return xs, y
        return xs, self.symmetry.output.apply_each(elements, y)


_SPEC = re.compile(r"^c(\d+)$")


def image_augmentation(spec: str, *, fill: float | torch.Tensor = 0.0) -> tuple[Symmetry, bool]:
    """The symmetry of an ``--augment`` spec for images and whether it is a full-orbit (finite) one."""
    if not isinstance(spec, str):
        raise DeepensError(f"augment: expected {AUGMENT_HELP}, got {spec!r}")
    text = spec.strip().lower()
    match = _SPEC.match(text)
    if match and int(match.group(1)) >= 1:
        return Symmetry(ImageRotation(CyclicGroup(int(match.group(1))), fill=fill)), True
    if text == "so2":
        return Symmetry(ImageRotation(SO2(), fill=fill)), False
    raise DeepensError(f"augment: expected {AUGMENT_HELP}, got {spec!r}")
