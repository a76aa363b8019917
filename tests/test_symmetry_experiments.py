"""The equivariance experiments on tiny settings, the CLI, and training with --augment."""

import json

import pytest
import torch

from deepens.runs import RunDir
from deepens.symmetry import experiments as E
from deepens.training import TrainConfig, train


@pytest.fixture(scope="module")
def ising_result():
    return E.ising(size=4, samples=24, widths=(16, 1024), members=16, steps=40, lr=2.0, test=24, seed=0)


def test_ising_ensembles_beat_members_and_approach_the_ntk(ising_result):
    r = ising_result
    assert r["config"]["augmented"] == 96
    for name in ("in", "ood"):
        assert r["ntk"][name]["equivariance"]["ensemble"]["mean"] < 1e-10
        assert r["ntk"][name]["orbit_std"]["ensemble"]["mean"] < 1e-10
        for row in r["widths"]:
            eq = row["sets"][name]["equivariance"]
            assert eq["ensemble"]["mean"] < eq["member"]["mean"]
            sizes = [p["mean"] for p in eq["by_size"]]
            assert sizes[-1] < sizes[0]  # falls with ensemble size
        narrow, wide = (row["sets"][name]["distance"] for row in r["widths"])
        assert wide["width_effect"] < narrow["width_effect"]


def test_crossproduct_error_falls_with_the_group_and_the_ensemble():
    r = E.crossproduct(groups=("c1", "o"), samples=12, width=64, members=8, steps=60, test=16, rotations=6)
    c1, o = r["groups"]
    assert (c1["augmented"], o["augmented"]) == (12, 288)
    assert c1["sets"]["in"]["ntk_group"] is None and o["sets"]["in"]["ntk_group"]["mean"] < 1e-10
    assert o["sets"]["in"]["equivariance"]["ensemble"]["mean"] < c1["sets"]["in"]["equivariance"]["ensemble"]["mean"]
    for name in ("in", "ood"):
        eq = o["sets"][name]["equivariance"]
        assert eq["ensemble"]["mean"] < eq["member"]["mean"]


def test_digits_osp_bounds_and_history():
    r = E.digits(groups=(4,), members=4, steps=12, batch_size=64, evals=2, noise=12, test=40)
    (row,) = r["groups"]
    assert r["config"]["image_size"] == 23 and row["augmented"] == 4 * r["config"]["train"]
    assert [p["step"] for p in row["history"]] == [6, 12]
    for p in row["history"]:
        assert set(p["sets"]) == {"test", "photos", "noise"}
        for m in p["sets"].values():
            assert 1.0 <= m["member"]["mean"] <= 4.0 and 1.0 <= m["ensemble"]["mean"] <= 4.0
            assert m["orbit_size"] == 4 and [b["size"] for b in m["by_size"]] == [1, 2, 4]
    assert r["reference"]["talk_fashionmnist_ood_osp"]["4"][0] == 3.85


