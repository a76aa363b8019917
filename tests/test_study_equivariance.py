"""The equivariance study parts on small settings (facts the claims rely on), and training with --augment."""

import json

import pytest
import torch

from deepens.runs import RunDir
from deepens.study import StudyConfig, run_study
from deepens.study.equivariance import digit_images
from deepens.training import TrainConfig, train


@pytest.fixture(scope="module")
def ising_result(tmp_path_factory):
    config = StudyConfig.preset_config("tiny", seeds=1, ising_size=4, ising_samples=24, ising_widths=[16, 1024],
                                       ising_members=16, ising_steps=40, ising_lr=2.0, ising_test=24)
    out = tmp_path_factory.mktemp("ising")
    return run_study(config, out, only="ising", progress=False)["parts"]["ising"]


@pytest.mark.slow
def test_ising_ensembles_beat_members_and_approach_the_ntk(ising_result):
    r = ising_result["results"]
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
    assert ising_result["measured"]["ensemble_beats_member"]["mean"] == 1.0


def test_cli_help(cli):
    for sub in ("ising", "crossproduct", "digits", "so2"):
        code, out, _ = cli(["equivariance", sub, "--help"])
        assert code == 0 and "--json" in out and "--preset" in out


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


def test_random_rotation_augmentation_resumes_bitwise(tmp_path, interrupted_and_resumed):
    cfg = {**TINY, "augment": "so2", "model": "convnet", "width": 0.0625, "epochs": 3}
    reference, resumed = interrupted_and_resumed(cfg, after=30)
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

    *_, background, photos, noise = digit_images(0, 2, 64)
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
