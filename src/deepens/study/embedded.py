"""The Embedded Ensembles paper (Velikanov et al., AISTATS 2022 — "EE") as parts of the study.

Each part trains (or initialises) the reference setup of :class:`~deepens.study.StudyConfig` — by default
a 64-128-128-10 MLP on scikit-learn's digits — for what one figure of EE §5 or App. B–D needs, over
``seeds`` seeds, and declares the figure's claims with the criterion its verdict is computed from.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..io.figures import pyplot
from .claims import Claim, Test, measure
from .common import METRICS, Part, aggregate, axes, errorbar, finish, finite, fmt, ok, per_seed, row_metrics, slope
from .config import StudyConfig

__all__ = ["PARTS"]

LOG3 = math.log(3.0)
SHIFTED = 1 / math.sqrt(2.0)  # N(1/√2, 1/2): EE App. D.1–D.2's shifted modulations


def _scale(cfg: StudyConfig, members, n_test: int | None = None, **extra) -> dict:
    """The scale a claim was measured at (the report's 'scale' column)."""
    model = f"{cfg.model.upper()} {'-'.join(map(str, cfg.widths))}" if cfg.model == "mlp" else cfg.model
    data = cfg.dataset + (f" ({n_test} test)" if n_test else "")
    return {"data": data, "model": model, "M": members, "seeds": cfg.seeds, **extra}


def _n_test(results) -> int | None:
    for r in results:
        if r is not None:
            return int(r.metrics["test"]["samples"])
    return None


def _members_text(ms) -> str:
    ms = sorted(ms)
    return str(ms[0]) if len(ms) == 1 else f"{ms[0]}–{ms[-1]}"


def _at(rows: list[dict], **where):
    """The first row matching ``where`` (None when absent)."""
    return next((r for r in rows if all(r.get(k) == v for k, v in where.items())), None)


def _value(row: dict | None, key: str):
    return None if row is None else row.get(key)


def _diff(a, b):
    return None if a is None or b is None else a - b


def _against_members(ax, titles) -> None:
    """Ensemble size M on a log₂ x axis, one title per panel."""
    for a, title in zip(ax, titles, strict=True):
        a.set_xscale("log", base=2)
        a.set_xlabel("ensemble size M")
        a.set_title(title, fontsize=10)


_CURVES = (("accuracy", "ensemble test accuracy"), ("member_accuracy", "mean member test accuracy"),
           ("correlation", "member correlation"))


def _curves_plot(rows: list[dict], key: str, label, path: Path, colormap: str | None = None,
                 first_title: str = "ensemble test accuracy") -> list[Path]:
    """Ensemble accuracy, member accuracy and member correlation (mean ± std over seeds) against M, one curve per
    value of ``key`` labelled ``label(value)``."""
    fig, ax = axes(3)
    values = list(dict.fromkeys(r[key] for r in rows))
    cmap = pyplot().get_cmap(colormap) if colormap else None
    for i, value in enumerate(values):
        pts = sorted((r for r in rows if r[key] == value), key=lambda r: r["members"])
        color = {} if cmap is None else {"color": cmap(i / max(1, len(values) - 1))}
        for a, (metric, _) in zip(ax, _CURVES, strict=True):
            errorbar(a, pts, "members", metric, label=label(value) if a is ax[0] else None, fmt="o-", ms=4, **color)
    _against_members(ax, [first_title] + [t for _, t in _CURVES[1:]])
    return [finish(fig, ax, path)]


# --------------------------------------------------------------------------------------------------
# Regime transition (EE Fig. 2, Theorems 1–2)

def _regime_points(ps: list[float]) -> tuple[float, float | None, float | None]:
    """p₀ (the smallest p), the largest p ≤ 0.6 above it, the largest p in (0.6, 1)."""
    p0 = min(ps)
    mid = max((p for p in ps if p0 < p <= 0.6), default=None)
    high = max((p for p in ps if 0.6 < p < 1.0), default=None)
    return p0, mid, high


def _regime_theory(cfg: StudyConfig, ctx, options: dict, p: float) -> dict:
    """The infinite-width regime of the very ensemble a training with ``options`` builds (its modules' kernels,
    on four validation inputs); a network without a closed-form kernel (max pooling) gives no numbers."""
    from ..errors import DeepensError
    from ..kernels import regime

    model = ctx.module(**options)
    data = ctx.data(flatten=cfg.model == "mlp")
    split = data.val if len(data.val) >= 4 else data.test
    try:
        verdict = regime(model, split.x[:4].double().numpy())
    except DeepensError as exc:
        return {"p": p, "verdict": None, "ntk_ratio": None, "nngp_ratio": None, "reason": str(exc)}
    return {"p": p, "verdict": verdict["verdict"], "ntk_ratio": verdict["ntk_ratio"],
            "nngp_ratio": verdict["nngp_ratio"], "reason": verdict["reason"]}


UNCERTAINTY = ("epistemic", "ood_auroc_mi", "ood_auroc_msp")


def _uncertainty(result, seed: int) -> dict:
    """Mean epistemic uncertainty (mutual information, nats) on the test split and the AUROC of detecting noise
    inputs (deepens.data.ood_inputs) by negative mutual information and by max probability
    (deepens.metrics) of one trained ensemble; None when it diverged."""
    if result is None:
        return dict.fromkeys(UNCERTAINTY)
    from ..data import Split, ood_inputs
    from ..metrics import ood_detection, ood_scores, uncertainty_decomposition
    from ..training import predict_logits

    data = result.data
    z = predict_logits(result.model, data.test).double().cpu()
    x = ood_inputs("noise", data, seed=seed).to(data.test.x.device)
    o = predict_logits(result.model, Split(x, torch.zeros(len(x), dtype=torch.long, device=x.device))).double().cpu()
    s_in, s_out = ood_scores(z), ood_scores(o)
    auroc = {k: float(ood_detection(s_in[k], s_out[k])["auroc"]) for k in ("neg_mutual_information",
                                                                          "max_probability")}
    return {"epistemic": float(uncertainty_decomposition(z, logits=True)["epistemic"].mean()),
            "ood_auroc_mi": auroc["neg_mutual_information"], "ood_auroc_msp": auroc["max_probability"]}


def _drop(before, after) -> float | None:
    """1 − after / before (None when undefined)."""
    return None if before is None or after is None or before <= 0 else 1.0 - after / before


def _regime_run(cfg: StudyConfig, ctx) -> dict:
    rows, trained = [], []
    specs = [(s, p, m, dict(ensemble="batch", members=m, modulation=f"shifted-normal:{p:g}", seed=ctx.seed(s)))
             for s in range(cfg.seeds) for p in cfg.regime_p for m in cfg.regime_members]
    ctx.prefetch([o for *_, o in specs])
    theory = [_regime_theory(cfg, ctx, dict(ensemble="batch", members=max(2, max(cfg.regime_members)),
                                            modulation=f"shifted-normal:{p:g}", seed=ctx.seed(0)), p)
              for p in cfg.regime_p]
    for s, p, m, options in specs:
        r = ctx.try_train(**options)
        trained.append(r)
        rows.append({"seed": s, "p": p, "members": m, **row_metrics(r), **_uncertainty(r, cfg.seed)})
    mean = aggregate(rows, ("p", "members"), METRICS + UNCERTAINTY)
    big = max(cfg.regime_members)
    p0, mid, high = _regime_points(cfg.regime_p)
    n_test = _n_test(trained)

    def corr(seed_rows, p):
        return _value(_at(seed_rows, p=p, members=big), "correlation") if p is not None else None

    def steepening(seed_rows):
        if mid is None or high is None:
            return None
        c0, c1, c2 = corr(seed_rows, p0), corr(seed_rows, mid), corr(seed_rows, high)
        if None in (c0, c1, c2):
            return None
        return (c2 - c1) / (high - mid) - (c1 - c0) / (mid - p0)

    def best_fraction(seed_rows):
        pts = ok([r for r in seed_rows if r["p"] == p0])
        if not pts:
            return None
        return max(pts, key=lambda r: (r["accuracy"], -r["nll"]))["members"] / big

    gain = per_seed(rows, lambda rs: _value(_at(rs, p=p0, members=big), "gain"), cfg.seeds)
    # the most collective p whose members still differ (p = 1 makes every modulation 1: identical members)
    collective = max((p for p in cfg.regime_p if p < 1.0), default=None)
    by_p = {t["p"]: t for t in theory}
    shifted = [t["ntk_ratio"] for t in theory if t["p"] > 0 and t["ntk_ratio"] is not None]
    measured = {
        "gain_p0": gain,
        "gain_images": measure(None if gain["mean"] is None or n_test is None else abs(gain["mean"]) * n_test),
        "corr_rise_high": per_seed(rows, lambda rs: _diff(corr(rs, high), corr(rs, mid)), cfg.seeds),
        "corr_steepening": per_seed(rows, steepening, cfg.seeds),
        "ntk_ratio_p0": measure(by_p[p0]["ntk_ratio"] if p0 == 0.0 else None),
        "ntk_ratio_shifted_min": measure(min(shifted) if shifted else None),
        "best_m_fraction": per_seed(rows, best_fraction, cfg.seeds),
        "largest_m": measure(big),
        "epistemic_drop": per_seed(rows, lambda rs: _drop(_value(_at(rs, p=p0, members=big), "epistemic"),
                                                          _value(_at(rs, p=collective, members=big), "epistemic"))
                                   if collective is not None else None, cfg.seeds),
        "collective_p": measure(collective),
    }
    at_big = {r["p"]: r for r in mean if r["members"] == big and r["accuracy"] is not None}
    ps = sorted(at_big)
    reading = []
    if big > 1 and ps and at_big[ps[0]].get("epistemic") is not None:
        reading.append(f"Uncertainty at M = {big} (deepens.metrics): mean epistemic uncertainty (mutual "
                       "information) on the test set "
                       + ", ".join(f"{fmt(at_big[p]['epistemic'], '.4f')} (p = {p:g})" for p in ps)
                       + "; AUROC of noise inputs against the test set by −MI " + ", ".join(
                           fmt(at_big[p]["ood_auroc_mi"], ".3f") for p in ps) + ", by max probability " + ", ".join(
                           fmt(at_big[p]["ood_auroc_msp"], ".3f") for p in ps) + ".")
    if big > 1 and ps:
        reading.append(f"At M = {big}, mean over {cfg.seeds} seeds: member correlation " + ", ".join(
            f"{fmt(at_big[p]['correlation'], '.2f')} (p = {p:g})" for p in ps) + "; ensemble − mean member accuracy "
            + ", ".join(f"{at_big[p]['gain']:+.3f}" for p in ps) + "; ensemble accuracy "
            + ", ".join(f"{at_big[p]['accuracy']:.3f}" for p in ps) + ".")
    diverged = sum(r["diverged"] for r in rows)
    if diverged:
        reading.append(f"{diverged} of {len(rows)} trainings diverged (no numbers; γ = M multiplies the shared "
                       "weights' step by M).")
    if all(t["ntk_ratio"] is not None for t in theory):
        reading.append("Infinite width (analytic, the trained network's kernels): cross/same NNGP / NTK ratios "
                       + ", ".join(f"{t['nngp_ratio']:.2f} / {t['ntk_ratio']:.2f} (p = {t['p']:g})" for t in theory)
                       + ".")
    else:
        reading.append("Infinite width: no analytic kernels for the trained network — " + theory[0]["reason"])
    return {"results": {"rows": rows, "mean": mean, "theory": theory},
            "tables": {"regime": rows, "regime_mean": mean, "regime_theory": theory},
            "measured": measured, "scale": _scale(cfg, _members_text(cfg.regime_members), n_test),
            "reading": reading, "headline": reading[0] if reading else ""}


def _regime_plot(record: dict, folder: Path) -> list[Path]:
    rows, theory = record["results"]["mean"], {t["p"]: t for t in record["results"]["theory"]}
    keys = [("accuracy", "ensemble test accuracy"), ("member_accuracy", "mean member test accuracy"),
            ("train_member_accuracy", "mean member train accuracy"), ("correlation", "member correlation (test)")]
    if any(r.get("epistemic") is not None for r in rows):  # records written before the uncertainty columns lack them
        keys += [("epistemic", "epistemic uncertainty (test MI, nats)"), ("ood_auroc_mi", "noise AUROC by −MI")]
    fig, ax = axes(len(keys))
    cmap = pyplot().get_cmap("viridis")
    ps = sorted(theory)
    for i, p in enumerate(ps):
        pts = sorted((r for r in rows if r["p"] == p), key=lambda r: r["members"])
        t = theory[p]
        label = (f"p = {p:g}: {t['verdict']}, cross/same NNGP {t['nngp_ratio']:.2f}, NTK {t['ntk_ratio']:.2f}"
                 if t["ntk_ratio"] is not None else f"p = {p:g}")
        for a, (key, _) in zip(ax, keys, strict=True):
            errorbar(a, pts, "members", key, label=label if a is ax[0] else None, fmt="o-",
                     color=cmap(i / max(1, len(ps) - 1)), ms=4)
    _against_members(ax, [title for _, title in keys])
    return [finish(fig, ax, folder / "regime.png")]


_REGIME_LABELS = {
    "gain_p0": "ensemble − mean member test accuracy at p = 0, largest M",
    "gain_images": "|mean gain| in test images",
    "corr_rise_high": "correlation rise from the largest p ≤ 0.6 to the largest p in (0.6, 1), largest M",
    "corr_steepening": "slope of correlation in p above 0.6 minus below 0.6, largest M",
    "ntk_ratio_p0": "analytic cross/same NTK ratio at p = 0",
    "ntk_ratio_shifted_min": "smallest analytic cross/same NTK ratio for p > 0",
    "best_m_fraction": "most accurate M at p = 0 / largest M trained",
    "largest_m": "largest M trained",
    "epistemic_drop": "1 − epistemic uncertainty (test MI) at the largest p < 1 / at p = 0, largest M",
    "collective_p": "largest p < 1 trained (p = 1: identical members)",
}

REGIME_CLAIMS = (
    Claim("ee.regime.gain", "ee", "EE §5, Fig. 2",
          "In the independent regime (centred modulations, p = 0) the ensemble is more accurate than its members.",
          "≈ +5 % over the members at the optimal M (BatchEnsemble, CIFAR-100)", "gain_p0", _REGIME_LABELS,
          criterion=Test("gain_p0", ">", 0.0, k=1), weaker=Test("gain_p0", ">", 0.0),
          identifiable=Test("gain_images", ">=", 1.0)),
    Claim("ee.regime.transition", "ee", "EE §5, Fig. 2",
          "Member correlation is almost constant in the independent regime and grows with p in the collective "
          "regime: a transition near p ≈ 0.6.", "transition at p ≈ 0.6", "corr_steepening", _REGIME_LABELS,
          criterion=(Test("corr_steepening", ">", 0.0, k=1), Test("corr_rise_high", ">", 0.0, k=1)),
          weaker=Test("corr_rise_high", ">", 0.0),
          note="p grid of the preset; the transition is located only to within its spacing"),
    Claim("ee.regime.theory", "ee", "EE Theorems 1–2",
          "At infinite width only centred post-activation modulations give independent members: the cross-member "
          "NTK vanishes at p = 0 and not for p > 0.", "cross/same NTK ratio 0 at p = 0, > 0 for p > 0",
          "ntk_ratio_p0", _REGIME_LABELS,
          criterion=(Test("ntk_ratio_p0", "<=", 1e-12), Test("ntk_ratio_shifted_min", ">", 1e-6))),
    Claim("ee.regime.optimum", "ee", "EE §5, Fig. 2",
          "In the independent regime the ensemble accuracy peaks at a finite ensemble size (an inverted U).",
          "best at M = 7 (BatchEnsemble, CIFAR-100)", "best_m_fraction", _REGIME_LABELS,
          criterion=Test("best_m_fraction", "<", 1.0), identifiable=Test("largest_m", ">=", 14),
          note="an interior optimum like the paper's M = 7 needs a grid reaching about twice it"),
    Claim("ee.regime.epistemic", "ee", "EE §5 (the collective regime), measured with deepens.metrics",
          "Ensembles in the collective regime (shifted modulations, p → 1) have highly correlated members and so "
          "little epistemic uncertainty compared with the independent regime (p = 0).",
          "collective ≪ independent (mutual information)", "epistemic_drop", _REGIME_LABELS,
          criterion=Test("epistemic_drop", ">", 0.5, k=1), weaker=Test("epistemic_drop", ">", 0.0),
          identifiable=Test("collective_p", ">=", 0.6),
          note="the paper states the correlation; the epistemic part of the uncertainty is its consequence"),
)


# --------------------------------------------------------------------------------------------------
# Width scaling (EE Fig. 3)

def _width_run(cfg: StudyConfig, ctx) -> dict:
    from ..training import classification_metrics, predict_logits

    rows, trained = [], []
    big = max(cfg.width_members)
    ctx.prefetch([dict(ensemble=kind, members=m, width=k, seed=ctx.seed(s))
                  for s in range(cfg.seeds) for k in cfg.width_multipliers
                  for kind, ms in (("deep", [big]), ("batch", cfg.width_members)) for m in ms])
    for s in range(cfg.seeds):
        for k in cfg.width_multipliers:
            r = ctx.try_train(ensemble="deep", members=big, width=k, seed=ctx.seed(s))
            trained.append(r)
            if r is not None:
                logits, labels = predict_logits(r.model, r.data.test), r.data.test.y
                per_member = r.metrics["params"]["total"] / big
            for m in cfg.width_members:  # deep ensembles of m members: the first m of one training (independent)
                test = None if r is None else classification_metrics(logits[:m], labels, curve=False)
                rows.append({"seed": s, "kind": "deep", "width": k, "members": m,
                             "params": None if r is None else int(round(per_member * m)),
                             **row_metrics(None, test=test)})
            for m in cfg.width_members:
                r = ctx.try_train(ensemble="batch", members=m, width=k, seed=ctx.seed(s))
                trained.append(r)
                rows.append({"seed": s, "kind": "batch", "width": k, "members": m,
                             "params": None if r is None else r.metrics["params"]["total"], **row_metrics(r)})

    def best(seed_rows, kind, k):
        pts = ok([r for r in seed_rows if r["kind"] == kind and r["width"] == k])
        return max(pts, key=lambda r: (r["accuracy"], -r["nll"])) if pts else None

    narrow, wide = min(cfg.width_multipliers), max(cfg.width_multipliers)

    def increase(seed_rows):
        a, b = best(seed_rows, "batch", narrow), best(seed_rows, "batch", wide)
        return None if a is None or b is None else b["members"] - a["members"]

    def interior(seed_rows):
        a = best(seed_rows, "batch", narrow)
        return None if a is None else big - a["members"]

    def matched(seed_rows):
        wins = []
        for k in cfg.width_multipliers:
            b = best(seed_rows, "batch", k)
            rivals = [d for d in ok(seed_rows) if d["kind"] == "deep" and b is not None and d["params"] <= b["params"]]
            if b is not None and rivals:
                wins.append(b["accuracy"] >= max(d["accuracy"] for d in rivals))
        return sum(wins) / len(wins) if wins else None

    best_rows = [{"seed": s, "kind": kind, "width": k, "best_members": b["members"], "accuracy": b["accuracy"],
                  "params": b["params"]}
                 for s in range(cfg.seeds) for kind in ("batch", "deep") for k in cfg.width_multipliers
                 if (b := best([r for r in rows if r["seed"] == s], kind, k)) is not None]
    measured = {"best_m_increase": per_seed(rows, increase, cfg.seeds),
                "narrow_interior": per_seed(rows, interior, cfg.seeds),
                "matched_fraction": per_seed(rows, matched, cfg.seeds)}
    mean = aggregate(rows, ("kind", "width", "members"), ("accuracy", "member_accuracy", "correlation", "params",
                                                          "nll"))
    reading = ["Most accurate BatchEnsemble size per width (seeds): " + "; ".join(
        f"{k:g}×: " + ", ".join(str(b["best_members"]) for b in best_rows if b["kind"] == "batch" and b["width"] == k)
        for k in cfg.width_multipliers) + "; deep ensembles: " + "; ".join(
        f"{k:g}×: " + ", ".join(str(b["best_members"]) for b in best_rows if b["kind"] == "deep" and b["width"] == k)
        for k in cfg.width_multipliers) + "."]
    if measured["matched_fraction"]["mean"] is not None:
        reading.append(f"The best BatchEnsemble of a width is at least as accurate as every deep ensemble with no "
                       f"more parameters at a fraction {measured['matched_fraction']['mean']:.2f} of the widths "
                       f"(mean over seeds).")
    return {"results": {"rows": rows, "mean": mean, "best": best_rows},
            "tables": {"width": rows, "width_mean": mean, "width_best": best_rows},
            "measured": measured, "scale": _scale(cfg, _members_text(cfg.width_members), _n_test(trained),
                                                  widths="×" + ", ".join(f"{k:g}" for k in cfg.width_multipliers)),
            "reading": reading, "headline": reading[0]}


def _width_plot(record: dict, folder: Path) -> list[Path]:
    rows = record["results"]["mean"]
    widths = sorted({r["width"] for r in rows})
    cmap = pyplot().get_cmap("plasma")
    fig, ax = axes(4)
    for i, k in enumerate(widths):
        color = cmap(i / max(1, len(widths)))
        for kind, style in (("batch", "o-"), ("deep", "s--")):
            pts = sorted([r for r in rows if r["kind"] == kind and r["width"] == k], key=lambda r: r["members"])
            label = f"{'BE' if kind == 'batch' else 'DE'} {k:g}×"
            for a, key in zip(ax[:3], ("accuracy", "member_accuracy", "correlation"), strict=True):
                errorbar(a, pts, "members", key, label=label if a is ax[0] else None, fmt=style, color=color, ms=4)
            pts = ok(pts)
            ax[3].plot([r["params"] for r in pts], [r["accuracy"] for r in pts], style, color=color, ms=4)
    _against_members(ax[:3], [t for _, t in _CURVES])
    ax[3].set_xscale("log")
    ax[3].set_xlabel("parameters")
    ax[3].set_title("accuracy against parameters (BE ●, DE ■)", fontsize=10)
    return [finish(fig, ax, folder / "width.png")]


_WIDTH_LABELS = {"best_m_increase": "most accurate BE size at the widest − at the narrowest width",
                 "narrow_interior": "largest M − most accurate BE size at the narrowest width",
                 "matched_fraction": "fraction of widths where the best BE ≥ every deep ensemble with ≤ parameters"}

WIDTH_CLAIMS = (
    Claim("ee.width.optimum", "ee", "EE §5, Fig. 3",
          "The optimal ensemble size maximising ensemble accuracy increases with network width.",
          "optimal M grows with width (CIFAR-100)", "best_m_increase", _WIDTH_LABELS,
          criterion=Test("best_m_increase", ">", 0.0, k=1), weaker=Test("best_m_increase", ">", 0.0),
          identifiable=Test("narrow_interior", ">", 0.0),
          note="identifiable only when the narrowest width's optimum lies inside the M grid"),
    Claim("ee.width.matched", "ee", "EE §5, Fig. 3",
          "BatchEnsembles with the optimal number of models slightly outperform independent (deep) ensembles at "
          "any fixed number of parameters.", "BE ahead at every parameter count", "matched_fraction", _WIDTH_LABELS,
          criterion=Test("matched_fraction", ">=", 0.9), weaker=Test("matched_fraction", ">=", 0.5)),
)


# --------------------------------------------------------------------------------------------------
# Gradient scaling γ(M) (EE Fig. 4)

def _spread(curves: list[list[float]], epoch: int) -> float | None:
    values = [c[epoch - 1] for c in curves if len(c) >= epoch and c[epoch - 1] is not None]
    return float(max(values) - min(values)) if len(values) > 1 else None


def _gradient_arms(cfg: StudyConfig) -> list[tuple[str, str, float]]:
    return [("γ = 1", "1", 1.0), ("γ = M", "M", 1.0), (f"γ = M, width ×{cfg.gradient_wide:g}", "M", cfg.gradient_wide)]


def _gradient_run(cfg: StudyConfig, ctx) -> dict:
    common = dict(ensemble="batch", lr=cfg.gradient_lr, schedule="constant", eval_every=1,
                  epochs=cfg.gradient_epochs)
    arms = {label: {"gamma": g, "width": w, "curves": []} for label, g, w in _gradient_arms(cfg)}
    base = _gradient_arms(cfg)[0][0]
    ctx.prefetch([dict(members=m, gamma=gamma, width=width, seed=ctx.seed(s), **common)
                  for s in range(cfg.seeds) for _, gamma, width in _gradient_arms(cfg) for m in cfg.gradient_members
                  if not (m == 1 and width == 1.0 and gamma == "M")])
    for s in range(cfg.seeds):
        for label, gamma, width in _gradient_arms(cfg):
            for m in cfg.gradient_members:
                reuse = m == 1 and width == 1.0 and gamma == "M"
                if reuse:  # γ(1) = 1: the same training as the γ = 1 arm
                    curve = dict(next(c for c in arms[base]["curves"] if c["seed"] == s and c["members"] == 1))
                else:
                    r = ctx.try_train(members=m, gamma=gamma, width=width, seed=ctx.seed(s), **common)
                    curve = {"seed": s, "members": m, "diverged": r is None,
                             "val_member_accuracy": [] if r is None else [h.get("val_member_accuracy")
                                                                          for h in r.history],
                             "train_loss": [] if r is None else [h["train_loss"] for h in r.history]}
                arms[label]["curves"].append(curve)
    early = max(1, cfg.gradient_epochs // 4)
    last = cfg.gradient_epochs
    spreads = []
    for label, arm in arms.items():
        for s in range(cfg.seeds):
            curves = [c["val_member_accuracy"] for c in arm["curves"] if c["seed"] == s]
            spreads.append({"arm": label, "seed": s, "early": _spread(curves, early), "last": _spread(curves, last)})
    labels = list(arms)

    def spread_of(label, s, when):
        return next(x[when] for x in spreads if x["arm"] == label and x["seed"] == s)

    def ratio(s):
        a, b = spread_of(labels[1], s, "early"), spread_of(labels[0], s, "early")
        return None if a is None or not b else a / b

    measured = {"spread_ratio": measure([ratio(s) for s in range(cfg.seeds)]),
                "wide_minus_base": measure([_diff(spread_of(labels[2], s, "last"), spread_of(labels[1], s, "last"))
                                            for s in range(cfg.seeds)])}
    mean_spread = {lab: {w: measure([x[w] for x in spreads if x["arm"] == lab]) for w in ("early", "last")}
                   for lab in labels}
    reading = [
        f"Spread of the members' validation accuracy across M = {', '.join(map(str, cfg.gradient_members))} at "
        f"epoch {early} (mean over {cfg.seeds} seeds): " + ", ".join(
            f"{fmt(mean_spread[lab]['early']['mean'])} with {lab}" for lab in labels) + f"; at epoch {last}: "
        + ", ".join(f"{fmt(mean_spread[lab]['last']['mean'])} with {lab}" for lab in labels) + ".",
    ]
    rows = [{"arm": lab, "seed": c["seed"], "members": c["members"], "epoch": e + 1,
             "val_member_accuracy": c["val_member_accuracy"][e], "train_loss": c["train_loss"][e]}
            for lab, a in arms.items() for c in a["curves"] for e in range(len(c["train_loss"]))]
    return {"results": {"arms": arms, "spreads": spreads, "early_epoch": early, "last_epoch": last},
            "tables": {"gradient_curves": rows, "gradient_spreads": spreads},
            "measured": measured, "scale": _scale(cfg, _members_text(cfg.gradient_members), None,
                                                  epochs=cfg.gradient_epochs),
            "reading": reading, "headline": reading[0]}


def _gradient_plot(record: dict, folder: Path) -> list[Path]:
    arms = record["results"]["arms"]
    fig, ax = axes(len(arms), height=3.4)
    cmap = pyplot().get_cmap("viridis")
    for a, (label, arm) in zip(ax, arms.items(), strict=True):
        ms = sorted({c["members"] for c in arm["curves"]})
        for i, m in enumerate(ms):
            curves = [c["val_member_accuracy"] for c in arm["curves"] if c["members"] == m and c["val_member_accuracy"]]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            ys = np.mean([[v if v is not None else np.nan for v in c[:n]] for c in curves], axis=0)
            a.plot(range(1, n + 1), ys, "-", color=cmap(i / max(1, len(ms) - 1)), label=f"M = {m}")
        a.set_title(label, fontsize=10)
        a.set_xlabel("epoch")
        a.set_ylabel("mean member validation accuracy")
    return [finish(fig, ax, folder / "gradient.png")]


_GRADIENT_LABELS = {"spread_ratio": "early spread across M with γ = M / with γ = 1",
                    "wide_minus_base": "spread across M at the last epoch, γ = M: wide − reference width"}

GRADIENT_CLAIMS = (
    Claim("ee.gradient.scaling", "ee", "EE §5, Fig. 4",
          "With γ(M) = M the learning trajectories of ensembles of different sizes are almost identical in the early "
          "epochs (members train independently); with γ(M) = 1 they are not.",
          "trajectories coincide early with γ = M", "spread_ratio", _GRADIENT_LABELS,
          criterion=Test("spread_ratio", "<", 0.5, k=1), weaker=Test("spread_ratio", "<", 1.0)),
    Claim("ee.gradient.width", "ee", "EE §5, Fig. 4",
          "The period of independent training lasts longer for wider networks.",
          "longer at larger width", "wide_minus_base", _GRADIENT_LABELS,
          criterion=Test("wide_minus_base", "<", 0.0, k=1), weaker=Test("wide_minus_base", "<", 0.0)),
)


# --------------------------------------------------------------------------------------------------
# LLD learning rates and the effective γ(M) (EE Fig. 5)

CRITERIA = (("test accuracy", "accuracy", max), ("train accuracy", "train_accuracy", max),
            ("early train loss", "early_loss", min))


def _lld_optimum(rows: list[dict], members: list[int]) -> list[dict]:
    optimum = []
    for m in members:
        pts = [r for r in rows if r["members"] == m and not r["diverged"]]
        entry = {"members": m}
        for name, key, pick in CRITERIA:
            usable = [r for r in pts if r[key] is not None]
            if not usable:
                entry[name] = None
                continue
            tie = "nll" if key == "accuracy" else "train_loss"
            sign = 1 if pick is max else -1
            entry[name] = max(usable, key=lambda r, k=key, t=tie, s=sign: (s * r[k], -r[t]))["lr"]
        optimum.append(entry)
    return optimum


def _lld_run(cfg: StudyConfig, ctx) -> dict:
    early = max(1, cfg.epochs // 3)
    rows, optimum, gammas = [], [], []
    ctx.prefetch([dict(ensemble="lld", members=m, lr=lr, seed=ctx.seed(s))
                  for s in range(cfg.seeds) for m in cfg.lld_members for lr in cfg.lld_lrs])
    for s in range(cfg.seeds):
        seed_rows = []
        for m in cfg.lld_members:
            for lr in cfg.lld_lrs:
                r = ctx.try_train(ensemble="lld", members=m, lr=lr, seed=ctx.seed(s))
                seed_rows.append({"seed": s, "members": m, "lr": lr, **row_metrics(r),
                                  "early_loss": None if r is None else finite(r.history[early - 1]["train_loss"]),
                                  "train_loss": None if r is None else r.metrics["train"]["nll"]})
        rows += seed_rows
        opt = _lld_optimum(seed_rows, cfg.lld_members)
        base = next((o for o in opt if o["members"] == 1), None)
        for o in opt:
            g = {"seed": s, "members": o["members"]}
            for name, _, _ in CRITERIA:
                usable = base is not None and base.get(name) and o.get(name)
                g[name] = o["members"] * o[name] / base[name] if usable else None
            gammas.append(g)
        optimum += [{"seed": s, **o} for o in opt]

    def factor(name, s):
        dev = [abs(math.log(g[name] / g["members"])) for g in gammas if g["seed"] == s and g[name]]
        return max(dev) if dev else None

    keys = {"test accuracy": "log_factor_test", "train accuracy": "log_factor_train",
            "early train loss": "log_factor_early"}
    measured = {keys[name]: measure([factor(name, s) for s in range(cfg.seeds)]) for name, _, _ in CRITERIA}
    lrs = cfg.lld_lrs
    step = max(b / a for a, b in zip(lrs, lrs[1:], strict=False)) if len(lrs) > 1 else float("nan")
    reading = ["Optimal learning rate per M (" + ", ".join(n for n, _, _ in CRITERIA) + "), seed 0: " + "; ".join(
        f"M = {o['members']}: " + " / ".join(fmt(o[n], "g") for n, _, _ in CRITERIA) for o in optimum
        if o["seed"] == 0) + "."]
    reading.append("Largest |log(γ_eff(M)/M)| over M (mean ± std over seeds): " + ", ".join(
        f"{name} {fmt(measured[keys[name]]['mean'], '.2f')} ± {fmt(measured[keys[name]]['std'], '.2f')}"
        for name, _, _ in CRITERIA) + f" (log 3 = {LOG3:.2f}); the learning-rate grid moves in steps of up to "
        f"×{step:.1f} (log {math.log(step):.2f}), so one grid step is the resolution.")
    diverged = sum(r["diverged"] for r in rows)
    if diverged:
        reading.append(f"{diverged} of {len(rows)} trainings diverged (large learning rates); they count as failed.")
    mean_gamma = aggregate(gammas, ("members",), [n for n, _, _ in CRITERIA])
    return {"results": {"rows": rows, "optimum": optimum, "gamma": gammas, "gamma_mean": mean_gamma,
                        "early_epoch": early},
            "tables": {"lld": rows, "lld_optimum": optimum, "lld_gamma": gammas},
            "measured": measured, "scale": _scale(cfg, _members_text(cfg.lld_members), None,
                                                  lrs=f"{min(lrs):g}–{max(lrs):g}"),
            "reading": reading, "headline": reading[1]}


def _lld_plot(record: dict, folder: Path) -> list[Path]:
    res = record["results"]
    fig, ax = axes(2, width=4.6)
    cmap = pyplot().get_cmap("viridis")
    mean = aggregate(res["rows"], ("members", "lr"), ("accuracy",))
    ms = sorted({r["members"] for r in mean})
    for i, m in enumerate(ms):
        pts = sorted((r for r in mean if r["members"] == m), key=lambda r: r["lr"])
        errorbar(ax[0], pts, "lr", "accuracy", label=f"M = {m}", fmt="o-", ms=3, color=cmap(i / max(1, len(ms) - 1)))
    ax[0].set_xscale("log")
    ax[0].set_xlabel("learning rate η")
    ax[0].set_title("LLD ensemble test accuracy", fontsize=10)
    for name, _, _ in CRITERIA:
        errorbar(ax[1], res["gamma_mean"], "members", name, label=name, fmt="o-")
    ax[1].plot(ms, ms, "k--", lw=1, label="γ(M) = M")
    ax[1].set_xscale("log", base=2)
    ax[1].set_yscale("log", base=2)
    ax[1].set_xlabel("ensemble size M")
    ax[1].set_title("effective γ(M) = M·η(M)/η(1)", fontsize=10)
    return [finish(fig, ax, folder / "lld.png")]


_LLD_LABELS = {"log_factor_test": "max_M |log(γ_eff/M)|, η by test accuracy",
               "log_factor_train": "max_M |log(γ_eff/M)|, η by train accuracy",
               "log_factor_early": "max_M |log(γ_eff/M)|, η by early train loss"}

LLD_CLAIMS = (
    Claim("ee.lld.gamma", "ee", "EE §5, Fig. 5",
          "Optimal learning rates of LLD ensembles give an effective γ(M) = M·η(M)/η(1) with moderate corrections to "
          "γ(M) = M: |log(γ(M)/M)| < log 3 for M < 50.", "|log(γ/M)| < log 3 = 1.10", "log_factor_early",
          _LLD_LABELS,
          criterion=(Test("log_factor_test", "<", LOG3, k=1), Test("log_factor_train", "<", LOG3, k=1),
                     Test("log_factor_early", "<", LOG3, k=1)),
          weaker=Test("log_factor_early", "<", LOG3),
          note="η(M) is located on the preset's learning-rate grid"),
)


# --------------------------------------------------------------------------------------------------
# MC dropout: fixed vs resampled masks (EE App. D.3)

def _mcd_arms(cfg: StudyConfig) -> list[tuple[str, str, bool]]:
    """(label, mask distribution, resampled). Fixed masks train like a BatchEnsemble with frozen modulations
    (γ = M: each member its own step); resampled masks are classic dropout training, the mean loss over the M
    masks drawn at each step (γ = 1: every parameter is shared, γ = M would multiply the step by M)."""
    return [("centred N(0, 1), fixed masks", "normal:0,1", False),
            (f"shifted N(1, {cfg.mcd_sigma:g}²), resampled", f"normal:1,{cfg.mcd_sigma:g}", True),
            ("centred N(0, 1), resampled", "normal:0,1", True)]


def _mcd_run(cfg: StudyConfig, ctx) -> dict:
    rows, trained, classes = [], [], 10
    specs = [(s, label, resample, m, dict(ensemble="mc-dropout", members=m, modulation=spec, resample=resample,
                                         gamma="1" if resample else "M", seed=ctx.seed(s)))
             for s in range(cfg.seeds) for label, spec, resample in _mcd_arms(cfg) for m in cfg.mcd_members]
    ctx.prefetch([o for *_, o in specs])
    for s, label, resample, m, options in specs:
        r = ctx.try_train(**options)
        trained.append(r)
        if r is not None:
            classes = r.data.num_classes
        rows.append({"seed": s, "arm": label, "members": m, "resample": resample, **row_metrics(r)})
    big, small = max(cfg.mcd_members), min(cfg.mcd_members)
    fixed, shifted, centred = (a for a, _, _ in _mcd_arms(cfg))
    measured = {
        "corr_gap": per_seed(rows, lambda rs: _diff(_value(_at(rs, arm=shifted, members=big), "correlation"),
                                                     _value(_at(rs, arm=fixed, members=big), "correlation")),
                             cfg.seeds),
        "centred_over_chance": per_seed(
            rows, lambda rs: None if (v := _value(_at(rs, arm=centred, members=big), "member_accuracy")) is None
            else v * classes, cfg.seeds),
        "shifted_member_change": per_seed(
            rows, lambda rs: _diff(_value(_at(rs, arm=shifted, members=big), "member_accuracy"),
                                   _value(_at(rs, arm=shifted, members=small), "member_accuracy")), cfg.seeds),
    }
    mean = aggregate(rows, ("arm", "members"))
    by = {(r["arm"], r["members"]): r for r in mean}
    reading = [f"At M = {big}, mean over {cfg.seeds} seeds: member correlation " + ", ".join(
        f"{fmt(by[(a, big)]['correlation'], '.2f')} ({a})" for a in (fixed, shifted, centred)) + "; mean member "
        "accuracy " + ", ".join(f"{fmt(by[(a, big)]['member_accuracy'])} ({a})" for a in (fixed, shifted, centred))
        + "."]
    fixed_rows = ok([by[(fixed, m)] for m in cfg.mcd_members])
    if fixed_rows:
        top = max(fixed_rows, key=lambda r: r["accuracy"])
        reading.append(f"Fixed centred masks: the most accurate ensemble (mean over seeds) has M = {top['members']} "
                       f"(accuracy {top['accuracy']:.3f}).")
    diverged = sum(r["diverged"] for r in rows)
    if diverged:
        reading.append(f"{diverged} of {len(rows)} trainings diverged (no numbers).")
    return {"results": {"rows": rows, "mean": mean}, "tables": {"mcdropout": rows, "mcdropout_mean": mean},
            "measured": measured, "scale": _scale(cfg, _members_text(cfg.mcd_members), _n_test(trained)),
            "reading": reading, "headline": reading[0]}


def _mcd_plot(record: dict, folder: Path) -> list[Path]:
    return _curves_plot(record["results"]["mean"], "arm", str, folder / "mcdropout.png")


_MCD_LABELS = {"corr_gap": "correlation: resampled shifted − fixed centred masks, largest M",
               "centred_over_chance": "member accuracy of resampled centred masks / chance, largest M",
               "shifted_member_change": "member accuracy of resampled shifted masks: largest − smallest M"}

MCD_CLAIMS = (
    Claim("ee.mcd.regimes", "ee", "EE App. D.3, Figs. 9, 11",
          "Shifted Gaussian masks resampled at every step are in the collective regime (highly correlated members); "
          "a fixed set of centred masks is in the independent regime (low correlation).",
          "collective vs independent", "corr_gap", _MCD_LABELS,
          criterion=Test("corr_gap", ">", 0.0, k=1), weaker=Test("corr_gap", ">", 0.0)),
    Claim("ee.mcd.centred", "ee", "EE App. D.3, Fig. 10",
          "Centred masks resampled at every step hardly learn anything.", "accuracy near chance",
          "centred_over_chance", _MCD_LABELS,
          criterion=Test("centred_over_chance", "<", 2.0, k=1), weaker=Test("centred_over_chance", "<", 2.0)),
    Claim("ee.mcd.shifted", "ee", "EE App. D.3, Fig. 9",
          "With resampled shifted masks, individual model accuracy does not suffer from increasing the ensemble "
          "size.", "no decrease with M", "shifted_member_change", _MCD_LABELS,
          criterion=Test("shifted_member_change", ">", -0.01, k=1), weaker=Test("shifted_member_change", ">", -0.01),
          note="'no decrease' declared as a change above −1 percentage point"),
)


# --------------------------------------------------------------------------------------------------
# Gradient orthogonality (EE Fig. 6 centre/right)

_ORTHO_ARMS = (("centred N(0, 1)", "normal:0,1"), ("shifted N(1/√2, 1/2)", f"shifted-normal:{SHIFTED:.6f}"))


def _reference_ensemble(cfg: StudyConfig, data, seed: int, **options):
    from ..training import TrainConfig, build_ensemble

    base = dict(dataset=cfg.dataset, model=cfg.model, widths=list(cfg.widths), seed=seed)
    base.update(options)
    return build_ensemble(TrainConfig(**base), data)


def _ortho_run(cfg: StudyConfig, ctx) -> dict:
    from ..kernels import gradient_cosines

    data = ctx.data(flatten=True)  # a width sweep: the reference MLP's depth at each width
    x, y = data.train.x[: cfg.ortho_samples], data.train.y[: cfg.ortho_samples]
    depth = len(cfg.widths)
    rows = []
    for label, spec in _ORTHO_ARMS:
        for s in range(cfg.seeds):
            for w in cfg.ortho_widths:
                model = _reference_ensemble(cfg, data, ctx.seed(s), ensemble="batch", members=cfg.ortho_members,
                                            model="mlp", widths=[int(w)] * depth, modulation=spec)
                cos = gradient_cosines(model, x, y)
                rows.append({"modulation": label, "seed": s, "width": w,
                             "mean": float(cos[~torch.eye(cfg.ortho_members, dtype=torch.bool)].mean())})
                ctx.tick()

    def fit(label):
        return measure([slope([r["width"] for r in rows if r["modulation"] == label and r["seed"] == s],
                              [r["mean"] for r in rows if r["modulation"] == label and r["seed"] == s])
                        for s in range(cfg.seeds)])

    measured = {"slope_centred": fit(_ORTHO_ARMS[0][0]), "slope_shifted": fit(_ORTHO_ARMS[1][0])}
    mean = aggregate(rows, ("modulation", "width"), ("mean",))
    c = [r for r in mean if r["modulation"] == _ORTHO_ARMS[0][0]]
    sh = [r for r in mean if r["modulation"] == _ORTHO_ARMS[1][0]]
    reading = [f"Mean |cos| between members' gradients of the shared weights at initialisation: {c[0]['mean']:.3f} → "
               f"{c[-1]['mean']:.3f} over widths {cfg.ortho_widths[0]}–{cfg.ortho_widths[-1]} with centred "
               f"modulations (fitted exponent {fmt(measured['slope_centred']['mean'], '.2f')} ± "
               f"{fmt(measured['slope_centred']['std'], '.2f')}), {sh[0]['mean']:.3f} → {sh[-1]['mean']:.3f} with "
               f"shifted ones (exponent {fmt(measured['slope_shifted']['mean'], '.2f')} ± "
               f"{fmt(measured['slope_shifted']['std'], '.2f')})."]
    return {"results": {"rows": rows, "mean": mean}, "tables": {"orthogonality": rows},
            "measured": measured, "scale": _scale(cfg, cfg.ortho_members, None, samples=cfg.ortho_samples,
                                                  widths=f"{cfg.ortho_widths[0]}–{cfg.ortho_widths[-1]}"),
            "reading": reading, "headline": reading[0]}


def _ortho_plot(record: dict, folder: Path) -> list[Path]:
    fig, ax = axes(1, width=5.0)
    a = ax[0]
    mean = record["results"]["mean"]
    for label, _ in _ORTHO_ARMS:
        pts = [r for r in mean if r["modulation"] == label]
        line = errorbar(a, pts, "width", "mean", label=label, fmt="o")
        k = slope([r["width"] for r in pts], [r["mean"] for r in pts])
        if k is not None:
            ws = np.array([r["width"] for r in pts], dtype=float)
            grid = np.geomspace(ws.min(), ws.max(), 50)
            a.plot(grid, pts[0]["mean"] * (grid / ws.min()) ** k, "-", color=line[0].get_color(), lw=1,
                   label=f"fit ∝ width^{k:.2f}")
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("hidden width")
    a.set_ylabel("mean |cos| between members' gradients")
    a.set_title("gradient orthogonality at initialisation", fontsize=10)
    return [finish(fig, ax, folder / "orthogonality.png")]


_ORTHO_LABELS = {"slope_centred": "exponent of mean |cos| vs width, centred modulations",
                 "slope_shifted": "exponent of mean |cos| vs width, shifted modulations"}

ORTHO_CLAIMS = (
    Claim("ee.ortho.centred", "ee", "EE §5, Fig. 6 (centre)",
          "With centred modulations the members' loss gradients w.r.t. the shared weights become orthogonal: the mean "
          "|cos| scales with the relative width d as d⁻¹.", "exponent −1", "slope_centred", _ORTHO_LABELS,
          criterion=Test("slope_centred", "in", (-1.2, -0.8), k=1), weaker=Test("slope_centred", "<", -0.3, k=1)),
    Claim("ee.ortho.shifted", "ee", "EE §5, Fig. 6 (right)",
          "With shifted (non-centred) modulations the gradients are not orthogonal in general.",
          "no decay with width", "slope_shifted", _ORTHO_LABELS,
          criterion=Test("slope_shifted", ">", -0.25, k=1), weaker=Test("slope_shifted", ">", -0.25)),
)


# --------------------------------------------------------------------------------------------------
# Gradient norms with and without input/output modulations (EE Fig. 6 left, App. C)

def _gradnorm_run(cfg: StudyConfig, ctx) -> dict:
    from ..kernels import member_gradients

    data = ctx.data(flatten=cfg.model == "mlp")
    x, y = data.train.x[: cfg.gradnorm_samples], data.train.y[: cfg.gradnorm_samples]
    rows = []
    for s in range(cfg.seeds):
        for io in (False, True):
            for d in range(cfg.gradnorm_draws):
                model = _reference_ensemble(cfg, data, ctx.seed(s) + 7919 * d, ensemble="batch",
                                            members=cfg.gradnorm_members, modulation="normal:0,1", modulate_input=io,
                                            modulate_output=io)
                norms = member_gradients(model, x, y).norm(dim=1)
                rows += [{"seed": s, "io": io, "draw": d, "member": i, "norm": float(v)} for i, v in enumerate(norms)]
                ctx.tick()

    def decades(io, s):
        v = np.array([r["norm"] for r in rows if r["io"] == io and r["seed"] == s])
        return float(np.log10(np.quantile(v, 0.95) / np.quantile(v, 0.05)))

    spread = {io: measure([decades(io, s) for s in range(cfg.seeds)]) for io in (False, True)}
    measured = {"spread_increase": measure([decades(True, s) - decades(False, s) for s in range(cfg.seeds)]),
                "spread_hidden": spread[False], "spread_io": spread[True]}
    reading = [f"Spread of the members' gradient norms at initialisation (log₁₀ of the 95th / 5th percentile over "
               f"{cfg.gradnorm_draws} initialisations × {cfg.gradnorm_members} members, mean over {cfg.seeds} seeds): "
               f"{fmt(spread[False]['mean'], '.2f')} decades with hidden-layer modulations only, "
               f"{fmt(spread[True]['mean'], '.2f')} with the inputs and outputs modulated too."]
    return {"results": {"rows": rows, "spread": {str(k): v for k, v in spread.items()}},
            "tables": {"gradnorms": rows}, "measured": measured,
            "scale": _scale(cfg, cfg.gradnorm_members, None, draws=cfg.gradnorm_draws),
            "reading": reading, "headline": reading[0]}


def _gradnorm_plot(record: dict, folder: Path) -> list[Path]:
    rows = record["results"]["rows"]
    fig, ax = axes(1, width=5.0)
    for io, label in ((False, "hidden layers modulated"), (True, "+ input and output modulations")):
        v = np.log10([r["norm"] for r in rows if r["io"] == io])
        ax[0].hist(v, bins=40, alpha=0.6, label=label)
    ax[0].set_xlabel("log₁₀ ‖∇_w L_α‖ at initialisation")
    ax[0].set_ylabel("members × initialisations")
    ax[0].set_title("gradient norms (EE Fig. 6 left)", fontsize=10)
    return [finish(fig, ax, folder / "gradnorms.png")]


GRADNORM_CLAIMS = (
    Claim("ee.gradnorm.io", "ee", "EE §5, Fig. 6 (left), App. C",
          "Modulating the network's inputs and outputs increases the spread of the members' gradient magnitudes by "
          "several orders of magnitude (which explains unstable training).", "several orders of magnitude",
          "spread_increase",
          {"spread_increase": "increase of the gradient-norm spread (decades, 95th/5th percentile)"},
          criterion=Test("spread_increase", ">=", 2.0, k=1), weaker=Test("spread_increase", ">", 0.0, k=1),
          note="'several orders' declared as ≥ 2 decades; the paper's input layer has 3 RGB channels"),
)


# --------------------------------------------------------------------------------------------------
# NTK constancy during training (EE App. B.6)

def regression_digits(n: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` training digits and 8 probe digits, standardised and scaled to x·x/d = 1 (the NTK scale), with
    one-hot targets: a regression problem for gradient-flow experiments."""
    from ..data import load_dataset

    data = load_dataset("digits", seed=seed, flatten=True)
    x = data.train.x.to(dtype)
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(x.shape[1])
    y = torch.nn.functional.one_hot(data.train.y, data.num_classes).to(dtype)
    return x[:n], y[:n], x[n : n + 8]


def _constancy_run(cfg: StudyConfig, ctx) -> dict:
    from ..ensembles import BatchEnsemble
    from ..ensembles.graph import seeded
    from ..kernels import kernel_drift
    from ..models import MLP

    rows = []
    for s in range(cfg.seeds):
        x, y, probe = regression_digits(cfg.constancy_samples, ctx.seed(s))
        for w in cfg.constancy_widths:
            with seeded(ctx.seed(s) + w):
                net = MLP(x.shape[1], [w] * len(cfg.widths), y.shape[1], parameterization="ntk").double()
            model = BatchEnsemble(net, cfg.constancy_members, u="normal:0,1", v="normal:0,1", seed=ctx.seed(s) + w)
            r = kernel_drift(model, x, y, probe, lr=cfg.constancy_lr, steps=cfg.constancy_steps)
            rows.append({"seed": s, "width": w, "relative": r["relative_ensemble"],
                         "member_relative": float(r["relative"].mean()), "loss_start": float(r["loss_start"].mean()),
                         "loss_end": float(r["loss_end"].mean())})
            ctx.tick()
    measured = {"slope": measure([slope([r["width"] for r in rows if r["seed"] == s],
                                        [r["relative"] for r in rows if r["seed"] == s]) for s in range(cfg.seeds)])}
    mean = aggregate(rows, ("width",), ("relative", "member_relative", "loss_start", "loss_end"))
    reading = ["Relative change ‖Θ_t − Θ₀‖/‖Θ₀‖ of the whole BatchEnsemble NTK (cross-member blocks included) after "
               f"{cfg.constancy_steps} full-batch gradient steps of size {cfg.constancy_lr:g} on "
               f"{cfg.constancy_samples} digits: " + ", ".join(f"{r['relative']:.4f} (width {r['width']})"
                                                                for r in mean)
               + f"; training loss {mean[-1]['loss_start']:.3f} → {mean[-1]['loss_end']:.3f} at the widest; "
               f"fitted exponent {fmt(measured['slope']['mean'], '.2f')} ± {fmt(measured['slope']['std'], '.2f')}."]
    return {"results": {"rows": rows, "mean": mean}, "tables": {"constancy": rows}, "measured": measured,
            "scale": {"data": f"digits ({cfg.constancy_samples} train)", "model": f"MLP {len(cfg.widths)} × width, NTK "
                      "param.", "M": cfg.constancy_members, "seeds": cfg.seeds,
                      "widths": f"{cfg.constancy_widths[0]}–{cfg.constancy_widths[-1]}"},
            "reading": reading, "headline": reading[0]}


def _constancy_plot(record: dict, folder: Path) -> list[Path]:
    fig, ax = axes(1, width=5.0)
    mean = record["results"]["mean"]
    errorbar(ax[0], mean, "width", "relative", label="whole ensemble NTK", fmt="o-")
    errorbar(ax[0], mean, "width", "member_relative", label="members' own NTK blocks", fmt="s--")
    ws = np.array([r["width"] for r in mean], dtype=float)
    ax[0].plot(ws, mean[0]["relative"] * ws[0] / ws, "k:", lw=1, label="∝ 1/width")
    ax[0].set_xscale("log", base=2)
    ax[0].set_yscale("log")
    ax[0].set_xlabel("hidden width")
    ax[0].set_ylabel("‖Θ_t − Θ₀‖ / ‖Θ₀‖")
    ax[0].set_title("NTK change during training (EE App. B.6)", fontsize=10)
    return [finish(fig, ax, folder / "constancy.png")]


CONSTANCY_CLAIMS = (
    Claim("ee.constancy", "ee", "EE App. B.6",
          "The Embedded Ensemble NTK stays constant during training at infinite width; its deviation from the initial "
          "value is bounded as O(N⁻¹).", "exponent −1 (bound O(N⁻¹))", "slope",
          {"slope": "exponent of ‖Θ_t − Θ₀‖/‖Θ₀‖ vs width"},
          criterion=Test("slope", "<=", -0.8, k=1), weaker=Test("slope", "<", 0.0, k=1)),
)


# --------------------------------------------------------------------------------------------------
# Ablation (EE App. D.1, Fig. 7)

def _ablation_variants(cfg: StudyConfig) -> list[tuple[str, dict]]:
    return [
        ("baseline", dict(modulation="normal:0,1")),
        ("u only", dict(modulation="u=normal:0,1")),
        ("v only", dict(modulation="v=normal:0,1")),
        ("last layer u only", dict(modulation="u=normal:0,1", layers=[-1])),
        ("shifted N(1/√2, 1/2)", dict(modulation=f"shifted-normal:{SHIFTED:.6f}")),
        ("input/output modulations", dict(modulation="normal:0,1", modulate_input=True, modulate_output=True)),
        ("γ = 1", dict(modulation="normal:0,1", gamma="1")),
        (f"modulations lr ×{cfg.ablation_lr_factor:g}", dict(modulation="normal:0,1",
                                                             lr_individual=cfg.ablation_lr_factor * cfg.lr)),
    ]


def _ablation_run(cfg: StudyConfig, ctx) -> dict:
    rows, trained = [], []
    specs = [(s, label, dict(ensemble="batch", members=cfg.ablation_members, seed=ctx.seed(s), **options))
             for s in range(cfg.seeds) for label, options in _ablation_variants(cfg)]
    ctx.prefetch([o for *_, o in specs])
    for s, label, options in specs:
        r = ctx.try_train(**options)
        trained.append(r)
        rows.append({"seed": s, "variant": label, **row_metrics(r)})
    names = [label for label, _ in _ablation_variants(cfg)]

    def delta(variant, key):
        return per_seed(rows, lambda rs: _diff(_value(_at(rs, variant=variant), key),
                                               _value(_at(rs, variant="baseline"), key)), cfg.seeds)

    measured = {
        "corr_v_delta": delta("v only", "correlation"), "corr_shift_delta": delta(names[4], "correlation"),
        "acc_v_delta": delta("v only", "accuracy"), "acc_shift_delta": delta(names[4], "accuracy"),
        "acc_u_delta": delta("u only", "accuracy"),
        "corr_last": per_seed(rows, lambda rs: _value(_at(rs, variant="last layer u only"), "correlation"),
                              cfg.seeds),
        "acc_io_delta": delta("input/output modulations", "accuracy"),
        "acc_gamma1_delta": delta("γ = 1", "accuracy"),
        "acc_lr_delta": delta(names[7], "accuracy"),
    }
    mean = aggregate(rows, ("variant",))
    reading = [f"M = {cfg.ablation_members}, mean over {cfg.seeds} seeds — ensemble accuracy / member correlation: "
               + "; ".join(f"{r['variant']} {fmt(r['accuracy'])} / {fmt(r['correlation'], '.2f')}" for r in mean)
               + "."]
    diverged = [r["variant"] for r in mean if r["diverged"]]
    if diverged:
        reading.append("Diverged in some seeds: " + ", ".join(diverged) + ".")
    return {"results": {"rows": rows, "mean": mean}, "tables": {"ablation": rows, "ablation_mean": mean},
            "measured": measured, "scale": _scale(cfg, cfg.ablation_members, _n_test(trained)),
            "reading": reading, "headline": reading[0]}


def _ablation_plot(record: dict, folder: Path) -> list[Path]:
    mean = record["results"]["mean"]
    fig, ax = axes(2, width=5.2, height=3.6)
    names = [r["variant"] for r in mean]
    y = np.arange(len(names))
    for a, key, title in ((ax[0], "accuracy", "ensemble test accuracy"), (ax[1], "correlation", "member correlation")):
        vals = [r[key] if r[key] is not None else np.nan for r in mean]
        errs = [r.get(f"{key}_std") or 0.0 for r in mean]
        a.barh(y, vals, xerr=errs, color="C0", alpha=0.7, capsize=2)
        a.set_yticks(y, names, fontsize=8)
        a.invert_yaxis()
        finite_vals = [v for v in vals if v == v]
        if finite_vals and key == "accuracy":
            a.set_xlim(max(0.0, min(finite_vals) - 0.05), min(1.0, max(finite_vals) + 0.02))
        a.set_title(title, fontsize=10)
    return [finish(fig, ax, folder / "ablation.png")]


_ABL_LABELS = {
    "corr_v_delta": "correlation: v only − baseline", "corr_shift_delta": "correlation: shifted − baseline",
    "acc_v_delta": "accuracy: v only − baseline", "acc_shift_delta": "accuracy: shifted − baseline",
    "acc_u_delta": "accuracy: u only − baseline", "corr_last": "correlation with u on the last layer only",
    "acc_io_delta": "accuracy: input/output modulations − baseline", "acc_gamma1_delta": "accuracy: γ = 1 − baseline",
    "acc_lr_delta": "accuracy: modulations' lr × factor − baseline",
}

ABLATION_CLAIMS = (
    Claim("ee.ablation.dependence", "ee", "EE App. D.1, Fig. 7",
          "Only pre-activation modulations v, or modulations with non-zero mean, make the NTK non-diagonal: larger "
          "member correlations and lower ensemble accuracy than the baseline.",
          "higher correlation, lower accuracy", "corr_shift_delta", _ABL_LABELS,
          criterion=(Test("corr_v_delta", ">", 0.0, k=1), Test("corr_shift_delta", ">", 0.0, k=1),
                     Test("acc_v_delta", "<", 0.0), Test("acc_shift_delta", "<", 0.0)),
          weaker=(Test("corr_v_delta", ">", 0.0), Test("corr_shift_delta", ">", 0.0))),
    Claim("ee.ablation.u_only", "ee", "EE App. D.1, Fig. 7",
          "Post-activation modulations u alone suffice: ensemble accuracy and correlations roughly as the baseline's.",
          "≈ baseline", "acc_u_delta", _ABL_LABELS,
          criterion=Test("acc_u_delta", "in", (-0.01, 0.01), k=1), weaker=Test("acc_u_delta", "in", (-0.02, 0.02)),
          note="'roughly the same' declared as within ±1 point (±2 for partly)"),
    Claim("ee.ablation.last_layer", "ee", "EE App. D.1, Fig. 7",
          "Trainable modulations u on the last layer only give ≈ 100 % correlated members (they converge to the same "
          "minimum).", "≈ 100 % correlation", "corr_last", _ABL_LABELS,
          criterion=Test("corr_last", ">=", 0.95), weaker=Test("corr_last", ">=", 0.8)),
    Claim("ee.ablation.io", "ee", "EE App. D.1, Fig. 7",
          "Modulating the network's inputs and outputs leads to a severe drop in performance.", "severe drop",
          "acc_io_delta", _ABL_LABELS,
          criterion=Test("acc_io_delta", "<", 0.0, k=1), weaker=Test("acc_io_delta", "<", 0.0)),
    Claim("ee.ablation.gamma1", "ee", "EE App. D.1, Fig. 7",
          "Without gradient scaling of the shared parameters (γ = 1) the ensemble accuracy decreases slightly.",
          "slight decrease", "acc_gamma1_delta", _ABL_LABELS,
          criterion=Test("acc_gamma1_delta", "<", 0.0, k=1), weaker=Test("acc_gamma1_delta", "<", 0.0)),
    Claim("ee.ablation.modulation_lr", "ee", "EE App. D.1, Fig. 7",
          "A 5× larger learning rate for all modulations improves the ensemble accuracy.", "≈ +1 %", "acc_lr_delta",
          _ABL_LABELS, criterion=Test("acc_lr_delta", ">", 0.0, k=1), weaker=Test("acc_lr_delta", ">", 0.0)),
)


# --------------------------------------------------------------------------------------------------
# NTK interaction metrics at initialisation (EE App. D.2, Fig. 8)

_INTERACTION_ARMS = (("independent", "normal:0,1"), ("collective", f"shifted-normal:{SHIFTED:.6f}"))


def _interaction_run(cfg: StudyConfig, ctx) -> dict:
    from ..kernels import cross_to_same_ratio, ensemble_ntk, interaction_ratio, loss_ntk

    data = ctx.data(flatten=True)  # a width sweep: the reference MLP's depth at each width
    x, y = data.train.x[: cfg.interaction_samples].double(), data.train.y[: cfg.interaction_samples]
    depth = len(cfg.widths)
    m = cfg.interaction_members
    rows = []
    for param in ("ntk", "standard"):
        for label, spec in _INTERACTION_ARMS:
            for s in range(cfg.seeds):
                for w in cfg.interaction_widths:
                    model = _reference_ensemble(cfg, data, ctx.seed(s), ensemble="batch", members=m, model="mlp",
                                                widths=[int(w)] * depth, modulation=spec,
                                                parameterization=param).double()
                    offdiag = cross_to_same_ratio(ensemble_ntk(model, x).total())
                    nll = loss_ntk(model, x, y, kind="nll").total()
                    row = {"parameterization": param, "regime": label, "seed": s, "width": w, "offdiag": offdiag}
                    for k in range(1, m):
                        row[f"m{k}"] = interaction_ratio(nll, k)
                    rows.append(row)
                    ctx.tick()

    def pts(param, label, s):
        return [r for r in rows if r["parameterization"] == param and r["regime"] == label and r["seed"] == s]

    def fit(label, key, s, param="ntk"):
        return slope([r["width"] for r in pts(param, label, s)], [r[key] for r in pts(param, label, s)])

    def m_slope(label, s, param="ntk"):
        widest = max(pts(param, label, s), key=lambda r: r["width"])
        return slope(list(range(1, m)), [widest[f"m{k}"] for k in range(1, m)])

    seeds = range(cfg.seeds)
    measured = {
        "offdiag_slope_ind": measure([fit("independent", "offdiag", s) for s in seeds]),
        "offdiag_slope_coll": measure([fit("collective", "offdiag", s) for s in seeds]),
        "dynamics_wslope_ind": measure([fit("independent", f"m{m - 1}", s) for s in seeds]),
        "dynamics_mslope_ind": measure([m_slope("independent", s) for s in seeds]),
        "dynamics_mslope_coll": measure([m_slope("collective", s) for s in seeds]),
        "offdiag_slope_ind_standard": measure([fit("independent", "offdiag", s, "standard") for s in seeds]),
        "dynamics_wslope_ind_standard": measure([fit("independent", f"m{m - 1}", s, "standard") for s in seeds]),
    }
    measured["mslope_gap"] = measure([None if a is None or b is None else b - a for a, b in zip(
        [m_slope("independent", s) for s in seeds], [m_slope("collective", s) for s in seeds], strict=True)])
    mean = aggregate(rows, ("parameterization", "regime", "width"), ["offdiag"] + [f"m{k}" for k in range(1, m)])
    reading = ["Exponents in NTK parameterization (mean over seeds): off-diagonal/diagonal NTK² vs width "
               f"{fmt(measured['offdiag_slope_ind']['mean'], '.2f')} (independent), "
               f"{fmt(measured['offdiag_slope_coll']['mean'], '.2f')} (collective); Eq. (62) metric vs width "
               f"{fmt(measured['dynamics_wslope_ind']['mean'], '.2f')} (independent, m = {m - 1}); vs m at the widest "
               f"width {fmt(measured['dynamics_mslope_ind']['mean'], '.2f')} (independent), "
               f"{fmt(measured['dynamics_mslope_coll']['mean'], '.2f')} (collective).",
               "The same network in standard parameterization (the reference setup's): off-diagonal exponent "
               f"{fmt(measured['offdiag_slope_ind_standard']['mean'], '.2f')}, Eq. (62) metric vs width "
               f"{fmt(measured['dynamics_wslope_ind_standard']['mean'], '.2f')} (independent)."]
    return {"results": {"rows": rows, "mean": mean}, "tables": {"interaction": rows}, "measured": measured,
            "scale": _scale(cfg, m, None, samples=cfg.interaction_samples,
                            widths=f"{cfg.interaction_widths[0]}–{cfg.interaction_widths[-1]}"),
            "reading": reading, "headline": reading[0]}


def _interaction_plot(record: dict, folder: Path) -> list[Path]:
    mean = [r for r in record["results"]["mean"] if r["parameterization"] == "ntk"]
    fig, ax = axes(3)
    widest = max(r["width"] for r in mean)
    ks = sorted(int(k[1:]) for k in mean[0] if k.startswith("m") and k[1:].isdigit())
    for label, style in (("independent", "o-"), ("collective", "s--")):
        pts = [r for r in mean if r["regime"] == label]
        errorbar(ax[0], pts, "width", "offdiag", label=label, fmt=style)
        errorbar(ax[1], pts, "width", f"m{ks[-1]}", label=f"{label}, m = {ks[-1]}", fmt=style)
        r = next(r for r in pts if r["width"] == widest)
        ax[2].errorbar(ks, [r[f"m{k}"] for k in ks], yerr=[r.get(f"m{k}_std") or 0 for k in ks], fmt=style,
                       capsize=2, label=label)
    for a, xl, title in ((ax[0], "width", "mean Θ²_αβ / Θ²_αα (metric 1)"),
                         (ax[1], "width", "Eq. (62), other members (metric 2)"),
                         (ax[2], "m (other members)", f"Eq. (62) at width {widest}")):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel(xl)
        a.set_title(title, fontsize=10)
    return [finish(fig, ax, folder / "interaction.png")]


_INT_LABELS = {
    "offdiag_slope_ind": "exponent of mean Θ²_αβ/Θ²_αα vs width, independent",
    "offdiag_slope_coll": "exponent of mean Θ²_αβ/Θ²_αα vs width, collective",
    "dynamics_wslope_ind": "exponent of the Eq. (62) metric vs width, independent",
    "dynamics_mslope_ind": "exponent of the Eq. (62) metric vs m, independent",
    "dynamics_mslope_coll": "exponent of the Eq. (62) metric vs m, collective",
    "mslope_gap": "m-exponent collective − independent",
    "offdiag_slope_ind_standard": "the off-diagonal exponent, independent, standard parameterization",
    "dynamics_wslope_ind_standard": "the Eq. (62) width exponent, independent, standard parameterization",
}

INTERACTION_CLAIMS = (
    Claim("ee.interaction.offdiag", "ee", "EE App. D.2, Fig. 8 (left)",
          "Off-diagonal NTK elements decay with width as ~w⁻¹ in the independent regime and stay constant in the "
          "collective regime.", "exponent −1 / 0", "offdiag_slope_ind", _INT_LABELS,
          criterion=(Test("offdiag_slope_ind", "in", (-1.2, -0.8), k=1), Test("offdiag_slope_coll", ">", -0.25, k=1)),
          weaker=Test("offdiag_slope_ind", "<", -0.3, k=1),
          note="NTK parameterization (EE Eq. 15), where the kernel has its infinite-width limit; the standard "
               "parameterization's exponents are reported beside it"),
    Claim("ee.interaction.dynamics", "ee", "EE App. D.2, Fig. 8 (centre, right), Eq. (62)",
          "The weight of the other members in a member's loss dynamics scales as m/w in the independent regime and as "
          "m² in the collective regime.", "∝ m/w vs ∝ m²", "dynamics_mslope_coll", _INT_LABELS,
          criterion=(Test("dynamics_wslope_ind", "in", (-1.2, -0.8), k=1),
                     Test("dynamics_mslope_ind", "in", (0.8, 1.2), k=1),
                     Test("dynamics_mslope_coll", "in", (1.6, 2.4), k=1)),
          weaker=Test("mslope_gap", ">", 0.5, k=1), note="NTK parameterization (EE Eq. 15)"),
)


# --------------------------------------------------------------------------------------------------
# LLD with N(p, 1 − p²) masks (EE App. D.4, Fig. 12)

def _lldmask_run(cfg: StudyConfig, ctx) -> dict:
    rows, trained = [], []
    specs = [(s, p, m, dict(ensemble="lld", members=m, modulation=f"shifted-normal:{p:g}", lr=cfg.lldmask_lr,
                            seed=ctx.seed(s)))
             for s in range(cfg.seeds) for p in cfg.lldmask_p for m in cfg.lldmask_members]
    ctx.prefetch([o for *_, o in specs])
    for s, p, m, options in specs:
        r = ctx.try_train(**options)
        trained.append(r)
        rows.append({"seed": s, "p": p, "members": m, **row_metrics(r)})
    big, lo, hi = max(cfg.lldmask_members), min(cfg.lldmask_p), max(cfg.lldmask_p)
    n_test = _n_test(trained)

    def at(rs, p, key):
        return _value(_at(rs, p=p, members=big), key)

    gain_lo = per_seed(rows, lambda rs: at(rs, lo, "gain"), cfg.seeds)
    measured = {"corr_rise": per_seed(rows, lambda rs: _diff(at(rs, hi, "correlation"), at(rs, lo, "correlation")),
                                      cfg.seeds),
                "gain_drop": per_seed(rows, lambda rs: _diff(at(rs, lo, "gain"), at(rs, hi, "gain")), cfg.seeds),
                "gain_images": measure(None if gain_lo["mean"] is None or n_test is None
                                       else abs(gain_lo["mean"]) * n_test)}
    mean = aggregate(rows, ("p", "members"))
    at_big = [r for r in mean if r["members"] == big]
    reading = [f"LLD, M = {big}, mean over {cfg.seeds} seeds — correlation / ensemble − member accuracy: " + "; ".join(
        f"p = {r['p']:g}: {fmt(r['correlation'], '.2f')} / {fmt(r['gain'], '+.3f')}" for r in at_big) + "."]
    return {"results": {"rows": rows, "mean": mean}, "tables": {"lldmask": rows, "lldmask_mean": mean},
            "measured": measured, "scale": _scale(cfg, _members_text(cfg.lldmask_members), n_test),
            "reading": reading, "headline": reading[0]}


def _lldmask_plot(record: dict, folder: Path) -> list[Path]:
    return _curves_plot(record["results"]["mean"], "p", lambda p: f"p = {p:g}", folder / "lldmask.png", "viridis",
                        "LLD ensemble test accuracy")


_LLDMASK_LABELS = {"corr_rise": "correlation at the largest p − at the smallest p, largest M",
                   "gain_drop": "ensemble gain at the smallest p − at the largest p, largest M",
                   "gain_images": "|gain at the smallest p| in test images"}

LLDMASK_CLAIMS = (
    Claim("ee.lldmask.correlation", "ee", "EE App. D.4, Fig. 12",
          "With LLD masks N(p, 1 − p²) the mean member correlation increases with p.", "increases with p",
          "corr_rise", _LLDMASK_LABELS,
          criterion=Test("corr_rise", ">", 0.0, k=1), weaker=Test("corr_rise", ">", 0.0)),
    Claim("ee.lldmask.flatten", "ee", "EE App. D.4, Fig. 12",
          "Increasing p flattens the curves: the benefit of ensembling shrinks (all members become the same as p → 1).",
          "gain shrinks with p", "gain_drop", _LLDMASK_LABELS,
          criterion=Test("gain_drop", ">", 0.0, k=1), weaker=Test("gain_drop", ">", 0.0),
          identifiable=Test("gain_images", ">=", 1.0)),
)


def _count(*lists) -> int:
    return math.prod(len(x) for x in lists)


PARTS: tuple[Part, ...] = (
    Part("regime", "ee", "Regime transition", ("regime",),
         lambda c: c.seeds * _count(c.regime_p, c.regime_members), _regime_run, _regime_plot, REGIME_CLAIMS,
         reference=True, trains=True,
         summary="BatchEnsembles with every modulation N(p, 1 − p²) over a grid of p and M, next to the analytic "
                 "regime verdict of the infinite-width network."),
    Part("width", "ee", "Width scaling", ("width",),
         lambda c: c.seeds * len(c.width_multipliers) * (1 + len(c.width_members)), _width_run, _width_plot,
         WIDTH_CLAIMS, reference=True, trains=True,
         summary="Deep ensembles (sizes as member subsets of one training) and BatchEnsembles at several widths."),
    Part("gradient", "ee", "Gradient scaling γ(M)", ("gradient",),
         lambda c: c.seeds * (3 * len(c.gradient_members) - (1 in c.gradient_members)), _gradient_run,
         _gradient_plot, GRADIENT_CLAIMS, reference=True, trains=True,
         summary="Member learning curves for γ = 1, γ = M and γ = M at a larger width, constant learning rate."),
    Part("lld", "ee", "Last-layer dropout: learning rate and effective γ(M)", ("lld",),
         lambda c: c.seeds * _count(c.lld_members, c.lld_lrs), _lld_run, _lld_plot, LLD_CLAIMS, reference=True,
         trains=True,
         summary="LLD ensembles over a learning-rate grid; optimal η(M) by three criteria and γ_eff = M·η(M)/η(1)."),
    Part("mcdropout", "ee", "MC dropout: fixed vs resampled masks", ("mcd",),
         lambda c: c.seeds * 3 * len(c.mcd_members), _mcd_run, _mcd_plot, MCD_CLAIMS, reference=True, trains=True,
         summary="Fixed centred masks (γ = M), resampled shifted masks and resampled centred masks (γ = 1)."),
    Part("orthogonality", "ee", "Gradient orthogonality", ("ortho",),
         lambda c: c.seeds * 2 * len(c.ortho_widths), _ortho_run, _ortho_plot, ORTHO_CLAIMS, reference=True,
         summary="Mean |cos| between members' gradients of the shared weights at initialisation against width."),
    Part("gradnorms", "ee", "Gradient norms with input/output modulations", ("gradnorm",),
         lambda c: c.seeds * 2 * c.gradnorm_draws, _gradnorm_run, _gradnorm_plot, GRADNORM_CLAIMS, reference=True,
         summary="Members' gradient norms at initialisation with hidden-layer modulations only and with the inputs "
                 "and outputs modulated as in the original BatchEnsemble."),
    Part("constancy", "ee", "NTK constancy during training", ("constancy",),
         lambda c: c.seeds * len(c.constancy_widths), _constancy_run, _constancy_plot, CONSTANCY_CLAIMS,
         reference=True,
         summary="The whole BatchEnsemble NTK before and after full-batch gradient descent, against width (NTK "
                 "parameterization, float64)."),
    Part("ablation", "ee", "Ablation of the BatchEnsemble", ("ablation",),
         lambda c: c.seeds * 8, _ablation_run, _ablation_plot, ABLATION_CLAIMS, reference=True, trains=True,
         summary="The baseline BatchEnsemble against u only, v only, last-layer u only, shifted modulations, "
                 "input/output modulations, γ = 1 and a larger modulation learning rate."),
    Part("interaction", "ee", "NTK interaction metrics at initialisation", ("interaction",),
         lambda c: c.seeds * 4 * len(c.interaction_widths), _interaction_run, _interaction_plot, INTERACTION_CLAIMS,
         reference=True,
         summary="Off-diagonal/diagonal NTK² and the Eq. (62) loss-dynamics metric in the independent and collective "
                 "regimes, against width and against the number of other members, in NTK and standard "
                 "parameterization."),
    Part("lldmask", "ee", "LLD with N(p, 1 − p²) masks", ("lldmask",),
         lambda c: c.seeds * _count(c.lldmask_p, c.lldmask_members), _lldmask_run, _lldmask_plot, LLDMASK_CLAIMS,
         reference=True, trains=True, summary="Last-layer dropout ensembles with masks N(p, 1 − p²) over p and M."),
)
