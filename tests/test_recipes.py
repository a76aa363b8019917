"""The papers' recipes: the options, optimiser and learning-rate schedule each paper states; a recipe trains from
the CLI on CIFAR-100 files in the official format; weight decay reaches a deep ensemble's networks."""

import json

import pytest
import torch

import deepens as d
from deepens.training import TrainConfig
from deepens.training.recipes import RECIPES, recipe_options
from deepens.training.schedules import lr_factor


def _factor(config, t):
    return lr_factor(config.schedule, t, config.epochs, lr=config.lr, step_size=config.step_size,
                     step_factor=config.step_factor, decay_start=config.decay_start, final_lr=config.final_lr,
                     milestones=config.milestones or ())


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_a_valid_configuration_with_its_source(name):
    config = TrainConfig(**{**recipe_options(name), "data_dir": "somewhere"}).validate()
    assert config.batch_size == 128 and config.optimizer == "sgd" and config.momentum == 0.9
    assert RECIPES[name]["source"] and RECIPES[name]["open"]


def test_the_schedules_the_papers_state():
    resnext = TrainConfig(**recipe_options("ce-resnext"))
    assert [_factor(resnext, t) for t in (0, 149.9, 150, 224.9, 225, 299.9)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])  # ÷10 at epochs 150 and 225 of 300
    ee = TrainConfig(**recipe_options("ee-convnet"))
    assert _factor(ee, 499) == 1.0 and _factor(ee, 1000) == pytest.approx(1e-4 / 0.01)  # 0.01 → 1e-4 from 500
    assert _factor(ee, 750) == pytest.approx(0.5 * (1 + 1e-2))
    vgg = TrainConfig(**recipe_options("pl-vgg"))
    assert _factor(vgg, 100) == pytest.approx(0.5) and _factor(vgg, 200) == pytest.approx(0.0)
    with pytest.raises(d.DeepensError, match="milestones"):
        TrainConfig(schedule="multistep").validate()
    with pytest.raises(d.DeepensError, match="increasing"):
        TrainConfig(schedule="multistep", milestones=[5, 3]).validate()


def test_weight_decay_reaches_a_deep_ensembles_networks():
    from deepens.training.trainer import _optimizer

    net = d.MLP(4, [8], 3)
    deep = _optimizer(TrainConfig(weight_decay=5e-4), d.DeepEnsemble(net, 2))
    assert [g["weight_decay"] for g in deep.param_groups] == [5e-4]
    batch = _optimizer(TrainConfig(weight_decay=5e-4, weight_decay_individual=1e-5), d.BatchEnsemble(net, 2))
    assert {g["name"]: g["weight_decay"] for g in batch.param_groups} == {"shared": 5e-4, "individual": 1e-5}


def test_a_recipe_trains_from_the_cli_on_cifar100_files(tmp_path, cli, cifar100_files):
    cifar100_files(tmp_path, n_train=40, n_test=8)
    out = tmp_path / "run"
    code, stdout, err = cli(["train", "--recipe", "pl-vgg", "--data-dir", tmp_path, "--width", "2", "--epochs", "1",
                             "--members", "2", "--val", "8", "--out", out, "--json"])
    assert code == 0, err
    stored = json.loads((out / "config.json").read_text())["train"]
    assert stored["model"] == "vgg16" and stored["augment"] == "crop-flip" and stored["schedule"] == "cosine"
    assert stored["weight_decay"] == 5e-4 and stored["width"] == 2 and stored["epochs"] == 1  # flags override
    assert torch.isfinite(torch.tensor(json.loads(stdout)["test"]["nll"]))
