"""Datasets: deterministic, disjoint, stratified, standardised splits; CIFAR files through a safe unpickler."""

import os
import pickle

import numpy as np
import pytest
import torch

import deepens as d
from deepens.data import Batches, Split, load_dataset, safe_load, safe_loads


def rows(split):
    return {tuple(np.round(r, 5)) for r in split.x.reshape(len(split), -1).numpy()}


def test_digits_splits_are_disjoint_complete_and_deterministic():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert (len(a.val), len(a.test)) == (144, 359)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    for split in ("train", "val", "test"):
        assert torch.equal(a.split(split).x, b.split(split).x)
    assert not torch.equal(a.test.y, c.test.y)
    tr, va, te = rows(a.train), rows(a.val), rows(a.test)
    assert len(tr) == len(a.train) and not (tr & va) and not (tr & te) and not (va & te)
    # all 1797 labels are there (the raw images are all distinct)
    from sklearn.datasets import load_digits

    counts = np.bincount(torch.cat([a.train.y, a.val.y, a.test.y]).numpy())
    assert np.array_equal(counts, np.bincount(load_digits().target))


def test_digits_stratified_and_standardised():
    data = load_dataset("digits", seed=3)
    for split in (data.val, data.test):
        counts = np.bincount(split.y.numpy(), minlength=10)
        assert counts.max() - counts.min() <= 2  # stratified: classes within one or two of each other
    x = data.train.x
    assert abs(float(x.mean())) < 1e-6 and abs(float(x.std()) - 1) < 1e-3  # one channel: global z-score
    flat = load_dataset("digits", seed=3, flatten=True)
    assert flat.input_shape == (64,)
    m, s = flat.train.x.mean(0), flat.train.x.std(0, unbiased=False)
    assert float(m.abs().max()) < 1e-5
    nonconstant = s > 0
    assert torch.allclose(s[nonconstant], torch.ones(int(nonconstant.sum())), atol=1e-4)


def test_val_as_count_and_fraction():
    assert len(load_dataset("digits", val=100).val) == 100
    assert len(load_dataset("digits", val=0).val) == 0
    with pytest.raises(d.DeepensError, match="val"):
        load_dataset("digits", val=5000)


def test_mnist1d_generated_locally_without_download(monkeypatch):
    import mnist1d.data
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d must not download")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_network)
    monkeypatch.setattr(requests, "get", no_network)
    np.random.seed(123)  # noqa: NPY002 - the legacy global RNG is what must stay untouched
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    data = load_dataset("mnist1d", num_samples=1000, seed=0)
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002 - caller RNG untouched
    assert data.input_shape == (40,) and data.num_classes == 10
    assert len(data.train) + len(data.val) == 800 and len(data.test) == 200
    again = load_dataset("mnist1d", num_samples=1000, seed=0)
    assert torch.equal(data.train.x, again.train.x)


def _write_cifar10(root, n=6, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        lab = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": lab, b"data": data,
                         b"filenames": [b"x.png"] * n}, fh, protocol=2)
        labels[name] = (data, lab)
    return labels


def test_cifar10_from_official_format(tmp_path):
    written = _write_cifar10(tmp_path)
    data = load_dataset("cifar10", data_dir=str(tmp_path), val=3, seed=0)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert len(data.train) == 27 and len(data.val) == 3 and len(data.test) == 6
    raw_test, lab = written["test_batch"]
    assert torch.equal(data.test.y, torch.tensor(lab))
    raw_test = raw_test.reshape(-1, 3, 32, 32).astype(np.float64) / 255
    # the test images are the raw test batch under one affine map per channel: x = (raw − μ_c) / σ_c
    x = data.test.x.double().numpy()
    mu, sigma = [], []
    for c in range(3):
        slope, intercept = np.polyfit(raw_test[:, c].ravel(), x[:, c].ravel(), 1)
        assert np.allclose(slope * raw_test[:, c] + intercept, x[:, c], atol=1e-5)
        sigma.append(1 / slope)
        mu.append(-intercept / slope)
    # ... whose μ_c, σ_c are the statistics of the 27 training images (not val, not test)
    train_raw = data.train.x.double().numpy() * np.array(sigma)[None, :, None, None] + np.array(mu)[None, :, None, None]
    all_train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32) / 255
    for image in train_raw:
        assert np.abs(all_train - image).reshape(30, -1).max(1).min() < 1e-4  # each is one of the written images
    assert np.allclose(train_raw.mean(axis=(0, 2, 3)), mu, atol=1e-6)
    assert np.allclose(train_raw.std(axis=(0, 2, 3)), sigma, atol=1e-6)


