"""Uncertainty metrics of many ensembles at once (issue: uncertainty evaluation, §4): deepens.metrics in one
vectorised call against a loop of per-ensemble torchmetrics calls, in the same run — on the metrics both compute
(accuracy, ECE, MCE, AUROC and average precision of the max-probability OOD score) from the same ensemble
probabilities (the members' softmax and mean, computed once for both, timed apart and reported with and without),
and the time of every metric of ``ensemble_metrics`` (ensemble and mean member, all scores), which torchmetrics has
no counterpart for."""

from __future__ import annotations

import time

import torch


def _case(ensembles: int, members: int, points: int, classes: int, ood_points: int, seed: int) -> dict:
    from torchmetrics.functional.classification import (
        binary_auroc,
        binary_average_precision,
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
    start = time.perf_counter()
    conf_in, conf_out = p.max(-1).values, q.max(-1).values
    ours = {"accuracy": (p.argmax(-1) == y).double().mean(-1), **calibration_metrics(p, y, metrics=("ece", "mce")),
            **ood_detection(conf_in, conf_out)}
    t_shared = time.perf_counter() - start
    start = time.perf_counter()
    peers = []
    for e in range(ensembles):
        pe, qe = p[e], q[e]
        s = torch.cat([pe.max(-1).values, qe.max(-1).values])
        peers.append({"accuracy": multiclass_accuracy(pe, y, num_classes=classes, average="micro"),
                      "ece": multiclass_calibration_error(pe, y, num_classes=classes, n_bins=15, norm="l1"),
                      "mce": multiclass_calibration_error(pe, y, num_classes=classes, n_bins=15, norm="max"),
                      "auroc": binary_auroc(s, target), "aupr_in": binary_average_precision(s, target)})
    t_loop = time.perf_counter() - start
    diff = max(abs(float(ours[k][e]) - float(r[k])) for e, r in enumerate(peers) for k in r)
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
