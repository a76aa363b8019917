"""Uncertainty metrics of many ensembles at once (issue: uncertainty evaluation, §4): deepens.metrics in one
vectorised call against a loop of per-ensemble torchmetrics calls, in the same run — on every metric both compute
(accuracy, ECE, MCE, and AUROC, AUPR-in, AUPR-out and FPR at 95 % TPR of the max-probability OOD score; the
loop reads FPR95 off torchmetrics' ROC curve) from the same ensemble
probabilities (the members' softmax and mean, computed once for both, timed apart and reported with and without),
and the time of every metric of ``ensemble_metrics`` (ensemble and mean member, all scores), which torchmetrics has
no counterpart for."""

from __future__ import annotations

import statistics
import time

import torch


def _case(ensembles: int, members: int, points: int, classes: int, ood_points: int, seed: int,
          repeats: int = 3) -> dict:
    from torchmetrics.functional.classification import (
        binary_auroc,
        binary_average_precision,
        binary_roc,
        multiclass_accuracy,
        multiclass_calibration_error,
    )

    from deepens.metrics import calibration_metrics, ensemble_metrics, ood_detection

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (points,), generator=g)
    z = torch.randn(ensembles, members, points, classes, generator=g) * 2
    z[:, :, torch.arange(points), y] += 2.0
    o = torch.randn(ensembles, members, ood_points, classes, generator=g) * 2
    target = torch.cat([torch.ones(points, dtype=torch.long), torch.zeros(ood_points, dtype=torch.long)])

    start = time.perf_counter()
    p, q = torch.softmax(z, -1).mean(1), torch.softmax(o, -1).mean(1)  # the ensembles' predictive distributions
    t_probs = time.perf_counter() - start

    def ours() -> dict:
        return {**calibration_metrics(p, y, metrics=("accuracy", "ece", "mce")),
                **ood_detection(p.amax(-1), q.amax(-1))}

    def fpr95(s: torch.Tensor) -> torch.Tensor:
        fpr, tpr, _ = binary_roc(s, target)
        return fpr[torch.argmax((tpr >= 0.95).to(torch.int8))]

    def loop(count: int) -> list[dict]:
        peers = []
        for e in range(count):
            pe, qe = p[e], q[e]
            s = torch.cat([pe.max(-1).values, qe.max(-1).values])
            peers.append({"accuracy": multiclass_accuracy(pe, y, num_classes=classes, average="micro"),
                          "ece": multiclass_calibration_error(pe, y, num_classes=classes, n_bins=15, norm="l1"),
                          "mce": multiclass_calibration_error(pe, y, num_classes=classes, n_bins=15, norm="max"),
                          "auroc": binary_auroc(s, target), "aupr_in": binary_average_precision(s, target),
                          "aupr_out": binary_average_precision(-s, 1 - target), "fpr95": fpr95(s)})
        return peers

    loop(2), ours()  # warm-up
    t_shared, t_loop = [], []
    for _ in range(repeats):  # alternating, median
        start = time.perf_counter()
        mine = ours()
        t_shared.append(time.perf_counter() - start)
        start = time.perf_counter()
        peers = loop(ensembles)
        t_loop.append(time.perf_counter() - start)
    t_shared, t_loop = statistics.median(t_shared), statistics.median(t_loop)
    diff = max(abs(float(mine[k][e]) - float(r[k])) for e, r in enumerate(peers) for k in r)
    start = time.perf_counter()
    everything = ensemble_metrics(z, y, ood_logits=o)
    t_all = time.perf_counter() - start
    return {"ensembles": ensembles, "members": members, "points": points, "classes": classes,
            "ood_points": ood_points, "seconds_shared_deepens": t_shared, "seconds_shared_torchmetrics_loop": t_loop,
            "speedup_shared": t_loop / t_shared, "seconds_probabilities": t_probs,
            "speedup_shared_with_probabilities": (t_loop + t_probs) / (t_shared + t_probs), "max_abs_diff": diff,
            "seconds_all_deepens": t_all,
            "metrics_all": len(everything) - 1 + len(everything["member"])}


def metrics_speed(seed: int = 0) -> dict:
    cases = [_case(1000, 4, 500, 10, 100, seed), _case(1000, 4, 10_000, 10, 2_000, seed)]
    return {"name": "uncertainty metrics of 1000 ensembles of 4 members, 10 classes: one vectorised call against a "
                    "loop of per-ensemble torchmetrics calls", "cases": cases, "threads": torch.get_num_threads(),
            "targets": {"speedup_shared": 10.0}}
