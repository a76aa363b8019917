"""Representations: how a group acts on inputs (ρ_X) and on outputs (ρ_Y), on batches of tensors.

An :class:`Action` maps a group element and a batch ``x`` (B, ...) to ρ(g)x; ``orbit`` stacks ρ(g)x over
elements, (G, B, ...); ``apply_each`` applies one element per sample (random augmentation). A
:class:`Symmetry` pairs an input action with an output action of the same group (trivial output
action: an invariant target).

* :class:`Trivial` — ρ(g) = 1 (invariant targets, class labels).
* :class:`ImageRotation` — C_k or SO(2) rotating images (..., H, W) about their centre. Angles that are
  multiples of 90° use ``torch.rot90`` and are exact permutations of the pixels; other angles
  interpolate (``torch.nn.functional.grid_sample``, bilinear by default, ``align_corners=True``: pixel
  centres at −1 … 1, the centre of rotation at ((H−1)/2, (W−1)/2)). Pixels that come from outside the
  image take the value ``fill`` (the background). Interpolated rotations are not exactly a
  representation: corners outside the inscribed disc are lost and interpolation blurs, so ρ(g)ρ(h) ≈
  ρ(gh) only for images whose content lies inside the disc (pad images first: :func:`pad_for_rotation`).
  Positive angles turn the image the way ``torch.rot90(x, 1, dims=(-2, -1))`` does.
* :class:`LatticeRotation` — C_4 on a periodic L × L lattice of sites (flattened (..., L²) or (..., L, L)):
  a 90° turn of the lattice, which maps nearest neighbours to nearest neighbours; the same action on
  per-site outputs makes a per-site target equivariant.
* :class:`VectorRotation` — a group of 3 × 3 rotations (finite subgroup or SO(3)) acting on vectors of R³,
  or on ``copies`` vectors concatenated along the last axis (pairs: (..., 6)).
* :class:`PermutationAction` — a permutation group acting on the last axis: (ρ(g)x)_i = x_{g⁻¹(i)}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import DeepensError, check_int
from .groups import SO2, SO3, CyclicGroup, Group, MatrixGroup, PermutationGroup

__all__ = [
    "Action",
    "Trivial",
    "ImageRotation",
    "LatticeRotation",
    "VectorRotation",
    "PermutationAction",
    "Symmetry",
    "pad_for_rotation",
    "border_value",
]


def _check_each(elements: Sequence, x: torch.Tensor) -> None:
    if len(elements) != x.shape[0]:
        raise DeepensError(f"elements: expected one element per sample ({x.shape[0]}), got {len(elements)}")


class Action:
    """A representation of ``group`` on tensors: ``action(g, x)`` = ρ(g)x for a batch x."""

    exact = True  # ρ(g)ρ(h) = ρ(gh) holds exactly (False for interpolated rotations)

    def __init__(self, group: Group) -> None:
        if not isinstance(group, Group):
            raise DeepensError(f"group: expected a deepens Group, got {type(group).__name__}")
        self.group = group

    def __call__(self, g, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def orbit(self, x: torch.Tensor, elements: Sequence | None = None) -> torch.Tensor:
        """ρ(g)x for every element (default: all elements of a finite group), (G, B, ...)."""
        elements = self.group.elements() if elements is None else list(elements)
        return torch.stack([self(g, x) for g in elements])

    def apply_each(self, elements: Sequence, x: torch.Tensor) -> torch.Tensor:
        """ρ(g_b) x_b for one element per sample (B elements for a batch of B)."""
        _check_each(elements, x)
        return torch.cat([self(g, x[b : b + 1]) for b, g in enumerate(elements)]) if len(elements) else x

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.group.name})"


class Trivial(Action):
    """ρ(g) = identity: an invariant quantity (a class label, a total energy)."""

    def __call__(self, g, x: torch.Tensor) -> torch.Tensor:
        return x

    def apply_each(self, elements: Sequence, x: torch.Tensor) -> torch.Tensor:
        return x


def border_value(images: torch.Tensor) -> torch.Tensor:
    """The median border pixel of images (N, C, H, W) per channel, shaped (C, 1, 1): the background that
    pixels rotated in from outside an image should take."""
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., 1:-1, 0], images[..., 1:-1, -1]], dim=-1)
    return border.transpose(0, 1).reshape(images.shape[1], -1).median(dim=1).values.reshape(-1, 1, 1)


def pad_for_rotation(images: torch.Tensor, *, scale: int = 1, fill: float = 0.0) -> torch.Tensor:
    """Upsample images (..., H, W) by an integer ``scale`` (bilinear) and pad them with ``fill`` to the
    smallest odd square whose inscribed disc holds the whole image (side ≥ diagonal), so that
    interpolated rotations lose no content and rotate about the centre pixel."""
    scale = check_int("scale", scale, minimum=1)
    x = images
    lead = x.shape[:-2]
    x = x.reshape(-1, 1, *x.shape[-2:])
    if scale > 1:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    h, w = x.shape[-2:]
    side = math.ceil(math.hypot(h, w))
    side += 1 - side % 2  # odd
    top, left = (side - h) // 2, (side - w) // 2
    x = F.pad(x, (left, side - w - left, top, side - h - top), value=fill)
    return x.reshape(*lead, side, side)


class ImageRotation(Action):
    """C_k (``CyclicGroup``) or SO(2) rotating images about their centre (see the module docstring)."""

    def __init__(self, group: CyclicGroup | SO2 | int, *, fill: float | torch.Tensor = 0.0,
                 mode: str = "bilinear") -> None:
        if isinstance(group, int) and not isinstance(group, bool):
            group = CyclicGroup(group)
        if not isinstance(group, (CyclicGroup, SO2)):
            raise DeepensError(f"group: image rotations need a CyclicGroup or SO2, got {type(group).__name__}")
        super().__init__(group)
        if mode not in ("bilinear", "nearest", "bicubic"):
            raise DeepensError(f"mode: expected bilinear, nearest or bicubic, got {mode!r}")
        self.mode = mode
        self.fill = fill
        self.exact = isinstance(group, CyclicGroup) and 4 % group.k == 0

    def angle(self, g) -> float:
        return float(self.group.raw(g)) if isinstance(self.group, CyclicGroup) else float(g)

    def _quarter_turns(self, angle: float) -> int | None:
        q = angle / (math.pi / 2)
        r = round(q)
        return r % 4 if abs(q - r) < 1e-9 else None

    def __call__(self, g, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        angle = self.angle(g)
        q = self._quarter_turns(angle)
        if q is not None:
            return torch.rot90(x, q, dims=(-2, -1)) if q else x
        return self._rotate(x, torch.full((1,), angle, dtype=torch.float64))

    def apply_each(self, elements: Sequence, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        _check_each(elements, x)
        angles = torch.tensor([self.angle(g) for g in elements], dtype=torch.float64)
        return self._rotate(x, angles)

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[-1] != x.shape[-2]:
            raise DeepensError(f"x: expected square images (..., H, H), got {getattr(x, 'shape', type(x).__name__)}")

    def _rotate(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Rotate by ``angles`` (one, or one per leading sample), interpolating."""
        h, w = x.shape[-2:]
        lead = x.shape[:-2]
        n = angles.shape[0]
        batch = x.reshape(n, -1, h, w) if n > 1 else x.reshape(1, -1, h, w)
        # output pixel (row r, col c) samples the input at R(−θ)·((r, c) − centre) + centre, in the
        # normalised (x = col, y = row) coordinates of grid_sample; θ > 0 turns as rot90(k=1) does
        cos, sin = torch.cos(angles), torch.sin(angles)
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        sx, sy = (w - 1) / 2 if w > 1 else 1.0, (h - 1) / 2 if h > 1 else 1.0
        theta[:, 0, 0] = cos
        theta[:, 0, 1] = -sin * sy / sx
        theta[:, 1, 0] = sin * sx / sy
        theta[:, 1, 1] = cos
        grid = F.affine_grid(theta.to(x.dtype), [n, 1, h, w], align_corners=True)
        fill = torch.as_tensor(self.fill, dtype=x.dtype, device=x.device)
        # grid_sample fills with zeros: rotate (x − fill) and add fill back
        shifted = batch - fill
        out = F.grid_sample(shifted, grid.to(x.device), mode=self.mode, padding_mode="zeros", align_corners=True)
        return (out + fill).reshape(*lead, h, w)


