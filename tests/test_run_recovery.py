"""A run that diverged, was stopped or holds a corrupt checkpoint always has a way forward, and the error says it:
continue from the last good checkpoint with a smaller learning rate, evaluate that checkpoint, or train again
from scratch with --overwrite."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import interrupt_training_after

from deepens.errors import DeepensError
from deepens.runs import RunDir
from deepens.training import TrainConfig, Trainer, train
from deepens.training.metrics import classification_metrics
from deepens.training.schedules import lr_factor
from deepens.training.trainer import build_ensemble, load_data, predict_logits

OPTIONS = dict(dataset="digits", ensemble="batch", members=2, widths=[16], epochs=4, batch_size=256, lr=0.05,
               schedule="cosine", checkpoint_seconds=0, seed=1)


def _interrupted(monkeypatch, out, epochs_done: int):
    samples = len(load_data(TrainConfig(**OPTIONS), torch.device("cpu")).train)
    per_epoch = -(-samples // OPTIONS["batch_size"])
    with monkeypatch.context() as patch:
        interrupt_training_after(patch, epochs_done * per_epoch)
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**OPTIONS), out, progress=False)
    return per_epoch


def test_resuming_with_a_smaller_learning_rate_continues_from_the_checkpoint(monkeypatch, tmp_path):
    out = tmp_path / "run"
    _interrupted(monkeypatch, out, epochs_done=2)
    resumed = train(TrainConfig(**{**OPTIONS, "lr": 0.01}), out, resume=True, progress=False)
    record = json.loads((out / "config.json").read_text())
    assert record["changes"] == [{"epoch": 2, "lr": {"from": 0.05, "to": 0.01}}]
    assert record["train"]["lr"] == 0.01
    lrs = [row["lr"] for row in resumed.history]  # the last step's lr of every epoch
    for epoch, lr in enumerate(lrs, start=1):
        base = 0.05 if epoch <= 2 else 0.01
        per_epoch = resumed.metrics["steps"] // 4
        expected = base * lr_factor("cosine", (epoch - 1) + (per_epoch - 1) / per_epoch, 4, lr=base)
        assert lr == pytest.approx(expected, rel=1e-12), epoch
    with pytest.raises(DeepensError, match=r"resume: the options differ .* widths .* --overwrite"):
        Trainer(TrainConfig(**{**OPTIONS, "widths": [8]}), out).fit(resume=True)


def test_an_unfinished_run_is_evaluated_from_its_last_checkpoint(monkeypatch, tmp_path, cli):
    out = tmp_path / "run"
    _interrupted(monkeypatch, out, epochs_done=3)
    code, stdout, err = cli(["evaluate", out, "--json"])
    assert code == 0, err
    report = json.loads(stdout)
    assert report["checkpoint_epoch"] == 3
    config = TrainConfig(**OPTIONS)
    data = load_data(config, torch.device("cpu"))
    model = build_ensemble(config, data)
    state, _, _ = RunDir(out).load_checkpoint()
    model.load_state_dict(state)
    direct = classification_metrics(predict_logits(model, data.test), data.test.y)
    assert report["test"]["accuracy"] == direct["accuracy"] and report["test"]["nll"] == pytest.approx(direct["nll"])
    code, stdout, _ = cli(["evaluate", out])
    assert code == 0 and "last checkpoint (epoch 3)" in stdout


def test_a_run_that_diverged_before_its_first_checkpoint_is_trained_again_with_overwrite(tmp_path, cli):
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--members", "2", "--epochs", "3", "--checkpoint-seconds", "0",
            "--out", out]
    code, _, err = cli([*args, "--lr", "1e6"])
    assert code == 2 and "no checkpoint had been written yet" in err and "--overwrite" in err
    code, _, err = cli(["evaluate", out])
    assert code == 2 and "no weights yet" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli([*args, "--lr", "0.05"])
    assert code == 2 and "already holds a run" in err and "--overwrite" in err
    code, _, err = cli([*args, "--lr", "0.05", "--overwrite", "--resume"])
    assert code == 2 and "choose one" in err
    (out / "notes.txt").write_text("mine")
    code, stdout, err = cli([*args, "--lr", "0.05", "--overwrite", "--json"])
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["train"]["lr"] == 0.05
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    fresh = train(TrainConfig(dataset="digits", members=2, epochs=3, checkpoint_seconds=0, lr=0.05), progress=False)
    assert json.loads(stdout)["test"]["nll"] == pytest.approx(fresh.metrics["test"]["nll"], rel=1e-12)


def test_a_corrupt_checkpoint_says_how_to_go_on(monkeypatch, tmp_path, cli):
    out = tmp_path / "run"
    _interrupted(monkeypatch, out, epochs_done=1)
    pointer = json.loads((out / "checkpoint.json").read_text())
    (out / pointer["dir"] / "model.safetensors").write_bytes(b"garbage")
    args = ["train", "--dataset", "digits", "--ensemble", "batch", "--members", "2", "--widths", "16", "--epochs",
            "4", "--batch-size", "256", "--lr", "0.05", "--checkpoint-seconds", "0", "--seed", "1", "--out", out]
    code, _, err = cli([*args, "--resume"])
    assert code == 2 and "is corrupt" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(["evaluate", out])
    assert code == 2 and "is corrupt" in err and "--overwrite" in err
    code, _, err = cli([*args, "--overwrite"])
    assert code == 0, err
    assert RunDir(out).is_finished()
