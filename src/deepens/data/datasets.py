"""Offline datasets with deterministic train / val / test splits from a seed, standardised.

* ``digits`` — scikit-learn's ``load_digits``: 1797 real 8×8 handwritten digits, 10 classes.
* ``mnist1d`` — generated locally with the mnist1d package's ``make_dataset`` (never its
  ``get_dataset``, which downloads): 40-dimensional sequences, 10 classes.
* ``cifar10`` / ``cifar100`` — from a local directory in the official python-pickle format, read
  through a restricted unpickler that admits plain data only.
* ``mnist`` / ``fashion-mnist`` — from a local directory in the official idx format (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-...``; gzip-compressed ``.gz`` or raw), 28×28 grey images, 10 classes.
* ``gaussians`` — a synthetic Gaussian-mixture classification problem.

Every split is a pair of tensors held on the target device, so batching is indexing, never I/O.
Inputs are standardised with statistics of the training split only (per channel for images, per
feature for vectors).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DeepensError, check_int, check_real
from .unpickle import safe_load

__all__ = ["Split", "Dataset", "load_dataset", "load_ood", "read_idx", "DATASETS", "LOCAL_DATASETS",
           "IMAGE_DATASETS"]

DATASETS = ("digits", "mnist1d", "cifar10", "cifar100", "mnist", "fashion-mnist", "gaussians")
LOCAL_DATASETS = ("cifar10", "cifar100", "mnist", "fashion-mnist")  # read from --data-dir, never downloaded
IMAGE_DATASETS = ("digits", "cifar10", "cifar100", "mnist", "fashion-mnist")


@dataclass
class Split:
    """Inputs ``x`` (N, ...) float32 and integer labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: str | torch.device) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Dataset:
    """Train / val / test splits of one dataset, with what a model needs to know about it."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise DeepensError(f"split: expected train, val or test, got {name!r}")
        return getattr(self, name)

    def to(self, device: str | torch.device) -> Dataset:
        return Dataset(
            self.name, self.train.to(device), self.val.to(device), self.test.to(device),
            self.num_classes, self.input_shape, dict(self.info),
        )

    def summary(self) -> dict:
        return {
            "name": self.name,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            **self.info,
        }


def _val_count(val: float | int, n_train: int) -> int:
    if isinstance(val, bool):
        raise DeepensError(f"val: expected a fraction in [0, 1) or a count, got {val!r}")
    if isinstance(val, int):
        count = check_int("val", val, minimum=0)
    else:
        frac = check_real("val", val, low=0.0, high=1.0, high_open=True)
        count = int(round(frac * n_train))
    if count >= n_train:
        raise DeepensError(f"val: the validation split ({count}) must be smaller than the training data ({n_train})")
    return count


def _split_off(x: np.ndarray, y: np.ndarray, count: int, rng: np.random.Generator):
    """Hold out ``count`` random samples (stratified by class where possible)."""
    if count == 0:
        return (x, y), (x[:0], y[:0])
    order = rng.permutation(len(y))
    # stratified: take from each class proportionally by interleaving class-wise permutations
    classes = np.unique(y)
    per_class = [order[y[order] == c] for c in classes]
    ranks = np.empty(len(y), dtype=np.float64)
    for idx in per_class:
        ranks[idx] = (np.arange(len(idx)) + rng.random(len(idx))) / max(len(idx), 1)
    held = np.sort(np.argsort(ranks, kind="stable")[:count])
    keep = np.setdiff1d(np.arange(len(y)), held)
    return (x[keep], y[keep]), (x[held], y[held])


def _standardise(train: np.ndarray, others: list[np.ndarray], image: bool,
                 info: dict | None = None) -> list[np.ndarray]:
    if image:  # one mean/std per channel over samples and positions
        axes = (0,) + tuple(range(2, train.ndim))
        mean = train.mean(axis=axes, keepdims=True)
        std = train.std(axis=axes, keepdims=True)
    else:
        mean = train.mean(axis=0, keepdims=True)
        std = train.std(axis=0, keepdims=True)
    std = np.where(std > 1e-8, std, 1.0)  # constant features (e.g. digit borders) are only centred
    if image and info is not None:  # raw channel statistics; a raw 0 (black) pixel's value is the crop padding
        info["zero_value"] = (-mean / std).ravel().tolist()
        info["channel_mean"] = mean.ravel().tolist()
        info["channel_std"] = std.ravel().tolist()
    elif info is not None:  # raw feature statistics: x_raw = x · std + mean (deepens.data.ood builds inputs with them)
        info["feature_mean"] = mean.ravel().tolist()
        info["feature_std"] = std.ravel().tolist()
    return [((a - mean) / std).astype(np.float32) for a in [train, *others]]


def _finish(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    num_classes: int,
    val: float | int,
    seed: int,
    image: bool,
    info: dict,
) -> Dataset:
    rng = np.random.default_rng(seed)
    count = _val_count(val, len(y_train))
    (x_tr, y_tr), (x_va, y_va) = _split_off(x_train, y_train, count, rng)
    info = dict(info)
    x_tr, x_va, x_te = _standardise(
        x_tr.astype(np.float64), [x_va.astype(np.float64), x_test.astype(np.float64)], image, info
    )

    def split(x, y):
        return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))

    return Dataset(
        name,
        split(x_tr, y_tr),
        split(x_va, y_va),
        split(x_te, y_test),
        num_classes,
        tuple(x_tr.shape[1:]),
        info,
    )


def _digits(seed: int, val, flatten: bool, test_fraction: float) -> Dataset:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.images.astype(np.float64)  # (1797, 8, 8), values 0..16
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(seed + 1_000_003)
    n_test = int(round(check_real("test_fraction", test_fraction, low=0.0, high=1.0, low_open=True,
                                  high_open=True) * len(y)))
    (x_train, y_train), (x_test, y_test) = _split_off(x, y, n_test, rng)
    x_train = x_train.reshape(len(x_train), -1) if flatten else x_train[:, None]
    x_test = x_test.reshape(len(x_test), -1) if flatten else x_test[:, None]
    return _finish(
        "digits", x_train, y_train, x_test, y_test, num_classes=10, val=val, seed=seed, image=not flatten,
        info={"source": "sklearn.datasets.load_digits", "test_fraction": test_fraction},
    )


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(num_samples: int) -> tuple[dict, int]:
    """mnist1d as ``make_dataset`` generates it (its own fixed seed): the same arrays for the same size, so
    they are generated once per process (10,000 samples take ~6 s) and handed out read-only."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    # make_dataset seeds numpy's and Python's global RNGs; keep the caller's streams untouched
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002 - restoring, not drawing
    try:
        data = make_dataset(args)  # generated locally; get_dataset would download
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    arrays = {key: np.asarray(data[key]) for key in ("x", "y", "x_test", "y_test")}
    for a in arrays.values():
        a.flags.writeable = False
    return arrays, args.seed


