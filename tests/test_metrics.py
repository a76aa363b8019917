"""Evaluation metrics against brute-force loops and torchmetrics."""

import itertools
import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from deepens.training.metrics import (
    classification_metrics,
    disagreement,
    expected_calibration_error,
    member_correlation,
)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 300, 7, generator=g, dtype=torch.float64) * 2.0, torch.randint(0, 7, (300,), generator=g)


def test_ece_equals_torchmetrics(logits):
    z, y = logits
    probs = torch.softmax(z, -1).mean(0)
    ours = expected_calibration_error(probs, y, bins=15)
    ref = float(multiclass_calibration_error(probs, y, num_classes=7, n_bins=15, norm="l1"))
    assert ours == pytest.approx(ref, abs=1e-7)  # torchmetrics bins in float32; the float64 loop below is exact


def test_ece_brute_force_loop(logits):
    z, y = logits
    probs = torch.softmax(z[0], -1)
    conf, pred = probs.max(1)
    total = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        inside = [(c, p == t) for c, p, t in zip(conf.tolist(), pred.tolist(), y.tolist(), strict=True)
                  if lo < c <= hi]
        if inside:
            acc = sum(ok for _, ok in inside) / len(inside)
            mean_conf = sum(c for c, _ in inside) / len(inside)
            total += len(inside) / len(y) * abs(acc - mean_conf)
    assert expected_calibration_error(probs, y) == pytest.approx(total, abs=1e-12)


def test_ensemble_scores_brute_force(logits):
    z, y = logits
    res = classification_metrics(z, y)
    probs = torch.softmax(z, -1)
    mean = probs.mean(0)
    n = len(y)
    nll = -sum(math.log(float(mean[i, y[i]])) for i in range(n)) / n
    brier = sum(float(((mean[i] - torch.nn.functional.one_hot(y[i], 7)) ** 2).sum()) for i in range(n)) / n
    acc = sum(int(mean[i].argmax() == y[i]) for i in range(n)) / n
    assert res["nll"] == pytest.approx(nll, rel=1e-12)
    assert res["brier"] == pytest.approx(brier, rel=1e-12)
    assert res["accuracy"] == pytest.approx(acc, abs=1e-15)
    member_acc = [float((probs[a].argmax(1) == y).double().mean()) for a in range(5)]
    assert res["members"]["accuracy"] == pytest.approx(member_acc)
    assert res["member_accuracy"] == pytest.approx(np.mean(member_acc))
    assert res["gain"] == pytest.approx(acc - np.mean(member_acc))


def test_nll_is_stable_for_confident_wrong_predictions():
    z = torch.tensor([[[1000.0, -1000.0]], [[1000.0, -1000.0]]], dtype=torch.float64)
    res = classification_metrics(z, torch.tensor([1]))
    assert res["nll"] == pytest.approx(2000.0, rel=1e-12)  # exact, not inf


def test_curve_is_the_metrics_of_the_first_k_members(logits):
    z, y = logits
    res = classification_metrics(z, y)
    assert [p["k"] for p in res["curve"]] == [1, 2, 3, 4, 5]
    for point in res["curve"]:
        sub = classification_metrics(z[: point["k"]], y, curve=False)
        for key in ("accuracy", "nll", "brier", "ece"):
            assert point[key] == pytest.approx(sub[key], abs=1e-12)


def test_correlation_and_disagreement_brute_force(logits):
    z, y = logits
    preds = z.argmax(-1)
    correct = preds == y
    pairs = list(itertools.permutations(range(5), 2))
    corr = np.mean([np.corrcoef(correct[a].double().numpy(), correct[b].double().numpy())[0, 1] for a, b in pairs])
    dis = np.mean([float((preds[a] != preds[b]).double().mean()) for a, b in pairs])
    assert member_correlation(correct) == pytest.approx(corr, abs=1e-12)
    assert disagreement(preds, 7) == pytest.approx(dis, abs=1e-12)
    res = classification_metrics(z, y)
    assert res["correlation"] == pytest.approx(corr, abs=1e-12)
    assert res["disagreement"] == pytest.approx(dis, abs=1e-12)


def test_correlation_edge_cases():
    assert math.isnan(member_correlation(torch.ones(1, 10, dtype=torch.bool)))
    same = torch.tensor([[True, False, True, False]] * 3)
    assert member_correlation(same) == pytest.approx(1.0)
    # a constant member has no correlation with anyone and is left out
    mixed = torch.tensor([[True, True, True, True], [True, False, True, False], [False, True, False, True]])
    assert member_correlation(mixed) == pytest.approx(-1.0)
    assert math.isnan(member_correlation(torch.ones(3, 4, dtype=torch.bool)))
