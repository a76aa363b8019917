"""On Power Laws in Deep Ensembles (Lobacheva et al., NeurIPS 2020 — "PL") as parts of the study.

A pool of ``pool_size`` networks per width (MLPs 40 → w → w → 10 on mnist1d by default: 2,000 test points, so
the fitted laws resolve differences between widths), trained as one vectorized deep ensemble each. ``pool``
builds ensembles of every size from disjoint networks, fits CNLL_n = c + b·n^a (Eq. 6), predicts n > 4 from
n ≤ 4 (§7) and measures the memory split (§6); ``calibration`` tests Proposition 1's 1/n coefficient, LE-NLL
against CNLL (Eq. 4–5) and the sign of b with the temperature before averaging (§4) on the same pools.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import DeepensError
from .claims import Claim, Test, measure
from .common import Part, axes, finish, spearman
from .config import StudyConfig

__all__ = ["PARTS"]


_SHAPES = {"mnist1d": ((40,), 10), "digits": ((64,), 10), "cifar10": ((3, 32, 32), 10),
           "cifar100": ((3, 32, 32), 100)}


def network_parameters(cfg: StudyConfig, width: int) -> int:
    """Parameters of one pool network of width ``width`` (``pool_model`` on ``pool_dataset``)."""
    from types import SimpleNamespace

    from ..training import TrainConfig
    from ..training.build import build_reference

    shape, classes = _SHAPES[cfg.pool_dataset]
    if cfg.pool_model == "mlp":
        shape = (math.prod(shape),)
        config = TrainConfig(dataset=cfg.pool_dataset, model="mlp", widths=[width, width], data_dir=cfg.data_dir)
    else:
        config = TrainConfig(dataset=cfg.pool_dataset, model=cfg.pool_model, width=width, data_dir=cfg.data_dir)
    net = build_reference(config, SimpleNamespace(input_shape=shape, num_classes=classes))
    return sum(p.numel() for p in net.parameters())


def pool_sizes(cfg: StudyConfig) -> dict[int, int]:
    """Networks per width: ``pool_size``, or with ``pool_scale`` > 0 the paper's ℓ = max(N, ⌈scale·s_std/s⌉)
    (PL §3; s_std: the largest width's size), rounded up to whole trainings of ``pool_chunk`` networks."""
    if cfg.pool_scale <= 0:
        return {w: cfg.pool_size for w in cfg.pool_widths}
    sizes = {w: network_parameters(cfg, w) for w in cfg.pool_widths}
    s_std = sizes[max(cfg.pool_widths)]
    out = {}
    for w, s in sizes.items():
        n = max(cfg.pool_size, math.ceil(cfg.pool_scale * s_std / s))
        out[w] = -(-n // cfg.pool_chunk) * cfg.pool_chunk if cfg.pool_chunk else n
    return out


def _pool_trainings(cfg: StudyConfig) -> list[tuple[int, dict]]:
    """(width, training options) of every pool training: one per width, or ``pool_chunk`` networks each."""
    extra = {"num_samples": cfg.pool_num_samples} if cfg.pool_dataset == "mnist1d" else {"num_samples": None}
    out = []
    for i, (w, total) in enumerate(pool_sizes(cfg).items()):
        chunk = cfg.pool_chunk or total
        for j in range(0, total, chunk):
            net = {"widths": [w, w]} if cfg.pool_model == "mlp" else {"width": w}
            out.append((w, dict(dataset=cfg.pool_dataset, model=cfg.pool_model, **net, ensemble="deep",
                                members=min(chunk, total - j), epochs=cfg.pool_epochs,
                                batch_size=cfg.pool_batch_size, lr=cfg.pool_lr, schedule="cosine",
                                weight_decay=cfg.pool_weight_decay, recipe=cfg.pool_recipe,
                                seed=cfg.seed + 101 * (i + 1) + 7919 * (j // chunk), **extra)))
    return out


def _width_family(cfg: StudyConfig):
    """s(w) of one pool network: the MLP's closed form, or for VGG16 / WideResNet the quadratic through three
    counted widths (their parameter counts are exactly quadratic in w: convolutions w², biases and norms w)."""
    from ..scaling import WidthFamily

    if cfg.pool_model == "mlp":
        return WidthFamily.mlp(math.prod(_SHAPES[cfg.pool_dataset][0]), [1, 1], _SHAPES[cfg.pool_dataset][1])
    s1, s2, s3 = (network_parameters(cfg, w) for w in (1, 2, 3))
    a = (s3 - 2 * s2 + s1) / 2
    b = s2 - s1 - 3 * a
    return WidthFamily.from_quadratic(a, b, s1 - a - b)


def _pool_text(pools: dict) -> str:
    sizes = sorted({len(p["logits"]) for p in pools.values()})
    return str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"


def _model_text(cfg: StudyConfig) -> str:
    if cfg.pool_model == "mlp":
        return f"MLP {math.prod(_SHAPES[cfg.pool_dataset][0])} → w → w → {_SHAPES[cfg.pool_dataset][1]}"
    return f"{'VGG16' if cfg.pool_model == 'vgg16' else 'WideResNet-28'} (width w)"


def _pool(cfg: StudyConfig, ctx) -> dict[int, dict]:
    """The pools, trained in one or more vectorized trainings each (loaded from the study's store when done
    before): width → {logits (ℓ, N, C), labels, params per network, member accuracy}."""
    from ..runs import RunDir
    from ..training import predict_logits

    trainings = _pool_trainings(cfg)
    ctx.prefetch([o for _, o in trainings])
    pools: dict[int, dict] = {}
    for w, options in trainings:
        r = ctx.train(**options)
        if r.run_dir is not None and (Path(r.run_dir) / "logits.safetensors").exists():
            stored = RunDir(r.run_dir).read_logits()
            logits, labels = stored["test.logits"], stored["test.labels"]
        else:
            logits, labels = predict_logits(r.model, r.data.test), r.data.test.y
        pool = pools.setdefault(w, {"logits": [], "labels": labels, "member_accuracy": [],
                                    "params": r.metrics["params"]["total"] // options["members"]})
        pool["logits"].append(logits.double())
        pool["member_accuracy"].append((r.metrics["test"]["member_accuracy"], options["members"]))
    for pool in pools.values():
        pool["logits"] = torch.cat(pool["logits"])
        pool["member_accuracy"] = sum(a * n for a, n in pool["member_accuracy"]) / len(pool["logits"])
    return pools


def _partition_mean(curves: list[list[dict]]) -> list[dict]:
    """Pool curves of several random partitions of one pool into disjoint ensembles, averaged point by point
    (every ``*_mean`` and ``*_std``); the number of ensembles per n does not depend on the partition."""
    out = []
    for rows in zip(*curves, strict=True):
        row = dict(rows[0])
        for key in row:
            if key.endswith(("_mean", "_std")):
                row[key] = float(np.mean([r[key] for r in rows]))
        row["partitions"] = len(rows)
        out.append(row)
    return out


def _fit_or_none(rows, **kw):
    from ..scaling import fit_pool_curve

    try:
        return fit_pool_curve(rows, **kw)
    except DeepensError as exc:
        return {"fit": None, "prediction": None, "error": str(exc)}


# --------------------------------------------------------------------------------------------------
# Power laws, predictions and the memory split (PL §4–7)

def _pool_run(cfg: StudyConfig, ctx) -> dict:
    from ..scaling import budget_envelope, memory_split_table, pool_curve, predict_memory_split

    pools = _pool(cfg, ctx)
    n_test = len(next(iter(pools.values()))["labels"])
    cv = "halves" if n_test >= 1000 else "none"
    curves, fits, per_partition, laws = {}, {}, {}, []
    for w, p in pools.items():
        sizes = range(1, len(p["logits"]) // 2 + 1)
        parts = [pool_curve(p["logits"], p["labels"], sizes=sizes, seed=cfg.seed + 7919 * j, cv=cv)
                 for j in range(cfg.pool_partitions)]
        size = float(p["params"])
        curves[size] = _partition_mean(parts)
        fits[size] = _fit_or_none(curves[size], predict_k=cfg.pool_predict_k)
        per_partition[size] = [(_fit_or_none(c, predict_k=None) or {}).get("fit") for c in parts]
        f = fits[size]["fit"] or {}
        pred = fits[size].get("prediction") or {}
        by_n = {r["n"]: r for r in curves[size]}
        reliable = [r for r in curves[size] if r["reliable"]]
        laws.append({"width": w, "params": int(size), "member_accuracy": p["member_accuracy"], **f,
                     "error": fits[size].get("error"), "prediction_rmse": pred.get("rmse"),
                     "cnll_1": by_n[1]["cnll_mean"], "cnll_last": reliable[-1]["cnll_mean"],
                     "n_last": reliable[-1]["n"]})
        ctx.tick()
    family = _width_family(cfg)
    largest_pool = max(len(p["logits"]) for p in pools.values())
    largest = max(curves)
    budgets = sorted(curves)[1:] + [2 * largest, 4 * largest]  # single networks exist below 2× the largest
    tables = [memory_split_table(curves, b, tolerance=0.15) for b in budgets]
    lawful = {s: rows for s, rows in curves.items() if fits[s]["fit"] is not None and fits[s]["fit"]["c"] >= 0}
    predictions, problems = [], []
    for b in budgets:
        if len(lawful) < 2:
            problems.append(f"no predicted split of {int(b):,} parameters: fewer than 2 widths have a physical "
                            "law (c ≥ 0)")
            continue
        try:
            predictions.append(predict_memory_split(lawful, b, family, max_members=largest_pool // 2))
        except DeepensError as exc:
            problems.append(f"no predicted split of {int(b):,} parameters ({exc})")
    try:
        envelope = budget_envelope(curves)
    except DeepensError as exc:
        envelope = None
        problems.append(f"budget envelope: {exc}")

    fitted = [law for law in laws if law.get("a") is not None]
    rel_rmse = [law["rmse"] / (law["cnll_1"] - law["cnll_last"]) for law in fitted
                if law["cnll_1"] > law["cnll_last"]]
    rel_pred = [law["prediction_rmse"] / law["cnll_last"] for law in fitted if law["prediction_rmse"] is not None]
    cs = [law["c"] for law in fitted]
    se_c = [np.std([f["c"] for f in per_partition[float(law["params"])] if f], ddof=1)
            / math.sqrt(max(1, sum(f is not None for f in per_partition[float(law["params"])])))
            for law in fitted] if cfg.pool_partitions > 1 else []
    msa = [t["msa"] for t in tables if t["msa"] is not None]
    matches = []
    for table, pred in zip(tables, predictions, strict=False):
        if table["best"] and pred.get("best"):
            matches.append(abs(math.log2(pred["best"]["n"] / table["best"]["n"])) <= 1.0)
    measured = {
        "fit_rel_rmse": measure(max(rel_rmse) if len(rel_rmse) == len(fitted) and fitted else None),
        "max_a": measure(max(law["a"] for law in fitted) if fitted else None),
        "pred_rel_rmse": measure(max(rel_pred) if rel_pred else None),
        "c_size_corr": measure(spearman([law["params"] for law in fitted], cs) if len(fitted) >= 2 else None),
        "c_resolution": measure(max(se_c) / np.std(cs, ddof=1) if len(cs) >= 2 and se_c and np.std(cs) > 0 else None),
        "msa_fraction": measure(sum(msa) / len(msa) if msa else None),
        "msa_budgets": measure(len(msa)),
        "oms_match_fraction": measure(sum(matches) / len(matches) if matches else None),
    }
    calibration = ("τ fitted by test-time cross-validation (2 halves × 5)" if cv == "halves" else
                   "τ fitted on the whole test set (fewer than 1000 test points: halves often hold no error)")
    reading = [f"{_pool_text(pools)} networks per width, {n_test} test points; CNLL with {calibration}, each point "
               f"averaged over {cfg.pool_partitions} random partitions of the pool into disjoint ensembles.",
               "Power laws CNLL_n = c + b·n^a: " + ("; ".join(
                   f"width {law['width']} ({law['params']:,} params): a = {law['a']:.2f}, b = {law['b']:.3f}, "
                   f"c = {law['c']:.3f}, RMSE {law['rmse']:.1e}" for law in fitted) if fitted else "none fitted") + "."]
    rmses = [law["prediction_rmse"] for law in fitted if law["prediction_rmse"] is not None]
    if rmses:
        reading.append(f"Fitted on n ≤ {cfg.pool_predict_k}, the laws predict n = {cfg.pool_predict_k + 1}…"
                       f"ℓ/2 with RMSE " + ", ".join(f"{v:.4f}" for v in rmses) + " (CNLL units).")
    for table, budget in zip(tables, budgets, strict=True):
        if table["best"]:
            reading.append(f"Budget {int(budget):,} parameters: the best measured split is {table['best']['n']} × "
                           f"{int(table['best']['size']):,} (CNLL {table['best']['value']:.4f}).")
    for pred in predictions:
        if pred.get("best"):
            b = pred["best"]
            reading.append(f"Predicted from n ≤ {cfg.pool_predict_k}, budget {int(pred['budget']):,}: {b['n']} "
                           f"networks of width {b['width_multiplier']:.1f} (CNLL {b['predicted']:.4f}).")
    reading += problems
    curve_rows = [{"params": int(size), **row} for size, rows in curves.items() for row in rows]
    return {"results": {"cv": cv, "test": n_test, "curves": {str(int(s)): v for s, v in curves.items()},
                        "fits": {str(int(s)): v for s, v in fits.items()}, "laws": laws, "envelope": envelope,
                        "msa": tables, "predicted_splits": predictions, "problems": problems},
            "tables": {"pool_curves": curve_rows, "pool_laws": laws}, "measured": measured,
            "scale": {"data": f"{cfg.pool_dataset} ({n_test} test)", "model": _model_text(cfg),
                      "pool": f"{_pool_text(pools)} per width", "widths": ", ".join(map(str, cfg.pool_widths)),
                      "epochs": cfg.pool_epochs},
            "reading": reading, "headline": reading[1]}


def _pool_plot(record: dict, folder: Path) -> list[Path]:
    from ..scaling.plots import plot_budget, plot_power_law

    res = record["results"]
    curves = {}
    for law in res["laws"]:
        rows = [r for r in res["curves"][str(law["params"])] if r["reliable"]]
        curves[f"width {law['width']} ({law['params']:,} params)"] = ([r["n"] for r in rows],
                                                                     [r["cnll_mean"] for r in rows],
                                                                     res["fits"][str(law["params"])]["fit"])
    paths = [plot_power_law(curves, folder / "pool_powerlaw.png")]
    if res["envelope"]:
        paths.append(plot_budget(res["envelope"], folder / "pool_budget.png"))
    return paths


_POOL_LABELS = {
    "fit_rel_rmse": "largest RMSE of the fit / (CNLL₁ − CNLL_n) over widths",
    "max_a": "largest fitted exponent a",
    "pred_rel_rmse": "largest prediction RMSE (n > 4, from n ≤ 4) / CNLL over widths",
    "c_size_corr": "Spearman(network size, fitted asymptote c)",
    "c_resolution": "largest standard error of c (over partitions) / spread of c over widths",
    "msa_fraction": "fraction of budgets whose best measured split has n > 1",
    "msa_budgets": "budgets with both a single network and a split measured (±15 %)",
    "oms_match_fraction": "fraction of budgets where the predicted optimal n is within ×2 of the measured",
}

POOL_CLAIMS = (
    Claim("pl.powerlaw", "pl", "PL §4, Eq. (6), Fig. 3",
          "With the temperature applied before averaging, CNLL of a deep ensemble follows a power law "
          "CNLL_n = c + b·n^a (a < 0) in the ensemble size, from n = 1.", "closely approximated (RMSE ≪ gain)",
          "fit_rel_rmse", _POOL_LABELS,
          criterion=(Test("fit_rel_rmse", "<=", 0.05), Test("max_a", "<", 0.0)),
          weaker=Test("fit_rel_rmse", "<=", 0.1)),
    Claim("pl.predict", "pl", "PL §7, Fig. 6",
          "Power laws fitted on CNLL_1..CNLL_4 predict the CNLL of larger ensembles; the error is 1–2 orders of "
          "magnitude smaller than CNLL.", "error ≤ 1/10 of CNLL", "pred_rel_rmse", _POOL_LABELS,
          criterion=Test("pred_rel_rmse", "<=", 0.1), weaker=Test("pred_rel_rmse", "<=", 0.2)),
    Claim("pl.asymptote", "pl", "PL §4, Fig. 3",
          "The asymptote c = CNLL_∞ of the power law decreases as the member network grows.",
          "c decreases with network size", "c_size_corr", _POOL_LABELS,
          criterion=Test("c_size_corr", "<=", -0.8), weaker=Test("c_size_corr", "<", 0.0),
          identifiable=Test("c_resolution", "<", 1.0),
          note="identifiable when c's standard error is below its spread over the widths"),
    Claim("pl.msa", "pl", "PL §6, Fig. 5 (right)",
          "Memory Split Advantage: for a fixed parameter budget the lowest CNLL is reached by an ensemble of several "
          "medium networks (n > 1), not by one large network.", "optimum at n > 1 for every budget", "msa_fraction",
          _POOL_LABELS, criterion=Test("msa_fraction", ">=", 1.0), weaker=Test("msa_fraction", ">=", 0.5),
          identifiable=Test("msa_budgets", ">=", 1),
          note="a budget counts where one network of the whole budget and a split within ±15 % were trained"),
    Claim("pl.oms", "pl", "PL §7, Fig. 6 (right)",
          "The optimal memory split predicted from power laws fitted on n ≤ 4 is in most cases the true one or its "
          "neighbour.", "exact or neighbouring split", "oms_match_fraction", _POOL_LABELS,
          criterion=Test("oms_match_fraction", ">", 0.5), weaker=Test("oms_match_fraction", ">", 0.0),
          note="'neighbouring' declared as within a factor 2 in n"),
)


# --------------------------------------------------------------------------------------------------
# Proposition 1, LE-NLL vs CNLL, temperature before vs after averaging (PL §3–4, App. D)

def _prop1(logits: torch.Tensor, labels: torch.Tensor, sizes: list[int], seed: int) -> dict:
    """Proposition 1 on one pool: the predicted 1/n coefficient E_obj[σ²/(2μ²)] of the probability of the correct
    class over networks, against b of NLL_n(τ = 1) ≈ c + b/n fitted on ``sizes`` (ensembles of disjoint networks)."""
    from ..scaling import pool_ensembles

    p = torch.softmax(logits, dim=-1).gather(-1, labels.view(1, -1, 1).expand(logits.shape[0], -1, 1))[..., 0]
    mu, var = p.mean(0), p.var(0, unbiased=True)
    predicted = float((var / (2 * mu**2)).mean())
    nll = []
    for n in sizes:
        groups = torch.as_tensor(pool_ensembles(logits.shape[0], n, seed))
        pbar = torch.softmax(logits[groups], dim=-1).mean(1)  # (E, N, C)
        nll.append(float(-(pbar.gather(-1, labels.view(1, -1, 1).expand(pbar.shape[0], -1, 1)).log()).mean()))
    design = np.stack([np.ones(len(sizes)), 1.0 / np.asarray(sizes, dtype=float)], axis=1)
    (c, b), *_ = np.linalg.lstsq(design, np.asarray(nll), rcond=None)
    return {"predicted_b": predicted, "fitted_b": float(b), "fitted_c": float(c), "sizes": sizes, "nll": nll,
            "ratio": float(b) / predicted if predicted > 0 else None}


def _calib_run(cfg: StudyConfig, ctx) -> dict:
    from ..scaling import calibrated_nll, fit_power_law, lower_envelope_nll, nll_at_temperature, pool_ensembles

    pools = _pool(cfg, ctx)
    n_test = len(next(iter(pools.values()))["labels"])
    cv = "halves" if n_test >= 1000 else "none"
    rows, prop, taus = [], [], []
    for w, p in pools.items():
        z, y = p["logits"], p["labels"]
        tail = list(range(cfg.calib_tail, len(z) // 3 + 1))
        sizes = list(range(1, len(z) // 3 + 1))  # every point averaged over >= 3 disjoint ensembles
        prop.append({"width": w, **_prop1(z, y, tail, cfg.seed)})
        for n in sizes:
            groups = torch.as_tensor(pool_ensembles(z.shape[0], n, cfg.seed))
            le = lower_envelope_nll(z[groups], y)["le_nll"]
            cnll = np.asarray(calibrated_nll(z[groups], y, cv=cv, seed=cfg.seed)["cnll"], dtype=float).mean()
            after = np.asarray(calibrated_nll(z[groups], y, cv=cv, seed=cfg.seed, temperature="after")["cnll"],
                               dtype=float).mean()
            row = {"width": w, "n": n, "le_nll": le, "cnll": float(cnll), "cnll_after": float(after)}
            for tau in cfg.calib_temperatures:
                for mode in ("before", "after"):
                    row[f"nll_{mode}_tau{tau:g}"] = float(np.mean(nll_at_temperature(z[groups], y, tau,
                                                                                     temperature=mode)))
            rows.append(row)
        for tau in cfg.calib_temperatures:
            for mode in ("before", "after"):
                pts = [r for r in rows if r["width"] == w]
                ys = [r[f"nll_{mode}_tau{tau:g}"] for r in pts]
                try:
                    law = fit_power_law([r["n"] for r in pts], ys).to_dict()
                except DeepensError:  # NLL_n(τ) does not decrease: no law with b > 0 (b ≤ 0 for this τ)
                    law = {"a": None, "b": None, "c": None}
                taus.append({"width": w, "tau": tau, "mode": mode, "drop": ys[0] - ys[-1],
                             **{k: law[k] for k in ("a", "b", "c")}})
        ctx.tick()

    def le_gap(w):
        pts = [r for r in rows if r["width"] == w]
        return max(abs(r["le_nll"] - r["cnll"]) / r["cnll"] for r in pts)

    widths = list(pools)
    measured = {
        "prop1_ratio": measure([q["ratio"] for q in prop], over="widths"),
        "le_gap": measure([le_gap(w) for w in widths], over="widths"),
        "min_drop_before": measure(min(t["drop"] for t in taus if t["mode"] == "before")),
        "before_minus_after": measure([float(np.mean([r["cnll"] - r["cnll_after"] for r in rows if r["width"] == w]))
                                       for w in widths], over="widths"),
    }
    reading = [f"Proposition 1 (NLL_n at τ = 1 ≈ c + b/n on n = {tail[0]}…{tail[-1]}): fitted b against E[σ²/(2μ²)] "
               "per width: " + "; ".join(f"width {q['width']}: {q['fitted_b']:.4f} vs {q['predicted_b']:.4f}"
                                         for q in prop) + ".",
               "Largest |LE-NLL_n − CNLL_n| / CNLL_n over n = 1…" + f"{sizes[-1]}: " + ", ".join(
                   f"{le_gap(w):.4f} (width {w})" for w in widths) + ".",
               f"NLL_1(τ) − NLL_{sizes[-1]}(τ) (b = NLL_1 − NLL_∞ of the power law) with τ before / after averaging: "
               + "; ".join(f"width {w}, τ = {tau:g}: " + " / ".join(
                   f"{next(t['drop'] for t in taus if t['width'] == w and t['tau'] == tau and t['mode'] == mode):+.3f}"
                   for mode in ("before", "after")) for w in widths for tau in cfg.calib_temperatures) + ".",
               "CNLL with τ before − after averaging, mean over n: " + ", ".join(
                   f"{v:+.4f} (width {w})" for w, v in zip(widths, measured['before_minus_after']['values'],
                                                           strict=True)) + "."]
    return {"results": {"rows": rows, "prop1": prop, "temperatures": taus, "cv": cv, "test": n_test},
            "tables": {"calibration": rows, "calibration_prop1": prop, "calibration_temperatures": taus},
            "measured": measured,
            "scale": {"data": f"{cfg.pool_dataset} ({n_test} test)", "model": _model_text(cfg),
                      "pool": f"{_pool_text(pools)} per width", "widths": ", ".join(map(str, cfg.pool_widths))},
            "reading": reading, "headline": reading[0]}


def _calib_plot(record: dict, folder: Path) -> list[Path]:
    res = record["results"]
    fig, ax = axes(3, width=4.4)
    widths = sorted({r["width"] for r in res["rows"]})
    for i, w in enumerate(widths):
        pts = [r for r in res["rows"] if r["width"] == w]
        ns = [r["n"] for r in pts]
        ax[0].plot(ns, [r["cnll"] for r in pts], "o-", color=f"C{i}", ms=3, label=f"CNLL, width {w}")
        ax[0].plot(ns, [r["le_nll"] for r in pts], "x--", color=f"C{i}", ms=4, label=f"LE-NLL, width {w}")
        q = next(q for q in res["prop1"] if q["width"] == w)
        ax[1].plot([1 / n for n in q["sizes"]], q["nll"], "o", color=f"C{i}", ms=3)
        grid = np.linspace(0, 1 / q["sizes"][0], 20)
        ax[1].plot(grid, q["fitted_c"] + q["fitted_b"] * grid, "-", color=f"C{i}", lw=1,
                   label=f"width {w}: b = {q['fitted_b']:.3f}")
        ax[1].plot(grid, q["fitted_c"] + q["predicted_b"] * grid, ":", color=f"C{i}", lw=1,
                   label=f"E[σ²/2μ²] = {q['predicted_b']:.3f}")
    for mode, style in (("before", "o-"), ("after", "s--")):
        pts = [t for t in res["temperatures"] if t["mode"] == mode and t["width"] == widths[-1]]
        ax[2].plot([t["tau"] for t in pts], [t["drop"] for t in pts], style, label=f"τ {mode} averaging")
    ax[2].axhline(0, color="k", lw=0.8)
    ax[0].set_xscale("log", base=2)
    ax[0].set_xlabel("ensemble size n")
    ax[0].set_title("CNLL (test-time CV) vs LE-NLL", fontsize=10)
    ax[1].set_xlabel("1/n")
    ax[1].set_title("Proposition 1: NLL_n at τ = 1", fontsize=10)
    ax[2].set_xscale("log", base=2)
    ax[2].set_xlabel("temperature τ")
    ax[2].set_title(f"NLL_1(τ) − NLL_n(τ), largest n, width {widths[-1]}", fontsize=10)
    return [finish(fig, ax, folder / "calibration.png")]


_CALIB_LABELS = {"prop1_ratio": "fitted 1/n coefficient of NLL_n(τ = 1) / E[σ²/(2μ²)]",
                 "le_gap": "largest |LE-NLL_n − CNLL_n| / CNLL_n",
                 "min_drop_before": "smallest NLL_1(τ) − NLL_n(τ) (largest n) over τ, τ before averaging",
                 "before_minus_after": "CNLL with τ before − after averaging"}

CALIB_CLAIMS = (
    Claim("pl.prop1", "pl", "PL §3, Proposition 1",
          "For i.i.d. members, NLL_n = NLL_∞ + (1/n)·σ²/(2μ²) + O(1/n²) per object (μ, σ² the mean and variance of the "
          "probability of the correct class).", "coefficient σ²/(2μ²)", "prop1_ratio", _CALIB_LABELS,
          criterion=Test("prop1_ratio", "in", (0.8, 1.25), k=1), weaker=Test("prop1_ratio", "in", (0.5, 2.0)),
          note="the spread is over the pool widths; objects with small μ make the O(1/n²) term large"),
    Claim("pl.lenll", "pl", "PL §4, Eq. (4)–(5), App. D",
          "LE-NLL_n (one temperature for all ensembles of size n) and CNLL_n differ negligibly in practice.",
          "negligible difference", "le_gap", _CALIB_LABELS,
          criterion=Test("le_gap", "<", 0.02, k=1), weaker=Test("le_gap", "<", 0.05),
          note="'negligible' declared as below 2 % of CNLL (5 % for partly)"),
    Claim("pl.temperature", "pl", "PL §4",
          "With the temperature applied before averaging, NLL_n(τ) follows a power law whose b stays positive for "
          "every τ (b = NLL_1 − NLL_∞).", "b > 0 for every τ", "min_drop_before", _CALIB_LABELS,
          criterion=Test("min_drop_before", ">", 0.0),
          note="b is measured as NLL_1(τ) − NLL_n(τ) at the largest n averaged over ≥ 3 ensembles"),
)


PARTS: tuple[Part, ...] = (
    Part("pool", "pl", "Power laws, predictions and the memory split", ("pool",),
         lambda c: len(c.pool_widths), _pool_run, _pool_plot, POOL_CLAIMS, trains=True,
         summary="Pools of deep-ensemble networks at several widths; CNLL of ensembles of every size, power-law "
                 "fits, predictions from n ≤ 4 and the memory split."),
    Part("calibration", "pl", "Proposition 1, LE-NLL and the temperature", ("pool", "calib"),
         lambda c: len(c.pool_widths), _calib_run, _calib_plot, CALIB_CLAIMS, trains=True,
         summary="On the same pools: the 1/n coefficient of NLL_n against Proposition 1, LE-NLL against CNLL, and "
                 "NLL_n(τ) with the temperature before and after averaging."),
)
