"""``--augment``: training on group-augmented images (emergent-equivariance talk, "Data augmentation").

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

__all__ = ["augment_dataset", "IMAGE_DATASETS"]


BatchTransform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def augment_dataset(data: Dataset, spec: str, flatten: bool) -> tuple[Dataset, BatchTransform | None]:
    """The dataset to train on and, for random augmentation, the per-batch transform.

    ``data`` holds images (N, C, H, W); with ``flatten`` the returned splits (and the batches the
    transform returns) are vectors, as an MLP needs.
    """
    if len(data.input_shape) != 3:
        raise DeepensError(f"augment: rotations act on images (C, H, W); {data.name} has shape {data.input_shape}")
    symmetry, finite = image_augmentation(spec, fill=border_value(data.train.x))
    shape = data.input_shape

    def flat(split: Split) -> Split:
        return Split(split.x.reshape(len(split), -1), split.y) if flatten else split

    info = dict(data.info, augment=spec, augment_group=symmetry.group.name)
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
