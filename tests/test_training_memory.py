"""The memory a training needs, estimated before the ensemble exists: against the same quantities measured on the
full ensemble, and the refusal of a training that cannot fit (exit 2, one line, nothing written)."""

from __future__ import annotations

import pytest
import torch

from deepens.errors import DeepensError
from deepens.training import TrainConfig, Trainer
from deepens.training.memory import _footprint, check_training_memory, training_memory
from deepens.training.trainer import load_data


@pytest.mark.parametrize("options", [
    dict(ensemble="deep", members=6),
    dict(ensemble="batch", members=6),
    dict(ensemble="lld", members=6),
    dict(ensemble="mc-dropout", members=5, batches="independent"),
    dict(ensemble="deep", members=5, model="convnet", width=0.125),
    dict(ensemble="batch", members=3, model="vgg16", width=2),
])
def test_the_estimate_extrapolates_what_the_full_ensemble_holds(options):
    """Parameters and buffers exactly, saved-for-backward bytes within 2 %, from ensembles of 2 and 3 members on
    batches of 4 and 8 samples, against the M-member ensemble measured on a full batch."""
    config = TrainConfig(dataset="digits", batch_size=40, **options).validate()
    data = load_data(config, torch.device("cpu"))
    estimate = training_memory(config, data)
    direct = _footprint(config, data, config.members, config.batch_size)
    assert estimate["parameters"] == direct["parameters"] and estimate["buffers"] == direct["buffers"]
    assert estimate["activations"] == pytest.approx(direct["activations"], rel=0.02)
    state = 1 if config.momentum else 0
    assert estimate["optimizer"] == state * estimate["parameters"] and estimate["gradients"] == estimate["parameters"]
    assert estimate["total"] == pytest.approx(sum(estimate[k] for k in ("parameters", "gradients", "optimizer",
                                                                         "buffers", "activations", "data")))


def test_a_training_that_cannot_fit_is_refused_before_anything_is_allocated(tmp_path, cli):
    config = TrainConfig(dataset="digits", members=10**8).validate()
    data = load_data(config, torch.device("cpu"))
    with pytest.raises(DeepensError, match=r"members: this training needs about [\d,.]+ GiB .* available"):
        check_training_memory(config, data, "cpu")
    with pytest.raises(DeepensError, match="--max-memory 1.0 MiB"):
        Trainer(TrainConfig(dataset="digits", members=4), tmp_path / "run", max_memory="1MiB").fit()
    assert not (tmp_path / "run").exists()  # the run directory it would have created is gone again
    code, out, err = cli(["train", "--dataset", "digits", "--members", "100000000", "--out", tmp_path / "huge"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "members: this training needs about" in err and "member" in err.split("at most")[1]
    assert not (tmp_path / "huge").exists()
    code, out, err = cli(["train", "--dataset", "digits", "--members", "2", "--epochs", "1", "--max-memory", "lots",
                          "--out", tmp_path / "x"])
    assert code == 2 and "memory: expected bytes or a size" in err
    code, out, err = cli(["train", "--dataset", "digits", "--members", "2", "--dry-run", "--json"])
    assert code == 0
    import json

    memory = json.loads(out)["memory"]
    assert memory["total"] > memory["parameters"] > 0
