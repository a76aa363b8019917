"""The study at paper scale: the ``paper`` preset (each paper's data, networks and recipes) run at tiny sizes on
files generated in the official formats, and ``--plan`` (the study's own trainings, deduplicated, checked against
the store, timed by short calibration runs)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_data import _write_cifar10, _write_mnist

from deepens.errors import DeepensError
from deepens.study import StudyConfig, run_study
from deepens.study.plan import _PlanContext, plan_study, study_trainings
from deepens.study.powerlaws import _pool_trainings, _width_family, network_parameters, pool_sizes
from deepens.study.runner import StudyContext
from deepens.sweeps.spec import task_id
from deepens.sweeps.store import Store
from deepens.training import TrainConfig, Trainer
from deepens.training.recipes import recipe_options

pytestmark = pytest.mark.slow

# the tiny preset's sizes under the paper preset's data, networks and recipes
_PAPER_KEYS = ("preset", "recipe", "dataset", "model", "pool", "lr", "schedule", "weight_decay", "primaldual_dataset",
               "digits_dataset", "so2_dataset", "pool_dataset", "pool_model", "pool_recipe", "pool_scale",
               "pool_chunk", "device")


def _tiny_paper(data_dir, **overrides) -> StudyConfig:
    sizes = {k: v for k, v in StudyConfig.preset_config("tiny").to_dict().items() if k not in _PAPER_KEYS}
    sizes.update(data_dir=str(data_dir), device="cpu", seeds=1, val=20, epochs=1, batch_size=32, pool_widths=[1, 2],
                 pool_size=9, pool_chunk=6, pool_epochs=1, pool_batch_size=32, pool_predict_k=3, primaldual_epochs=1,
                 primaldual_members=2, digits_infinite=2, digits_test=8, digits_ood=6, so2_test=8, **overrides)
    return StudyConfig.preset_config("paper", **sizes)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """CIFAR-100, CIFAR-10, FashionMNIST and MNIST files in their official formats, in one folder."""
    import pickle

    import numpy as np

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    folder = root / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 120), ("test", 40)):
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"fine_labels": [i % 100 for i in range(n)]}, fh, protocol=4)
    _write_cifar10(root, n=8)
    _write_mnist(root / "FashionMNIST" / "raw", n_train=60, n_test=20)
    _write_mnist(root / "MNIST" / "raw", n_train=60, n_test=20, seed=1)
    return root


def test_paper_preset_is_each_papers_setup_and_needs_the_files():
    with pytest.raises(DeepensError, match="data_dir: dataset cifar100, pool_dataset cifar100, primaldual_dataset"):
        StudyConfig.preset_config("paper")
    cfg = StudyConfig.preset_config("paper", data_dir="/data")
    assert (cfg.recipe, cfg.dataset, cfg.model, cfg.epochs, cfg.lr) == ("ee-convnet", "cifar100", "convnet", 1000, 0.01)
    assert (cfg.primaldual_dataset, cfg.primaldual_epochs, cfg.primaldual_members) == ("mnist", 70, 100)
    assert (cfg.digits_dataset, cfg.digits_groups, cfg.so2_dataset) == ("fashion-mnist", [4, 8, 16], "fashion-mnist")
    # PL §3: ℓ = max(64, 8·s_std/s) VGG16 networks per width, in trainings of 16 (the example sweep's 48 tasks)
    assert pool_sizes(cfg) == {8: 512, 16: 128, 32: 64, 64: 64}
    trainings = _pool_trainings(cfg)
    assert len(trainings) == 48 and {o["members"] for _, o in trainings} == {16}
    assert len({o["seed"] for _, o in trainings}) == 48
    family = _width_family(cfg)
    assert [family.count(w) for w in (8, 16, 32, 64)] == [network_parameters(cfg, w) for w in (8, 16, 32, 64)]
    assert network_parameters(cfg, 64) == 15_295_524
    for name, value in (("digits_dataset", "cifar10"), ("pool_model", "resnext29"), ("recipe", "nope")):
        with pytest.raises(DeepensError, match=name):
            StudyConfig.preset_config("paper", data_dir="/data", **{name: value})


def test_reference_trainings_take_the_recipe_and_other_setups_do_not(data_dir):
    cfg = _tiny_paper(data_dir)
    ctx = StudyContext(cfg, lambda: None)
    reference = ctx.train_config(ensemble="batch", members=2)
    recipe = recipe_options("ee-convnet")
    for key in ("optimizer", "momentum", "decay_start", "final_lr", "parameterization", "loss"):
        assert getattr(reference, key) == recipe[key], key
    assert (reference.schedule, reference.val, reference.epochs) == ("ee", 20, 1)  # the study's fields win
    per_part = study_trainings(cfg, ["primaldual", "pool"])
    for c in per_part["primaldual"]:  # CE §4.1's own setup: Adam, no momentum, NTK MLP, no EE recipe
        assert (c.optimizer, c.parameterization, c.val, c.dataset) == ("adam", TrainConfig().parameterization,
                                                                       TrainConfig().val, "mnist")
    pl = recipe_options("pl-vgg")
    for c in per_part["pool"]:
        assert (c.model, c.augment, c.momentum, c.schedule, c.val) == ("vgg16", pl["augment"], pl["momentum"], "cosine",
                                                                       TrainConfig().val)


def test_paper_preset_runs_end_to_end_on_official_format_files(data_dir, tmp_path):
    cfg = _tiny_paper(data_dir)
    result = run_study(cfg, tmp_path / "study", only="primaldual,digits,so2,pool", progress=False)
    digits = result["parts"]["digits"]
    assert digits["scale"]["data"].startswith("fashion-mnist 41×41") and "cifar10, noise" in digits["scale"]["data"]
    sets = digits["results"]["history"][0]["sets"]
    assert set(sets) == {"test", "cifar10", "noise"}
    assert all(1.0 <= sets[n]["ensemble"]["mean"] <= 4.0 for n in sets)  # OSP of C4 lies in [1, |G|]
    assert result["parts"]["so2"]["scale"]["data"].startswith("fashion-mnist 41×41")
    pool = result["parts"]["pool"]
    assert pool["scale"]["model"] == "VGG16 (width w)"
    # ℓ per width from the VGG sizes at w = 1, 2 (pool_size 9 at least, whole trainings of 6)
    sizes = pool_sizes(cfg)
    assert sizes == {1: max(9, math.ceil(-(-8 * network_parameters(cfg, 2) // network_parameters(cfg, 1)) / 6) * 6),
                     2: 12}
    laws = {law["width"]: law for law in pool["results"]["laws"]}
    assert {w: law["params"] for w, law in laws.items()} == {w: network_parameters(cfg, w) for w in (1, 2)}
    curves = pool["results"]["curves"]
    assert {len(curves[str(network_parameters(cfg, w))]) for w in (1, 2)} == {sizes[1] // 2, sizes[2] // 2}
    stored = {t.id for t in Store(tmp_path / "study" / "store").tasks()}
    planned = study_trainings(cfg, ["primaldual", "pool"])
    assert stored == {task_id(c) for cs in planned.values() for c in cs}
    primal = result["parts"]["primaldual"]["results"]
    assert all(r["test"] == 20 for r in primal["rows"])  # MNIST's 20 test images


def test_plan_names_exactly_the_trainings_the_study_runs_and_what_the_store_holds(data_dir, tmp_path):
    cfg = _tiny_paper(data_dir)
    only = "regime,lld,orthogonality,primaldual,pool,calibration"
    plan = plan_study(cfg, only=only, steps=1, warmup=0)
    parts = {p["name"]: p for p in plan["parts"]}
    assert parts["orthogonality"]["trains"] is False and parts["orthogonality"]["seconds"] is None
    assert parts["calibration"]["trainings"] == parts["pool"]["trainings"] == parts["calibration"]["shared"]
    assert parts["calibration"]["seconds"] == 0
    assert plan["done"] == 0 and plan["seconds"] == pytest.approx(sum(p["seconds"] or 0 for p in parts.values()))
    assert plan["trainings"] == sum(p["trainings"] - p["shared"] for p in parts.values())
    assert all(c["seconds_per_step"] > 0 for c in plan["calibrations"])
    # a calibration per network shape: trainings differing in seed / lr / modulation share one
    shapes = {(c["model"], c["ensemble"], c["members"], c["dataset"]) for c in plan["calibrations"]}
    assert len(plan["calibrations"]) >= len(shapes)
    run_study(cfg, tmp_path / "s", only="lld,pool", progress=False)
    store_ids = {t.id for t in Store(tmp_path / "s" / "store").tasks()}
    planned = study_trainings(cfg, ["lld", "pool"])
    assert {task_id(c) for cs in planned.values() for c in cs} == store_ids
    after = plan_study(cfg, only="lld,pool,calibration", out=tmp_path / "s", steps=1, warmup=0)
    assert after["done"] == after["trainings"] == len(store_ids) and after["seconds"] == 0
    assert after["calibrations"] == []


def test_plan_context_stops_a_part_at_its_trainings():
    ctx = _PlanContext(StudyConfig.preset_config("tiny"))
    with pytest.raises(Exception) as caught:
        ctx.prefetch([{"members": 2}])
    assert type(caught.value).__name__ == "_Collected" and ctx.option_sets == [{"members": 2}]
    assert not isinstance(caught.value, DeepensError)  # a part's DeepensError handling never swallows it


def test_estimate_counts_the_steps_and_evaluations_of_the_training():
    config = TrainConfig(dataset="digits", ensemble="batch", members=3, epochs=4, eval_every=2, batch_size=100)
    e = Trainer(config, progress=False).estimate(steps=2, warmup=1)
    data = Trainer(config, progress=False)
    from deepens.training.trainer import load_data

    split = load_data(config, torch.device("cpu"))
    assert e["steps_per_epoch"] == math.ceil(len(split.train) / 100) and e["steps"] == 4 * e["steps_per_epoch"]
    assert e["val_samples"] == len(split.val)
    assert e["final_samples"] == len(split.train) + len(split.val) + len(split.test)
    assert e["evaluated_samples"] == 2 * len(split.val) + e["final_samples"]
    assert e["seconds"] == pytest.approx(e["seconds_per_step"] * e["steps"]
                                         + e["eval_seconds_per_sample"] * e["evaluated_samples"])
    assert e["timed_steps"] == 2 and data.run is None
    with pytest.raises(DeepensError, match="steps: expected an integer >= 1"):
        Trainer(config, progress=False).estimate(steps=0)


def test_cli_plan_and_estimate(cli, data_dir, tmp_path):
    code, out, err = cli(["study", "--preset", "tiny", "--only", "lld,ising", "--plan", "--json", "--plan-steps", "1",
                          "--out", tmp_path / "p"])
    assert code == 0, err
    plan = json.loads(out)
    assert [p["name"] for p in plan["parts"]] == ["lld", "ising"] and plan["untimed"] == ["ising"]
    assert plan["trainings"] == plan["parts"][0]["trainings"] > 0 and not (tmp_path / "p").exists()  # nothing written
    code, out, err = cli(["study", "--preset", "tiny", "--only", "lld", "--plan", "--plan-steps", "1"])
    assert code == 0 and "ee.lld:" in out and "CPU-hours" in out and "calibration runs" in out
    code, out, err = cli(["study", "--preset", "paper", "--plan"])
    assert code == 2 and "data_dir:" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(["train", "--dataset", "digits", "--members", "2", "--epochs", "2", "--dry-run", "--estimate",
                          "1", "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert report["estimate"]["steps"] == 2 * report["estimate"]["steps_per_epoch"]
    code, out, err = cli(["train", "--dataset", "digits", "--estimate", "--out", tmp_path / "r"])
    assert code == 2 and "estimate: only with --dry-run" in err


def test_the_progress_shows_each_parts_elapsed_time_and_estimate():
    """The postfix of the study's bar after k of n units of a part: k/n, the elapsed time and the time left at the
    part's own rate ((n − k) × elapsed / k)."""
    import time

    from deepens.study.runner import PartProgress

    class Bar:
        def __init__(self):
            self.n, self.postfix = 0, ""

        def update(self, k):
            self.n += k

        def set_postfix_str(self, text, refresh=True):
            self.postfix = text

    bar = Bar()
    progress = PartProgress(bar, "regime", 4)
    progress.started = time.perf_counter() - 30.0  # 30 s into the part
    progress()
    assert bar.n == 1 and bar.postfix.startswith("regime 1/4 units, 0:30 elapsed, ~1:30 left")
    progress()
    assert bar.postfix.startswith("regime 2/4 units, 0:30 elapsed, ~0:30 left")
    progress.started -= 3600
    progress()
    assert "1:00:30 elapsed" in bar.postfix and "~20:10 left" in bar.postfix