class LatticeRotation(Action):
    """C_4 turning a periodic L × L lattice by 90° (flattened sites (..., L²) when ``flat``)."""

    def __init__(self, size: int, *, flat: bool = True, group: CyclicGroup | None = None) -> None:
        group = group or CyclicGroup(4)
        if not isinstance(group, CyclicGroup) or group.k != 4:
            raise DeepensError("group: a lattice rotation is an action of C4")
        super().__init__(group)
        self.size = check_int("size", size, minimum=2)
        self.flat = bool(flat)

    def __call__(self, g, x: torch.Tensor) -> torch.Tensor:
        q = self.group.check(g)  # an element of C4 is its number of quarter turns
        n = self.size
        if self.flat:
            if x.shape[-1] != n * n:
                raise DeepensError(f"x: expected {n * n} lattice sites on the last axis, got shape {tuple(x.shape)}")
            grid = x.reshape(*x.shape[:-1], n, n)
            return torch.rot90(grid, q, dims=(-2, -1)).reshape(x.shape)
        if tuple(x.shape[-2:]) != (n, n):
            raise DeepensError(f"x: expected an {n}×{n} lattice on the last two axes, got shape {tuple(x.shape)}")
        return torch.rot90(x, q, dims=(-2, -1))


class VectorRotation(Action):
    """3 × 3 rotations acting on ``copies`` vectors of R³ concatenated on the last axis (3·copies)."""

    def __init__(self, group: MatrixGroup | SO3, copies: int = 1) -> None:
        if not isinstance(group, (MatrixGroup, SO3)) or (isinstance(group, MatrixGroup) and group.dim != 3):
            raise DeepensError("group: vector rotations need a group of 3 × 3 matrices (MatrixGroup or SO3)")
        super().__init__(group)
        self.copies = check_int("copies", copies, minimum=1)

    def matrix(self, g) -> np.ndarray:
        return np.asarray(self.group.raw(g), dtype=np.float64)

    def _apply(self, mats: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        d = 3 * self.copies
        if x.shape[-1] != d:
            raise DeepensError(f"x: expected {self.copies} vector(s) of R³ ({d} values) on the last axis, "
                               f"got shape {tuple(x.shape)}")
        v = x.reshape(*x.shape[:-1], self.copies, 3)
        return torch.einsum("...ij,...cj->...ci", mats.to(x), v).reshape(x.shape)

    def __call__(self, g, x: torch.Tensor) -> torch.Tensor:
        return self._apply(torch.from_numpy(self.matrix(g)), x)

    def orbit(self, x: torch.Tensor, elements: Sequence | None = None) -> torch.Tensor:
        elements = self.group.elements() if elements is None else list(elements)
        mats = torch.from_numpy(np.stack([self.matrix(g) for g in elements]))  # (G, 3, 3)
        shape = (len(elements),) + (1,) * (x.dim() - 1) + (3, 3)
        return self._apply(mats.reshape(shape), x.unsqueeze(0).expand(len(elements), *x.shape))

    def apply_each(self, elements: Sequence, x: torch.Tensor) -> torch.Tensor:
        _check_each(elements, x)
        mats = torch.from_numpy(np.stack([self.matrix(g) for g in elements])) if len(elements) else torch.zeros(0, 3, 3)
        return self._apply(mats.reshape((x.shape[0],) + (1,) * (x.dim() - 2) + (3, 3)), x)


class PermutationAction(Action):
    """A permutation group acting on the last axis: (ρ(g)x)_{g(i)} = x_i."""

    def __init__(self, group: PermutationGroup) -> None:
        if not isinstance(group, PermutationGroup):
            raise DeepensError(f"group: expected a PermutationGroup, got {type(group).__name__}")
        super().__init__(group)

    def __call__(self, g, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.group.n:
            raise DeepensError(f"x: expected {self.group.n} coordinates on the last axis, got shape {tuple(x.shape)}")
        inv = self.group.raw(self.group.inverse(g))
        return x[..., list(inv)]


class Symmetry:
    """A symmetric learning problem: ``input`` = ρ_X and ``output`` = ρ_Y of one group (default ρ_Y = 1)."""

    def __init__(self, input: Action, output: Action | None = None, name: str | None = None) -> None:
        if not isinstance(input, Action):
            raise DeepensError(f"input: expected an Action, got {type(input).__name__}")
        output = output if output is not None else Trivial(input.group)
        if not isinstance(output, Action) or output.group is not input.group:
            raise DeepensError("output: expected an Action of the same group object as the input action")
        self.input = input
        self.output = output
        self.group = input.group
        self.name = name or self.group.name

    @property
    def invariant(self) -> bool:
        return isinstance(self.output, Trivial)

    @property
    def exact(self) -> bool:
        return self.input.exact and self.output.exact

    def __repr__(self) -> str:
        return f"Symmetry({self.name}: {self.input!r} → {self.output!r})"
