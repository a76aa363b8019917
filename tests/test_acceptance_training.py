"""Acceptance of the training issue on real data (digits), with the recipes the README documents.

Timings are measured in benchmarks/ (make bench), not here.
"""

import pytest

from deepens.training import TrainConfig, evaluate_run, train

RECIPE = dict(dataset="digits", widths=[128, 128], members=8, epochs=60, batch_size=64, schedule="cosine",
              weight_decay=1e-3, seed=0)


@pytest.mark.slow
def test_deep_ensemble_of_8_mlps_reaches_97_percent_on_digits():
    result = train(TrainConfig(**RECIPE, ensemble="deep", lr=0.1), progress=False)
    test = result.metrics["test"]
    assert result.model.sample_shape == (64,)  # 64 → 128 → 128 → 10
    assert test["accuracy"] >= 0.97
    assert test["accuracy"] >= test["member_accuracy"]


@pytest.mark.slow
def test_batch_ensemble_independent_regime_is_less_correlated_and_gains_more(tmp_path):
    reports = {}
    for p in (0.0, 0.9):
        out = tmp_path / f"p{p}"
        train(TrainConfig(**RECIPE, ensemble="batch", lr=0.05, modulation=f"shifted-normal:{p}"), out, progress=False)
        reports[p] = evaluate_run(out)["test"]  # what `deepens evaluate` reports
    independent, collective = reports[0.0], reports[0.9]
    assert independent["correlation"] < collective["correlation"] - 0.05
    assert independent["gain"] > collective["gain"]
