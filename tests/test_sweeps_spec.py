"""Sweep specs: expansion against an explicit product, member chunks, task identity, validation errors."""

import itertools
import json

import pytest
import torch

from deepens.errors import DeepensError
from deepens.sweeps import SweepSpec, canonical_config, chunk_seed, load_spec, task_id
from deepens.training import TrainConfig
from deepens.training.trainer import load_data

BASE = {"dataset": "digits", "ensemble": "deep", "members": 2, "epochs": 1, "widths": [8]}


def test_grid_and_list_expand_to_their_product_in_order():
    grid = {"width": [0.5, 1, 2], "lr": [0.1, 0.01]}
    entries = [{"momentum": 0.0}, {"momentum": 0.5, "seed": 3}]
    spec = SweepSpec.from_dict({"name": "g", "base": BASE, "grid": grid, "list": entries})
    expected = []
    for entry in entries:
        for width, lr in itertools.product(grid["width"], grid["lr"]):
            expected.append(canonical_config(TrainConfig(**{**BASE, **entry, "width": width, "lr": lr})))
    assert [t.config for t in spec.tasks] == expected
    assert [t.point for t in spec.tasks] == list(range(12))
    assert spec.tasks[11].label == "width=2 lr=0.01 momentum=0.5 seed=3"
    assert len({t.id for t in spec.tasks}) == 12


def test_members_per_task_splits_independent_members_only():
    spec = SweepSpec.from_dict({"name": "c", "base": {**BASE, "members": 10, "seed": 5},
                                "grid": {"ensemble": ["deep", "batch"]}, "members_per_task": 4})
    deep = [t for t in spec.tasks if t.config["ensemble"] == "deep"]
    batch = [t for t in spec.tasks if t.config["ensemble"] == "batch"]
    assert [t.config["members"] for t in deep] == [4, 4, 2]
    assert [t.config["seed"] for t in deep] == [5, chunk_seed(5, 1), chunk_seed(5, 2)]
    assert len({t.config["seed"] for t in deep}) == 3
    assert {TrainConfig.from_dict(t.config).split_seed() for t in deep} == {5}  # one data split for the pool
    assert [t.chunk for t in deep] == [0, 1, 2] and deep[2].label.endswith("[chunk 3/3]")
    assert [(t.config["members"], t.config["seed"]) for t in batch] == [(10, 5)]  # members share weights


def test_chunk_seeds_are_deterministic_and_distinct():
    seeds = [chunk_seed(s, k) for s in range(4) for k in range(16)]
    assert chunk_seed(7, 0) == 7 and chunk_seed(7, 3) == chunk_seed(7, 3)
    assert len(set(seeds[i] for i in range(len(seeds)) if i % 16)) == 4 * 15
    assert all(0 <= s < 2**31 for s in seeds)


def test_data_seed_fixes_the_split_and_only_the_split():
    a = load_data(TrainConfig(dataset="digits", seed=0), torch.device("cpu"))
    b = load_data(TrainConfig(dataset="digits", seed=9, data_seed=0), torch.device("cpu"))
    c = load_data(TrainConfig(dataset="digits", seed=9), torch.device("cpu"))
    assert torch.equal(a.test.y, b.test.y) and torch.equal(a.train.x, b.train.x)
    assert not torch.equal(a.test.y, c.test.y)


def test_task_id_ignores_what_does_not_change_the_training():
    ref = task_id(TrainConfig(**BASE))
    assert task_id(TrainConfig(**BASE, width=1)) == task_id(TrainConfig(**BASE, width=1.0)) == ref
    assert task_id(TrainConfig(**BASE, device="cuda", eval_batch_size=7, checkpoint_seconds=0)) == ref
    assert task_id(TrainConfig(**BASE, seed=0, data_seed=0)) == ref
    assert task_id({"train": {**BASE}}) == ref
    assert task_id(TrainConfig(**BASE, lr=0.051)) != ref
    assert task_id(TrainConfig(**BASE, data_seed=1)) != ref


def test_yaml_and_toml_give_the_same_sweep(tmp_path):
    (tmp_path / "s.yaml").write_text("base:\n  dataset: digits\n  epochs: 1\n  widths: [8]\n"
                                     "grid:\n  width: [0.5, 1]\nmembers_per_task: 1\n")
    (tmp_path / "s.toml").write_text('members_per_task = 1\n[base]\ndataset = "digits"\nepochs = 1\nwidths = [8]\n'
                                     "[grid]\nwidth = [0.5, 1]\n")
    a, b = load_spec(tmp_path / "s.yaml"), load_spec(tmp_path / "s.toml")
    assert a.name == b.name == "s"
    assert [t.id for t in a.tasks] == [t.id for t in b.tasks] and len(a.tasks) == 16  # 2 widths x 8 members
    assert a.hash == b.hash


