"""The uncertainty evaluation of a trained run (``deepens evaluate RUN --ood ... --calibrate val --report DIR``):
every metric of :mod:`deepens.metrics` for the ensemble and its mean member on the test split, out-of-distribution
detection against each requested OOD set (:func:`deepens.data.ood_inputs`), an optional temperature fitted on a
held-out split and saved with the run, and a small HTML report with its figures."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data import Split, ood_inputs
from ..errors import DeepensError, check_choice
from ..io import atomic_write_text
from ..metrics import SCORES, TemperatureScaler, ensemble_metrics, ood_scores
from ..runs.rundir import RunDir
from .trainer import load_run, predict_logits

__all__ = ["evaluate_uncertainty", "TEMPERATURE_FILE"]

TEMPERATURE_FILE = "temperature.json"


def _floats(d: dict) -> dict:
    return {k: (_floats(v) if isinstance(v, dict) else float(v)) for k, v in d.items()}


def evaluate_uncertainty(path: str | Path, *, ood: Sequence[str] = (), calibrate: str | None = None,
                         temperature: str = "before", data_dir: str | None = None, device: str = "cpu",
                         seed: int = 0, report: str | Path | None = None, bins: int = 15, loaded=None) -> dict:
    """Returns ``{"test": {ensemble metrics..., "member": {...}}, "ood": {name: {...}}, "calibration": {...}}``.

    ``ood``: OOD sets (``noise``, ``shuffled``, ``photos`` or an image dataset name); for each, every score's
    AUROC / AUPR-in / AUPR-out / FPR95 for the ensemble and its mean member, and the mean epistemic uncertainty
    in and out. ``calibrate``: a split (``val``) to fit a :class:`~deepens.metrics.TemperatureScaler` on (mode
    ``temperature``); it is saved as ``temperature.json`` in the run and the test metrics are reported before
    and after it. ``report``: a folder for report.html and its PNGs. ``loaded``: what :func:`load_run` returned
    for ``path``, when the caller has it."""
    config, data, model = loaded if loaded is not None else load_run(path, device)
    test_logits = predict_logits(model, data.test).double().cpu()
    labels = data.test.y.cpu()
    result: dict = {"run": str(path), "test": _floats(ensemble_metrics(test_logits, labels, bins=bins)), "ood": {}}
    if model.checkpoint_epoch is not None:
        result["checkpoint_epoch"] = model.checkpoint_epoch
    ood_logits = {}
    for name in ood:
        x = ood_inputs(name, data, seed=seed, data_dir=data_dir or config.data_dir).to(model_device(model))
        logits = predict_logits(model, Split(x, torch.zeros(len(x), dtype=torch.long))).double().cpu()
        ood_logits[name] = logits
        full = ensemble_metrics(test_logits, labels, ood_logits=logits, bins=bins)
        result["ood"][name] = {
            "samples": len(x), "epistemic_in": float(full["epistemic_uncertainty"]),
            "epistemic_out": float(full["ood_epistemic_uncertainty"]),
            **{k[len("ood_"):]: float(v) for k, v in full.items()
               if k.startswith("ood_") and k != "ood_epistemic_uncertainty"},
            "member": {k[len("ood_"):]: float(v) for k, v in full["member"].items() if k.startswith("ood_")},
        }
    if calibrate is not None:
        check_choice("calibrate", calibrate, ("train", "val"))
        split = data.split(calibrate)
        if not len(split):
            raise DeepensError(f"calibrate: the run's {calibrate} split is empty (train with --val > 0)")
        held_out = predict_logits(model, split).double().cpu()
        scaler = TemperatureScaler(temperature).fit(held_out, split.y.cpu())
        saved = scaler.save(RunDir(path).path / TEMPERATURE_FILE)
        probs = scaler.predict_proba(test_logits)
        from ..metrics import calibration_metrics

        after = calibration_metrics(probs, labels, bins=bins)
        result["calibration"] = {
            "split": calibrate, "mode": temperature, "temperature": scaler.temperature, "at_bound": scaler.at_bound,
            "saved": str(saved), "nll_before": result["test"]["nll"], "nll_after": scaler.nll(test_logits, labels),
            "ece_before": result["test"]["ece"], "ece_after": float(after["ece"]),
            "brier_after": float(after["brier"]),
        }
    if report is not None:
        result["report"] = str(_write_report(Path(report), result, test_logits, labels, ood_logits, bins))
    return result


def model_device(model) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _write_report(folder: Path, result: dict, test_logits: torch.Tensor, labels: torch.Tensor,
                  ood_logits: dict[str, torch.Tensor], bins: int) -> Path:
    from ..metrics import uncertainty_decomposition
    from ..metrics.plots import reliability_diagram, risk_coverage_plot, score_histograms

    folder.mkdir(parents=True, exist_ok=True)
    probs = torch.softmax(test_logits, -1)
    ensemble = probs.mean(0)
    figures = [reliability_diagram({"ensemble": (ensemble, labels), "member 0": (probs[0], labels)},
                                   folder / "reliability.png", bins=bins)]
    parts = uncertainty_decomposition(probs)
    correct_ens = (ensemble.argmax(-1) == labels).double()
    correct_member = (probs[0].argmax(-1) == labels).double()
    figures.append(risk_coverage_plot({"ensemble": (parts["confidence"], correct_ens),
                                       "member 0": (probs[0].max(-1).values, correct_member)},
                                      folder / "risk_coverage.png"))
    if ood_logits:
        score = "max_probability"
        figures.append(score_histograms(ood_scores(test_logits)[score],
                                        {n: ood_scores(z)[score] for n, z in ood_logits.items()},
                                        folder / "ood_scores.png", name=score.replace("_", " ")))
    member = result["test"]["member"]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td><td>{member.get(k, float('nan')):.4f}</td></tr>"
                   for k, v in result["test"].items() if not isinstance(v, dict))
    ood_rows = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{r[f'{s}_auroc']:.3f}</td>" for s in SCORES)
        + f"<td>{r['max_probability_fpr95']:.3f}</td></tr>" for name, r in result["ood"].items())
    ood_table = ("<h2>Out-of-distribution detection (AUROC per score; FPR at 95 % TPR of max probability)</h2><table>"
                 "<tr><th>OOD set</th>" + "".join(f"<th>{s}</th>" for s in SCORES) + "<th>FPR95</th></tr>"
                 + ood_rows + "</table>") if result["ood"] else ""
    calibration = ""
    if "calibration" in result:
        c = result["calibration"]
        calibration = (f"<h2>Temperature ({c['mode']} averaging, fitted on {c['split']})</h2><p>τ = {c['temperature']}"
                       f"{' (on a bound)' if c['at_bound'] else ''}; test NLL {c['nll_before']:.4f} → "
                       f"{c['nll_after']:.4f}, ECE {c['ece_before']:.4f} → {c['ece_after']:.4f}.</p>")
    page = ("<!doctype html><meta charset='utf-8'><title>deepens evaluate</title><style>body{font-family:sans-serif;"
            "max-width:60em;margin:2em auto}td,th{padding:2px 8px;text-align:right}</style>"
            f"<h1>{html.escape(result['run'])}</h1><h2>Test split: ensemble and mean member</h2><table>"
            "<tr><th>metric</th><th>ensemble</th><th>mean member</th></tr>" + rows + "</table>" + ood_table
            + calibration + "".join(f"<p><img src='{f.name}' alt='{f.stem}'></p>" for f in figures))
    return atomic_write_text(folder / "report.html", page)