def test_cli_equivariance_json_and_files(cli, tmp_path):
    code, out, err = cli(["equivariance", "ising", "--size", "3", "--samples", "8", "--widths", "8,16",
                          "--members", "2", "--steps", "3", "--test", "4", "--out", tmp_path / "ising", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["experiment"] == "ising" and len(result["widths"]) == 2
    assert (tmp_path / "ising" / "results.json").exists() and (tmp_path / "ising" / "ising.png").stat().st_size > 0
    code, out, err = cli(["equivariance", "crossproduct", "--groups", "c1,c2", "--samples", "4", "--width", "8",
                          "--members", "2", "--steps", "2", "--test", "4", "--rotations", "2",
                          "--out", tmp_path / "cross"])
    assert code == 0, err
    assert "c2 (2)" in out and "NTK (own group)" in out


@pytest.mark.parametrize("args,match", [
    (["ising", "--widths", "a,b"], "widths: expected comma-separated integers"),
    (["ising", "--members", "0"], "members: expected an integer >= 1"),
    (["crossproduct", "--groups", "c3"], "groups: expected names from"),
    (["digits", "--groups", "0"], "groups: expected an integer >= 1"),
    (["ising", "--lr", "-1"], "lr: expected a number"),
])
def test_cli_bad_input_is_one_line_exit_2(cli, tmp_path, args, match):
    code, out, err = cli(["equivariance", *args, "--out", tmp_path / "x"])
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_help(cli):
    for sub in ("ising", "crossproduct", "digits"):
        code, out, _ = cli(["equivariance", sub, "--help"])
        assert code == 0 and "--json" in out


TINY = dict(dataset="digits", widths=[16], members=2, epochs=2, batch_size=64, lr=0.05, seed=0,
            checkpoint_seconds=0)


def test_train_with_full_orbit_augmentation(tmp_path):
    base = train(TrainConfig(**TINY), tmp_path / "plain", progress=False)
    aug = train(TrainConfig(**TINY, augment="c4"), tmp_path / "c4", progress=False)
    n = len(base.data.train)
    assert len(aug.data.train) == 4 * n and aug.data.input_shape == (64,)
    images = aug.data.train.x.reshape(4, n, 8, 8)
    assert torch.equal(images[1], torch.rot90(images[0], 1, dims=(-2, -1)))
    from deepens.data import load_dataset

    # the test split is not augmented; images are standardised per channel (a per-pixel standardisation, the
    # default for flattened MLP inputs, would not commute with rotations)
    images_test = load_dataset("digits", seed=0, val=0.1, flatten=False).test.x
    assert torch.equal(aug.data.test.x, images_test.reshape(len(images_test), -1))
    assert len(aug.data.test) == len(base.data.test)
    assert aug.metrics["steps"] == 2 * -(-4 * n // 64)  # two epochs over the 4N augmented samples
    config = json.loads((tmp_path / "c4" / "config.json").read_text())
    assert config["train"]["augment"] == "c4" and config["data"]["augmented_train"] == 4 * n


def test_random_rotation_augmentation_resumes_bitwise(tmp_path, monkeypatch):
    from deepens.training import trainer as trainer_module

    cfg = {**TINY, "augment": "so2", "model": "convnet", "width": 0.0625, "epochs": 3}
    reference = train(TrainConfig(**cfg), tmp_path / "ref", progress=False)
    real = trainer_module.training_step
    count = {"n": 0}

    def flaky(*args, **kwargs):
        count["n"] += 1
        if count["n"] > 30:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "training_step", flaky)
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**cfg), tmp_path / "cut", progress=False)
    resumed = train(TrainConfig(**cfg), tmp_path / "cut", resume=True, progress=False)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert RunDir(tmp_path / "cut").read_history()[-1]["epoch"] == 3
    plain = train(TrainConfig(**{**cfg, "augment": None}), tmp_path / "plain", progress=False)
    key = "net.conv1.weight"
    assert not torch.equal(plain.model.state_dict()[key], reference.model.state_dict()[key])


def test_augment_option_errors(cli, tmp_path):
    code, _, err = cli(["train", "--augment", "c4", "--dataset", "mnist1d", "--out", tmp_path / "a"])
    assert code == 2 and "augment: rotations act on images" in err
    code, _, err = cli(["train", "--augment", "q8", "--out", tmp_path / "b"])
    assert code == 2 and "augment: expected cK" in err


def test_digit_ood_sets_keep_their_statistics_along_interpolated_orbits():
    """Both OOD sets are made at 8 × 8 and upsampled like the digits, so a 45° bilinear rotation leaves
    their spread nearly unchanged (< 10 %), unlike pixel-level white noise at the padded size (−33 %)."""
    from deepens.symmetry import CyclicGroup, ImageRotation

    *_, background, photos, noise = E._digit_images(0, 2, 64)
    rot = ImageRotation(CyclicGroup(8), fill=background)
    inner = (..., slice(6, 17), slice(6, 17))

    def spread_ratio(x):
        return float(rot(1, x)[inner].std() / x[inner].std())

    assert photos.shape == noise.shape == (64, 1, 23, 23)
    for x in (photos, noise):
        assert abs(spread_ratio(x) - 1.0) < 0.1
    white = background + torch.randn(64, 1, 23, 23, generator=torch.Generator().manual_seed(0))
    assert spread_ratio(white) < 0.75
    # the raw noise pixels lie in the digits' range 0..16, standardised like the digits
    raw = load_digits_scale()
    lo, hi = background, background + 16.0 / raw
    assert float(noise.min()) >= lo - 1e-5 and float(noise.max()) <= hi + 1e-5


def load_digits_scale() -> float:
    from sklearn.datasets import load_digits

    return float(load_digits().images.std())