@pytest.mark.parametrize(("spec", "message"), [
    ({"base": BASE, "grd": {}}, "spec: unknown key 'grd' (did you mean 'grid'?)"),
    ({"base": {**BASE, "widht": [8]}}, "base.widht: unknown training option (did you mean 'width'?)"),
    ({"base": BASE, "grid": {"lr": 0.1}}, "grid.lr: expected a non-empty list of values"),
    ({"base": BASE, "grid": {"lr": []}}, "grid.lr: expected a non-empty list"),
    ({"base": BASE, "grid": {"lr": [0.1]}, "list": [{"lr": 0.2}]}, "list[0]: option 'lr' is also in the grid"),
    ({"base": BASE, "grid": {"lr": [0.1, -1.0]}}, "task (lr=-1.0): lr: expected a number in (0, inf)"),
    ({"base": BASE, "list": [{"members": 2}, {"members": 0}]}, "list[1] (members=0): members: expected an integer"),
    ({"base": BASE, "grid": {"width": [1, 1.0]}}, "are the same training (duplicate configuration)"),
    ({"base": BASE, "resources": {"cpus": 0}}, "resources.cpus: expected an integer >= 1"),
    ({"base": BASE, "resources": {"gpu": 1}}, "resources.gpu: unknown resource"),
    ({"base": BASE, "resources": {"gpus": -1}}, "resources.gpus: expected a number >= 0"),
    ({"base": {**BASE, "device": "cuda"}}, "resources.gpus: task trains on cuda; request gpus: 1"),
    ({"base": BASE, "members_per_task": 0}, "members_per_task: expected an integer >= 1"),
    ({"base": BASE, "keep_checkpoints": "yes"}, "keep_checkpoints: expected true or false"),
    ({"base": BASE, "name": "a/b"}, "name: expected a one-line sweep name without slashes"),
    ({"base": BASE, "list": []}, "list: expected a non-empty list"),
    ([1, 2], "spec: expected a mapping"),
])
def test_bad_specs_name_what_is_wrong(spec, message):
    with pytest.raises(DeepensError) as info:
        SweepSpec.from_dict(spec, name="s")
    assert message in str(info.value)


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(DeepensError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "s.json").write_text("{}")
    with pytest.raises(DeepensError, match="expected a .yaml, .yml or .toml file"):
        load_spec(tmp_path / "s.json")
    (tmp_path / "bad.yaml").write_text("base: [unclosed\n")
    with pytest.raises(DeepensError, match="is not valid YAML"):
        load_spec(tmp_path / "bad.yaml")
    (tmp_path / "bad.toml").write_text("base = \n")
    with pytest.raises(DeepensError, match="is not valid TOML"):
        load_spec(tmp_path / "bad.toml")
    for text in ("", "name: nothing\n", "max_retries: 3\n"):  # no base, grid or list: refused, not a default run
        (tmp_path / "empty.yaml").write_text(text)
        with pytest.raises(DeepensError, match="spec: declares no trainings; give base"):
            load_spec(tmp_path / "empty.yaml")
    (tmp_path / "defaults.yaml").write_text("base: {}\n")
    assert len(load_spec(tmp_path / "defaults.yaml").tasks) == 1  # every default, asked for explicitly


@pytest.mark.parametrize("path", ["width-pools.yaml", "regime.toml", "gpu-pools.yaml", "pl-cifar100-vgg.yaml",
                                  "ce-cifar100-resnext.yaml"])
def test_the_example_specs_are_valid(path):
    from pathlib import Path

    spec = load_spec(Path(__file__).resolve().parent.parent / "examples" / "sweeps" / path)
    expected = {"width-pools.yaml": 16, "regime.toml": 32, "gpu-pools.yaml": 12, "pl-cifar100-vgg.yaml": 48,
                "ce-cifar100-resnext.yaml": 40}[path]
    assert len(spec.tasks) == expected
    if path == "pl-cifar100-vgg.yaml":  # l = max(64, 8 s_std / s) networks per width, in whole tasks of 16
        from deepens.models import VGG16

        sizes = {w: sum(p.numel() for p in VGG16(100, w).parameters()) for w in (8, 16, 32, 64)}
        for w, s in sizes.items():
            pool = sum(t.config["members"] for t in spec.tasks if t.config["width"] == w)
            assert pool == 16 * -(-max(64, -(-8 * sizes[64] // s)) // 16)
            assert all(t.config["members"] == 16 for t in spec.tasks)
        assert spec.resources == {"cpus": 4, "gpus": 0.5}
    elif path == "ce-cifar100-resnext.yaml":  # CE Table 1: 4 designs × 10 runs, the ce-resnext recipe
        from deepens.training.recipes import recipe_options

        recipe = recipe_options("ce-resnext")
        designs = {(t.config["cardinality"], t.config["width"]) for t in spec.tasks}
        assert designs == {(3, 64), (1, 128), (37, 10), (10, 10)}
        for key in ("lr", "milestones", "epochs", "weight_decay", "momentum", "batch_size", "augment"):
            assert {json.dumps(t.config[key]) for t in spec.tasks} == {json.dumps(recipe[key])}, key
    elif path != "regime.toml":  # pools: every chunk on one split, so they pool by width
        assert {TrainConfig.from_dict(t.config).split_seed() for t in spec.tasks} == {0}
        assert sum(t.config["members"] for t in spec.tasks) == 64 * len({t.point for t in spec.tasks})


def test_gamma_and_modulation_can_be_swept():
    spec = SweepSpec.from_dict({"name": "g", "base": {**BASE, "ensemble": "batch"},
                                "grid": {"gamma": [1, "M", 2.5], "modulation": ["shifted-normal:0.5", "normal:0,1"]}})
    assert [t.config["gamma"] for t in spec.tasks[::2]] == ["1", "M", 2.5]  # as TrainConfig.to_dict writes them
    assert len({t.id for t in spec.tasks}) == 6


def test_the_entry_points_are_reexported_lazily():
    import deepens
    import deepens.study
    import deepens.sweeps
    import deepens.training

    assert deepens.run_sweep is deepens.sweeps.run_sweep and deepens.load_spec is load_spec
    assert deepens.Store is deepens.sweeps.Store and deepens.train is deepens.training.train
    assert deepens.run_study is deepens.study.run_study
    assert all(hasattr(deepens, name) for name in deepens.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        deepens.nope  # noqa: B018