def test_cifar_directory_can_be_the_folder_itself(tmp_path):
    _write_cifar10(tmp_path)
    data = load_dataset("cifar10", data_dir=str(tmp_path / "cifar-10-batches-py"), val=0)
    assert len(data.train) == 30


def test_cifar100(tmp_path, cifar100_files):
    cifar100_files(tmp_path)
    data = load_dataset("cifar100", data_dir=str(tmp_path), val=4, flatten=True)
    assert data.num_classes == 100 and data.input_shape == (3072,)
    assert torch.equal(data.test.y, torch.arange(8))


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_pickle_with_an_object_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Evil(str(marker))}, protocol=2)
    with pytest.raises(d.DeepensError, match="refused to unpickle posix.mkdir|refused to unpickle os.mkdir"):
        safe_loads(payload)
    assert not marker.exists()
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10(tmp_path / "ok")
    folder.mkdir()
    (folder / "test_batch").write_bytes(payload)
    (folder / "data_batch_1").write_bytes(payload)
    with pytest.raises(d.DeepensError, match="refused"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_data_round_trips(protocol, tmp_path):
    obj = {b"a": [1, 2.5, "s", None, True], "arr": np.arange(6, dtype=np.float32).reshape(2, 3),
           "t": (1, 2), "set": {1, 2}, "scalar": np.float64(3.5), "big": 2**70}
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    back = safe_load(path)
    assert back[b"a"] == [1, 2.5, "s", None, True]
    assert np.array_equal(back["arr"], obj["arr"]) and back["arr"].dtype == np.float32
    assert back["t"] == (1, 2) and back["set"] == {1, 2} and back["scalar"] == 3.5 and back["big"] == 2**70


@pytest.mark.parametrize("obj", [pickle.loads, eval, print, torch.zeros, np.load])
def test_other_globals_are_refused(obj):
    with pytest.raises(d.DeepensError, match="refused"):
        safe_loads(pickle.dumps(obj))


def test_garbage_is_a_clear_error():
    with pytest.raises(d.DeepensError, match="not a readable pickle"):
        safe_loads(b"\x80\x04garbage")


def test_gaussians():
    data = load_dataset("gaussians", dim=5, classes=3, num_samples=300, separation=4.0)
    assert data.input_shape == (5,) and data.num_classes == 3
    assert len(data.train) + len(data.val) + len(data.test) == 300
    # well separated: nearest class mean classifies the test set well
    means = torch.stack([data.train.x[data.train.y == k].mean(0) for k in range(3)])
    pred = torch.cdist(data.test.x, means).argmin(1)
    assert (pred == data.test.y).float().mean() > 0.9


def test_unknown_dataset_and_missing_data_dir():
    with pytest.raises(d.DeepensError, match="dataset"):
        load_dataset("imagenet")
    with pytest.raises(d.DeepensError, match="data_dir"):
        load_dataset("cifar10")


def test_shared_batches_cover_each_epoch_once():
    split = Split(torch.arange(50.0)[:, None], torch.arange(50))
    batches = Batches(split, 8, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 7
    seen = torch.cat([y for _, y in batches.epoch()])
    assert sorted(seen.tolist()) == list(range(50))
    second = torch.cat([y for _, y in batches.epoch()])
    assert not torch.equal(seen, second)  # reshuffled
    again = Batches(split, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([y for _, y in again.epoch()]), seen)


def test_independent_batches_give_each_member_a_permutation():
    split = Split(torch.arange(20.0)[:, None], torch.arange(20))
    batches = Batches(split, 6, generator=torch.Generator().manual_seed(1), members=3, mode="independent")
    xs, ys = zip(*batches.epoch(), strict=True)
    assert xs[0].shape == (3, 6, 1) and ys[0].shape == (3, 6)
    full = torch.cat(ys, dim=1)
    for member in full:
        assert sorted(member.tolist()) == list(range(20))
    assert not torch.equal(full[0], full[1])


def _idx(path, array, gz):
    """Write ``array`` in the idx format of (Fashion-)MNIST (uint8), gzip-compressed when ``gz``."""
    import gzip

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def _write_mnist(folder, n_train=20, n_test=6, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"train": (rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10),
            "t10k": (rng.integers(0, 256, (n_test, 28, 28)), rng.integers(0, 10, n_test))}
    suffix = ".gz" if gz else ""
    for split, (x, y) in data.items():
        _idx(folder / f"{split}-images-idx3-ubyte{suffix}", x, gz)
        _idx(folder / f"{split}-labels-idx1-ubyte{suffix}", y, gz)
    return data


@pytest.mark.parametrize("name,layout,gz", [("mnist", "", True), ("fashion-mnist", "FashionMNIST/raw", False),
                                            ("mnist", "MNIST/raw", False)])
def test_mnist_and_fashion_mnist_from_official_idx_files(tmp_path, name, layout, gz):
    written = _write_mnist(tmp_path / layout if layout else tmp_path, gz=gz)
    data = load_dataset(name, data_dir=str(tmp_path), val=4, seed=1)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert len(data.train) == 16 and len(data.val) == 4 and len(data.test) == 6
    raw_x, raw_y = written["t10k"]
    assert torch.equal(data.test.y, torch.tensor(raw_y))
    # standardised with the 16 training images' statistics: the test images are one affine map of the raw ones
    x = data.test.x.double().numpy().reshape(6, -1)
    slope, intercept = np.polyfit(raw_x.reshape(6, -1).ravel() / 255, x.ravel(), 1)
    assert np.allclose(slope * raw_x.reshape(6, -1) / 255 + intercept, x, atol=1e-5)
    assert abs(float(data.train.x.double().mean())) < 1e-6 and abs(float(data.train.x.double().std()) - 1) < 1e-3
    flat = load_dataset(name, data_dir=str(tmp_path), val=4, seed=1, flatten=True)
    assert flat.input_shape == (784,) and torch.equal(flat.test.y, data.test.y)
    assert float(flat.train.x.double().mean(0).abs().max()) < 1e-6  # vectors: standardised per feature


def test_idx_files_are_checked(tmp_path):
    _write_mnist(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    good = path.read_bytes()
    path.write_bytes(good[:-10])  # truncated
    with pytest.raises(d.DeepensError, match="truncated or corrupt"):
        load_dataset("mnist", data_dir=str(tmp_path))
    path.write_bytes(b"\x12\x34" + good[2:])
    with pytest.raises(d.DeepensError, match="bad magic number"):
        load_dataset("mnist", data_dir=str(tmp_path))
    path.write_bytes(good)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(d.DeepensError, match="no mnist idx files"):
        load_dataset("mnist", data_dir=str(tmp_path))
    with pytest.raises(d.DeepensError, match="data_dir"):
        load_dataset("fashion-mnist")


def test_train_on_local_fashion_mnist_from_the_cli(tmp_path, cli):
    _write_mnist(tmp_path / "data", n_train=40, n_test=10)
    code, out, err = cli(["train", "--dataset", "fashion-mnist", "--data-dir", tmp_path / "data", "--model", "vgg16",
                          "--width", "2", "--members", "2", "--epochs", "1", "--out", tmp_path / "run", "--json"])
    assert code == 0, err
    result = __import__("json").loads(out)
    assert 0.0 <= result["test"]["accuracy"] <= 1.0 and result["params"]["total"] > 0
    code, _, err = cli(["train", "--dataset", "mnist", "--out", tmp_path / "r2"])
    assert code == 2 and "data_dir" in err


def test_cifar10_as_the_ood_set_of_fashion_mnist_and_cifar100_models(tmp_path, cifar100_files):
    """CIFAR-10's test images, greyscaled and shrunk to 28×28 for FashionMNIST models (area averaging), kept as
    they are for CIFAR-100 models; standardised with the target's training statistics."""
    from deepens.data import load_ood

    written = _write_cifar10(tmp_path)
    _write_mnist(tmp_path / "FashionMNIST" / "raw")
    fashion = load_dataset("fashion-mnist", data_dir=str(tmp_path), val=0)
    ood = load_ood("cifar10", fashion, data_dir=str(tmp_path))
    raw = written["test_batch"][0].reshape(-1, 3, 32, 32).astype(np.float64) / 255
    grey = torch.from_numpy(raw.mean(1, keepdims=True))
    small = torch.nn.functional.interpolate(grey, size=(28, 28), mode="area")
    mean, std = fashion.info["channel_mean"][0], fashion.info["channel_std"][0]
    assert ood.x.shape == (6, 1, 28, 28)
    assert torch.allclose(ood.x.double(), (small - mean) / std, atol=1e-4)
    cifar100_files(tmp_path)
    c100 = load_dataset("cifar100", data_dir=str(tmp_path), val=0)
    ood = load_ood("cifar10", c100, data_dir=str(tmp_path))
    m = torch.tensor(c100.info["channel_mean"]).view(1, 3, 1, 1).double()
    s = torch.tensor(c100.info["channel_std"]).view(1, 3, 1, 1).double()
    assert torch.allclose(ood.x.double(), (torch.from_numpy(raw) - m) / s, atol=1e-4)
    with pytest.raises(d.DeepensError, match="image dataset"):
        load_ood("mnist1d", c100)
