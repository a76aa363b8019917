"""The thread policy: a number as given, or auto = usable cores (affinity, OMP_NUM_THREADS) minus the machine's
load; a training runs with it, records it and restores the caller's setting."""

from __future__ import annotations

import json

import pytest
import torch

from deepens.errors import DeepensError
from deepens.training import TrainConfig, Trainer
from deepens.training.threads import resolve_threads, usable_cores


@pytest.mark.parametrize("cores,load,expected", [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 6.0, 1), (8, 2.6, 5),
                                                 (8, 0.0, 8), (1, 3.0, 1)])
def test_auto_takes_the_cores_the_other_processes_leave(cores, load, expected):
    assert resolve_threads("auto", cores=cores, load=load) == expected
    assert resolve_threads(None, cores=cores, load=load) == expected


def test_numbers_are_taken_as_given_and_bad_values_refused(monkeypatch):
    assert resolve_threads(3) == 3 and resolve_threads("4") == 4
    for bad in (0, "0", -1, "many", "2.5", 1.5):
        with pytest.raises(DeepensError, match="threads: expected a positive number of threads or auto"):
            resolve_threads(bad)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert usable_cores() == 1 and resolve_threads("auto", load=0.0) == 1


def test_a_training_runs_with_its_threads_records_them_and_restores_the_callers(tmp_path, cli):
    before = torch.get_num_threads()
    result = Trainer(TrainConfig(dataset="digits", members=2, epochs=1, widths=[8]), threads=1).fit()
    assert result.metrics["threads"] == 1 and torch.get_num_threads() == before
    code, _, err = cli(["train", "--dataset", "digits", "--members", "2", "--epochs", "1", "--widths", "8",
                        "--threads", "1", "--out", tmp_path / "r"])
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["threads"] == 1
    code, _, err = cli(["train", "--dataset", "digits", "--threads", "lots", "--out", tmp_path / "s"])
    assert code == 2 and "threads: expected a positive number" in err