def _mnist1d(seed: int, val, num_samples: int) -> Dataset:
    num_samples = check_int("num_samples", num_samples, minimum=20)
    data, generator_seed = _mnist1d_arrays(num_samples)
    return _finish(
        "mnist1d", data["x"], data["y"], data["x_test"], data["y_test"], num_classes=10, val=val, seed=seed,
        image=False, info={"source": "mnist1d.data.make_dataset", "num_samples": num_samples,
                           "generator_seed": generator_seed},
    )


def _find_cifar(data_dir: str | None, folder: str, name: str) -> Path:
    if not data_dir:
        raise DeepensError(f"data_dir: {name} is read from a local directory; pass --data-dir DIR (no download)")
    root = Path(data_dir).expanduser()
    for candidate in (root / folder, root):
        if candidate.is_dir() and any(candidate.iterdir()):
            if (candidate / ("test_batch" if name == "cifar10" else "test")).exists():
                return candidate
    raise DeepensError(
        f"data_dir: no {name} files found in {root} (expected the official python version: {folder}/ with "
        f"{'data_batch_1..5 and test_batch' if name == 'cifar10' else 'train and test'})"
    )


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_load(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DeepensError(f"{path}: expected a dict with b'data' and {label_key!r}")
    x = np.asarray(batch[b"data"])
    y = np.asarray(batch[label_key], dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise DeepensError(f"{path}: expected data of shape (N, 3072) and N labels, got {x.shape} and {y.shape}")
    return x.reshape(-1, 3, 32, 32), y


def _cifar(name: str, data_dir: str | None, seed: int, val, flatten: bool) -> Dataset:
    if name == "cifar10":
        root = _find_cifar(data_dir, "cifar-10-batches-py", name)
        files = sorted(root.glob("data_batch_*"))
        if not files:
            raise DeepensError(f"data_dir: no data_batch_* files in {root}")
        parts = [_read_batch(f, b"labels") for f in files]
        x_train = np.concatenate([p[0] for p in parts])
        y_train = np.concatenate([p[1] for p in parts])
        x_test, y_test = _read_batch(root / "test_batch", b"labels")
        classes = 10
    else:
        root = _find_cifar(data_dir, "cifar-100-python", name)
        x_train, y_train = _read_batch(root / "train", b"fine_labels")
        x_test, y_test = _read_batch(root / "test", b"fine_labels")
        classes = 100
    if flatten:
        x_train = x_train.reshape(len(x_train), -1)
        x_test = x_test.reshape(len(x_test), -1)
    x_train = x_train.astype(np.float64) / 255.0
    x_test = x_test.astype(np.float64) / 255.0
    return _finish(
        name, x_train, y_train, x_test, y_test, num_classes=classes, val=val, seed=seed, image=not flatten,
        info={"source": str(root)},
    )


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_FOLDERS = {"mnist": ("MNIST/raw", "mnist", "MNIST"), "fashion-mnist": ("FashionMNIST/raw", "fashion-mnist",
                                                                          "fashion_mnist", "FashionMNIST")}


def read_idx(path: str | Path) -> np.ndarray:
    """An array from a file in the idx format of (Fashion-)MNIST (gzip-compressed when the name ends in .gz):
    magic 0x0000TTDD (type TT, DD dimensions), DD big-endian int32 sizes, then the values. A wrong magic number,
    a truncated or over-long file is refused with a :class:`DeepensError` naming the file."""
    import gzip

    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DeepensError(f"{path}: cannot read it as an idx file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise DeepensError(f"{path}: not an idx file (bad magic number {raw[:4].hex() if raw else 'empty'})")
    dims = raw[3]
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DeepensError(f"{path}: truncated idx header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DeepensError(f"{path}: expected {expected} bytes for an idx array of shape {shape}, found {len(raw)} "
                           "(truncated or corrupt)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(data_dir: str | None, name: str) -> dict[str, Path]:
    if not data_dir:
        raise DeepensError(f"data_dir: {name} is read from a local directory; pass --data-dir DIR (no download)")
    root = Path(data_dir).expanduser()
    for folder in (root, *(root / f for f in _IDX_FOLDERS[name])):
        found = {}
        for key in ("train-images", "train-labels", "test-images", "test-labels"):
            split, kind = key.split("-")
            base = _IDX_FILES[split][0 if kind == "images" else 1]
            path = next((folder / f for f in (base, base + ".gz", base.replace("-idx", ".idx"),
                                              base.replace("-idx", ".idx") + ".gz") if (folder / f).is_file()), None)
            if path is not None:
                found[key] = path
        if len(found) == 4:
            return found
    raise DeepensError(f"data_dir: no {name} idx files found in {root} (expected train-images-idx3-ubyte, "
                       "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw or .gz)")


def _idx_dataset(name: str, data_dir: str | None, seed: int, val, flatten: bool) -> Dataset:
    files = _find_idx(data_dir, name)
    arrays = {}
    for split in ("train", "test"):
        x, y = read_idx(files[f"{split}-images"]), read_idx(files[f"{split}-labels"])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DeepensError(f"{files[f'{split}-images']}: expected images (N, H, W) and N labels, got {x.shape} "
                               f"and {y.shape}")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise DeepensError(f"{files[f'{split}-labels']}: expected labels 0..9, found {y.min()}..{y.max()}")
        x = x[:, None].astype(np.float64) / 255.0
        arrays[split] = (x.reshape(len(x), -1) if flatten else x, y.astype(np.int64))
    return _finish(name, *arrays["train"], *arrays["test"], num_classes=10, val=val, seed=seed, image=not flatten,
                   info={"source": str(files["train-images"].parent)})


def _gaussians(seed: int, val, dim: int, classes: int, num_samples: int, separation: float) -> Dataset:
    dim = check_int("dim", dim, minimum=1)
    classes = check_int("classes", classes, minimum=2)
    num_samples = check_int("num_samples", num_samples, minimum=classes * 4)
    separation = check_real("separation", separation, low=0.0, low_open=True)
    rng = np.random.default_rng(seed + 7)
    means = rng.normal(0.0, separation / np.sqrt(2.0), size=(classes, dim))  # mean pairwise distance ≈ sep·√dim
    y = rng.integers(0, classes, size=num_samples)
    x = means[y] + rng.normal(size=(num_samples, dim))
    n_test = num_samples // 5
    return _finish(
        "gaussians", x[n_test:], y[n_test:], x[:n_test], y[:n_test], num_classes=classes, val=val, seed=seed,
        image=False, info={"dim": dim, "separation": separation, "num_samples": num_samples},
    )


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    val: float | int = 0.1,
    flatten: bool = False,
    data_dir: str | None = None,
    num_samples: int | None = None,
    dim: int = 16,
    classes: int = 4,
    separation: float = 1.0,
    test_fraction: float = 0.2,
    device: str | torch.device = "cpu",
) -> Dataset:
    """Load a dataset with deterministic train / val / test splits (see the module docstring).

    ``val`` is the validation split held out from the training data: a fraction or a count (the EE
    paper holds out 10 000 of CIFAR's 50 000). ``flatten`` returns images as vectors. ``num_samples``
    sets the size of ``mnist1d`` (default 5000) and ``gaussians`` (default 2000); ``dim``,
    ``classes`` and ``separation`` shape ``gaussians``; ``test_fraction`` is digits' test share.
    """
    seed = check_int("seed", seed)
    if name == "digits":
        data = _digits(seed, val, flatten, test_fraction)
    elif name == "mnist1d":
        data = _mnist1d(seed, val, 5000 if num_samples is None else num_samples)
    elif name in ("cifar10", "cifar100"):
        data = _cifar(name, data_dir, seed, val, flatten)
    elif name in ("mnist", "fashion-mnist"):
        data = _idx_dataset(name, data_dir, seed, val, flatten)
    elif name == "gaussians":
        data = _gaussians(seed, val, dim, classes, 2000 if num_samples is None else num_samples, separation)
    else:
        raise DeepensError(f"dataset: expected one of {', '.join(DATASETS)}; got {name!r}")
    return data.to(device)


def load_ood(name: str, target: Dataset, *, data_dir: str | None = None, seed: int = 0) -> Split:
    """The test split of image dataset ``name`` as out-of-distribution inputs for models trained on ``target``
    (e.g. CIFAR-10 for CIFAR-100 or FashionMNIST models): back to raw pixel values, converted to ``target``'s
    image shape — colour to grey by the channel mean, grey to colour by repetition, resized with area averaging
    (shrinking) or bilinear interpolation (growing) — and standardised with ``target``'s training statistics, so
    that the model sees them exactly as it sees its own test images. Labels are the OOD set's own."""
    import torch.nn.functional as F

    if len(target.input_shape) != 3 or "channel_mean" not in target.info:
        raise DeepensError(f"target: expected an image dataset loaded as images, got {target.name} with shape "
                           f"{target.input_shape}")
    if name not in IMAGE_DATASETS:
        raise DeepensError(f"name: expected an image dataset ({', '.join(IMAGE_DATASETS)}), got {name!r}")
    source = load_dataset(name, seed=seed, val=0, data_dir=data_dir)
    mean = torch.tensor(source.info["channel_mean"]).view(1, -1, 1, 1)
    std = torch.tensor(source.info["channel_std"]).view(1, -1, 1, 1)
    x = source.test.x.double() * std.double() + mean.double()  # raw values in [0, 1]
    c, h, w = target.input_shape
    if x.shape[1] != c:
        if c == 1:
            x = x.mean(1, keepdim=True)
        elif x.shape[1] == 1:
            x = x.repeat(1, c, 1, 1)
        else:
            raise DeepensError(f"name: cannot convert {x.shape[1]} channels to {c}")
    if tuple(x.shape[2:]) != (h, w):
        shrink = x.shape[2] >= h and x.shape[3] >= w
        x = F.interpolate(x, size=(h, w), mode="area") if shrink else F.interpolate(
            x, size=(h, w), mode="bilinear", align_corners=False)
    t_mean = torch.tensor(target.info["channel_mean"], dtype=torch.float64).view(1, -1, 1, 1)
    t_std = torch.tensor(target.info["channel_std"], dtype=torch.float64).view(1, -1, 1, 1)
    x = ((x - t_mean) / t_std).float().to(target.train.x.device)
    return Split(x, source.test.y.to(target.train.x.device))
