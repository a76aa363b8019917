"""``--augment``: training on group-augmented images (emergent-equivariance talk, "Data augmentation") and the
standard CIFAR augmentation (random crop from a 4-pixel zero padding + horizontal flip), composable:
``c4``, ``so2``, ``crop-flip``, ``crop-flip,c4``, ``crop-flip,so2``.

``crop-flip`` is drawn independently for every member: a shared batch (B, ...) becomes one batch per member
(M, B, ...) whose crops and flips differ, on the training device, from the run's data generator (checkpointed,
so a resumed run draws the same crops). The padding is a raw black pixel (0 before standardisation, i.e. −μ_c/σ_c
per channel after it).

A finite group C_k (``c4``, ``c8``, ``c16``, ...) replaces the training split by its full orbits,
|G| × N samples, once (element-major, labels unchanged); ``so2`` keeps the training split and rotates
every sample of every batch by its own random angle drawn from the run's data generator (whose state
is checkpointed, so a resumed run draws the same angles). Validation and test splits are never
augmented. Inputs are standardised per channel (one mean / std per image channel, which commutes with
rotations), also for an MLP, whose un-augmented inputs are standardised per pixel. Rotations act on
the images (an MLP's vectors are reshaped to images and back); pixels
rotated in from outside the image take the training images' median border value (the background; see
:class:`deepens.symmetry.ImageRotation` for interpolation and borders).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..data.datasets import IMAGE_DATASETS, Dataset, Split
from ..errors import DeepensError
from ..symmetry.actions import border_value
from ..symmetry.augment import RandomAugmentation, augment_orbits, image_augmentation

__all__ = ["augment_dataset", "IMAGE_DATASETS", "CropFlip", "split_augment", "AUGMENTATIONS_HELP"]

AUGMENTATIONS_HELP = ("cK (full C_K rotation orbits, e.g. c4), so2 (a random rotation per sample), crop-flip (random "
                      "crop from a 4-pixel zero padding + horizontal flip, per member), or crop-flip with one of the "
                      "rotations: crop-flip,c4")


def split_augment(spec: str) -> tuple[str | None, bool]:
    """(the rotation part or None, whether crop-flip is on) of an ``--augment`` spec; raises on anything else."""
    from ..symmetry.augment import image_augmentation

    if not isinstance(spec, str) or not spec.strip():
        raise DeepensError(f"augment: expected {AUGMENTATIONS_HELP}, got {spec!r}")
    parts = [p.strip().lower() for p in spec.split(",")]
    crop = "crop-flip" in parts
    rotations = [p for p in parts if p != "crop-flip"]
    if len(rotations) > 1 or parts.count("crop-flip") > 1 or "" in parts:
        raise DeepensError(f"augment: expected {AUGMENTATIONS_HELP}, got {spec!r}")
    if rotations:
        image_augmentation(rotations[0])  # validates
    return (rotations[0] if rotations else None), crop


class CropFlip:
    """Random crops from a ``pad``-pixel padding and horizontal flips, independently per member and sample.

    Called with a shared batch (B, ...) and labels (B,) it returns (M, B, ...) and (M, B); with per-member
    batches it keeps their layout. Samples may be flattened images of ``shape`` (C, H, W). Offsets and flips come
    from the generator (CPU), the crops are one gather on the batch's device.
    """

    def __init__(self, shape: tuple[int, int, int], members: int, fill, pad: int = 4) -> None:
        self.shape = tuple(shape)
        self.members = members
        self.pad = pad
        self.fill = torch.as_tensor(fill, dtype=torch.float32).reshape(-1)
        if self.fill.numel() not in (1, shape[0]):
            raise DeepensError(f"fill: expected one value per channel ({shape[0]}), got {self.fill.numel()}")

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        c, h, w = self.shape
        per_member = y.dim() == 2
        m, batch = (y.shape[0], y.shape[1]) if per_member else (self.members, y.shape[0])
        sample = tuple(x.shape[2:] if per_member else x.shape[1:])
        images = x.reshape(-1, c, h, w)
        if not per_member:  # one copy per member, member-major, each cropped on its own
            images = images.repeat(m, 1, 1, 1)
            y = y.unsqueeze(0).expand(m, batch)
        n, p = images.shape[0], self.pad
        offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=gen).to(images.device)
        flips = (torch.rand(n, generator=gen) < 0.5).to(images.device)
        padded = self.fill.to(images).view(1, -1, 1, 1).expand(n, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p:p + h, p:p + w] = images
        rows = offsets[:, :1] + torch.arange(h, device=images.device)  # (n, H)
        cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # (n, W)
        cols = torch.where(flips[:, None], cols.flip(-1), cols)  # a flip reads the window right to left
        index = torch.arange(n, device=images.device)[:, None, None, None]
        channel = torch.arange(c, device=images.device)[None, :, None, None]
        crops = padded[index, channel, rows[:, None, :, None], cols[:, None, None, :]]
        return crops.reshape((m, batch) + sample), y


BatchTransform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def augment_dataset(data: Dataset, spec: str, flatten: bool, members: int = 1
                    ) -> tuple[Dataset, BatchTransform | None]:
    """The dataset to train on and, for random augmentation, the per-batch transform.

    ``data`` holds images (N, C, H, W); with ``flatten`` the returned splits (and the batches the
    transform returns) are vectors, as an MLP needs. ``members``: crop-flip draws per member.
    """
    if len(data.input_shape) != 3:
        raise DeepensError(f"augment: augmentations act on images (C, H, W); {data.name} has shape "
                           f"{data.input_shape}")
    rotation, crop = split_augment(spec)
    shape = data.input_shape

    def flat(split: Split) -> Split:
        return Split(split.x.reshape(len(split), -1), split.y) if flatten else split

    cropper = None
    if crop:
        fill = data.info.get("zero_value")
        if fill is None:  # no raw statistics: the darkest value of each channel
            fill = data.train.x.transpose(0, 1).reshape(shape[0], -1).min(1).values.cpu()
        cropper = CropFlip(shape, members, fill)
    if rotation is None:
        info = dict(data.info, augment=spec)
        input_shape = (shape[0] * shape[1] * shape[2],) if flatten else shape
        out = Dataset(data.name, flat(data.train), flat(data.val), flat(data.test), data.num_classes, input_shape,
                      info)
        return out, cropper
    out, transform = _rotations(data, rotation, spec, flatten, flat)
    if cropper is None:
        return out, transform
    if transform is None:
        return out, cropper

    def both(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        return cropper(*transform(x, y, gen), gen)

    return out, both


def _rotations(data: Dataset, spec: str, whole: str, flatten: bool, flat) -> tuple[Dataset, BatchTransform | None]:
    symmetry, finite = image_augmentation(spec, fill=border_value(data.train.x))
    shape = data.input_shape
    info = dict(data.info, augment=whole, augment_group=symmetry.group.name)
    if finite:
        x, y = augment_orbits(data.train.x, data.train.y, symmetry)
        train = flat(Split(x, y))
        info["augmented_train"] = len(train)
        transform = None
    else:
        train = flat(data.train)  # rotated batch by batch
        random = RandomAugmentation(symmetry)

        def transform(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
            xr, _ = random(x.reshape(-1, *shape), y.reshape(-1), gen)
            return xr.reshape(x.shape), y
    input_shape = (shape[0] * shape[1] * shape[2],) if flatten else shape
    out = Dataset(data.name, train, flat(data.val), flat(data.test), data.num_classes, input_shape, info)
    return out, transform
