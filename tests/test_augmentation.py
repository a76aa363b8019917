"""The standard CIFAR augmentation (random crop from a 4-pixel zero padding + horizontal flip): per member, a
window of the padded image (brute force), reproducible from the generator, composable with rotations, and a
training with it resumes bitwise."""

import numpy as np
import pytest
import torch

import deepens as d
from deepens.training.augmentation import CropFlip, split_augment


def test_each_crop_is_a_window_of_the_padded_image_possibly_mirrored():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, 6, 7)
    y = torch.arange(5)
    fill = torch.tensor([-1.5, 2.0])
    crops, labels = CropFlip((2, 6, 7), members=3, fill=fill, pad=2)(x, y, gen)
    assert crops.shape == (3, 5, 2, 6, 7) and torch.equal(labels, y.expand(3, 5))
    padded = fill.view(1, 2, 1, 1).expand(5, 2, 10, 11).clone()
    padded[:, :, 2:8, 2:9] = x
    windows = {}
    for b in range(5):
        windows[b] = [padded[b, :, i:i + 6, j:j + 7] for i in range(5) for j in range(5)]
        windows[b] += [w.flip(-1) for w in windows[b]]
    for m in range(3):
        for b in range(5):
            assert any(torch.equal(crops[m, b], w) for w in windows[b]), (m, b)
    assert not torch.equal(crops[0], crops[1])  # members draw their own crops
    again, _ = CropFlip((2, 6, 7), members=3, fill=fill, pad=2)(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(again, crops)
    # per-member batches keep their layout; flattened images are cropped as images
    flat, lab = CropFlip((2, 6, 7), 3, fill, pad=2)(x.reshape(5, -1).expand(3, 5, 84), y.expand(3, 5), gen)
    assert flat.shape == (3, 5, 84) and lab.shape == (3, 5)


def test_flip_and_offsets_are_uniform():
    gen = torch.Generator().manual_seed(1)
    x = torch.arange(8.0).view(1, 1, 1, 8).expand(4000, 1, 1, 8).contiguous()
    crops, _ = CropFlip((1, 1, 8), members=1, fill=[-1.0], pad=4)(x, torch.zeros(4000, dtype=torch.long), gen)
    first = crops[0, :, 0, 0, 0].numpy()
    reversed_ = crops[0, :, 0, 0, 1].numpy() < crops[0, :, 0, 0, 0].numpy()
    frac = float(np.mean(reversed_[first >= 0]))  # a flipped crop reads right to left
    se = (0.25 / max(1, int((first >= 0).sum()))) ** 0.5
    assert abs(frac - 0.5) < 4 * se


def test_specs_compose_and_bad_ones_are_refused():
    assert split_augment("crop-flip") == (None, True)
    assert split_augment("crop-flip, c4") == ("c4", True) and split_augment("so2") == ("so2", False)
    for bad in ("crop", "c4,so2", "crop-flip,crop-flip", ""):
        with pytest.raises(d.DeepensError, match="augment"):
            split_augment(bad)


@pytest.mark.parametrize("spec", ["crop-flip", "crop-flip,c4", "crop-flip,so2"])
def test_training_with_crop_flip_resumes_bitwise(interrupted_and_resumed, spec):
    cfg = dict(dataset="digits", model="convnet", pool="avg", width=0.0625, ensemble="deep", members=2, epochs=2,
               batch_size=512, lr=0.02, seed=5, checkpoint_seconds=0, augment=spec)
    ref, resumed = interrupted_and_resumed(cfg, after=3)
    a, b = ref.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
