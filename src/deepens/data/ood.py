"""Out-of-distribution inputs for a model trained on a dataset, made offline and mapped exactly as the model sees
its own inputs (back to raw values with the dataset's statistics, then standardised with them):

* ``noise`` — every raw feature (pixel) drawn uniformly between the smallest and largest raw value of that
  channel (images) or feature (vectors) in the training split;
* ``shuffled`` — the test inputs with their pixels (all channels alike) or features randomly permuted, a new
  permutation per input: the same values, no structure;
* ``photos`` — patches of scikit-learn's two shipped sample photographs (china.jpg, flower.jpg), cut at random,
  area-averaged to the dataset's image size, in colour for colour images and grey otherwise, scaled to its raw
  range (image datasets only, also when the model reads them flattened);
* any image dataset of :data:`~deepens.data.datasets.IMAGE_DATASETS` (with ``data_dir`` for local ones): its
  test images converted to this dataset's shape by :func:`~deepens.data.load_ood` (CIFAR-10 for CIFAR-100 or
  FashionMNIST models, MNIST for FashionMNIST).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import DeepensError, check_int
from .datasets import IMAGE_DATASETS, Dataset, load_ood

__all__ = ["OOD_SETS", "ood_inputs", "photo_patches"]

OOD_SETS = ("noise", "shuffled", "photos")
_IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                 "cifar100": (3, 32, 32)}


def photo_patches(rng: np.random.Generator, count: int, size: int, channels: int = 1) -> torch.Tensor:
    """``count`` random square patches (side 24..96 pixels) of scikit-learn's sample photographs, area-averaged to
    ``size`` × ``size``, values in [0, 1]: (count, channels, size, size), grey (channel mean) for one channel."""
    from sklearn.datasets import load_sample_images

    images = [img / 255.0 for img in load_sample_images().images]
    patches = []
    for i in range(count):
        img = images[i % len(images)]
        side = int(rng.integers(24, 97))
        r, c = rng.integers(0, img.shape[0] - side), rng.integers(0, img.shape[1] - side)
        patch = img[r: r + side, c: c + side]
        patch = patch.mean(axis=-1, keepdims=True) if channels == 1 else patch
        tensor = torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1))).float()[None]
        patches.append(F.adaptive_avg_pool2d(tensor, size)[0])
    return torch.stack(patches) if patches else torch.zeros(0, channels, size, size)


def _raw_stats(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) with x_raw = x · std + mean, broadcastable to a batch of inputs."""
    info = data.info
    if "channel_mean" in info:
        shape = (1, -1) + (1,) * (len(data.input_shape) - 1)
        return (torch.tensor(info["channel_mean"], dtype=torch.float64).view(shape),
                torch.tensor(info["channel_std"], dtype=torch.float64).view(shape))
    if "feature_mean" in info:
        return (torch.tensor(info["feature_mean"], dtype=torch.float64).view(1, *data.input_shape),
                torch.tensor(info["feature_std"], dtype=torch.float64).view(1, *data.input_shape))
    raise DeepensError(f"data: {data.name} was loaded without its raw statistics; load it with deepens.data")


def ood_inputs(name: str, data: Dataset, *, count: int | None = None, seed: int = 0,
               data_dir: str | None = None) -> torch.Tensor:
    """``count`` (default: the test split's size) out-of-distribution inputs ``name`` for models trained on
    ``data``, shaped and standardised like ``data``'s inputs (float32, on the CPU)."""
    count = len(data.test) if count is None else check_int("count", count, minimum=1)
    rng = np.random.default_rng(seed)
    if name in IMAGE_DATASETS and name != data.name:
        if len(data.input_shape) != 3:
            raise DeepensError(f"ood: {name} needs a model that reads images; {data.name} was loaded as vectors")
        return load_ood(name, data, data_dir=data_dir, seed=seed).x[:count].float()
    if name not in OOD_SETS:
        choices = ", ".join(OOD_SETS + tuple(d for d in IMAGE_DATASETS if d != data.name))
        raise DeepensError(f"ood: expected one of {choices}; got {name!r}")
    mean, std = _raw_stats(data)
    train_raw = data.train.x.double().cpu() * std + mean
    if name == "shuffled":
        x = data.test.x.double().cpu()[torch.as_tensor(rng.integers(0, len(data.test), count))]
        flat = x.reshape(count, x.shape[1], -1) if x.dim() > 2 else x.reshape(count, 1, -1)
        order = torch.as_tensor(np.argsort(rng.uniform(size=(count, flat.shape[-1])), axis=1))
        flat = torch.gather(flat, -1, order.unsqueeze(1).expand_as(flat))
        return flat.reshape(x.shape).float()
    per_channel = (0,) + tuple(range(2, train_raw.dim())) if "channel_mean" in data.info else (0,)
    lo, hi = train_raw.amin(dim=per_channel, keepdim=True), train_raw.amax(dim=per_channel, keepdim=True)
    if name == "noise":
        u = torch.from_numpy(rng.uniform(size=(count, *data.input_shape)))
        raw = lo + (hi - lo) * u
    else:  # photos
        shape = data.input_shape if len(data.input_shape) == 3 else _IMAGE_SHAPES.get(data.name)
        if shape is None:
            raise DeepensError(f"ood: photos need an image dataset ({', '.join(IMAGE_DATASETS)}), not {data.name}")
        photo = photo_patches(rng, count, shape[-1], shape[0]).double()
        if len(data.input_shape) != 3:  # a model reading the images flattened: one raw range for all pixels
            raw = (lo.min() + (hi.max() - lo.min()) * photo).reshape(count, -1)
        else:
            raw = lo + (hi - lo) * photo
    return ((raw - mean) / std).float()
