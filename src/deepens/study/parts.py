"""The study's parts: each trains what its figure of the Embedded Ensembles paper (EE §5, App. C–D) or the
power-laws paper needs, returns every number of that figure, a plain-language reading of them, and draws
the figure.

A part is a :class:`Part`: ``run(config, ctx)`` returns ``{"results": ..., "tables": {name: rows},
"reading": [sentences], "headline": sentence}``; ``plot(record, folder)`` writes its PNG figures. Trainings
go through ``ctx.train`` (the deepens trainer, in memory), so a part never touches a run directory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DeepensError
from ..io.figures import pyplot, save_png
from .config import StudyConfig

__all__ = ["Part", "PARTS", "part_names"]


@dataclass(frozen=True)
class Part:
    name: str
    title: str
    prefix: str  # the config fields it reads besides the common ones
    claim: str  # the paper's corresponding claim, quoted or paraphrased with its figure
    units: Callable[[StudyConfig], int]  # progress units (trainings or kernel evaluations)
    run: Callable[[StudyConfig, object], dict]
    plot: Callable[[dict, Path], list[Path]]


def _finite(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _fmt(x, spec=".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


_METRICS = ("accuracy", "member_accuracy", "nll", "ece", "correlation", "gain", "train_accuracy",
            "train_member_accuracy")


def _row_metrics(result, *, test: dict | None = None) -> dict:
    """Test (and train) metrics of a training, or ``diverged`` with every metric None when it diverged
    (``result`` None: ``ctx.try_train`` caught the divergence)."""
    if result is None and test is None:
        return {"diverged": True, **dict.fromkeys(_METRICS)}
    test = test if test is not None else result.metrics["test"]
    out = {"diverged": False, "accuracy": test["accuracy"], "member_accuracy": test["member_accuracy"],
           "nll": test["nll"], "ece": test["ece"], "correlation": _finite(test["correlation"]), "gain": test["gain"]}
    if result is not None:
        out["train_accuracy"] = result.metrics["train"]["accuracy"]
        out["train_member_accuracy"] = result.metrics["train"]["member_accuracy"]
    return out


def _ok(rows: list[dict], key: str = "accuracy") -> list[dict]:
    return [r for r in rows if r.get(key) is not None]


def _axes(n: int, width: float = 4.0, height: float = 3.3):
    plt = pyplot()
    fig, axes = plt.subplots(1, n, figsize=(width * n, height))
    return fig, np.atleast_1d(axes)


def _finish(fig, axes, path: Path) -> Path:
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


# --------------------------------------------------------------------------------------------------
# 1. Regime transition (EE Fig. 2)

def _regime_run(cfg: StudyConfig, ctx) -> dict:
    from ..kernels import Network, regime
    from ..layers import ShiftedNormal

    rows, theory = [], []
    for p in cfg.regime_p:
        dist = ShiftedNormal(p)
        verdict = regime(Network.mlp(len(cfg.widths), "relu", u=dist, v=dist))
        theory.append({"p": p, "verdict": verdict["verdict"], "ntk_ratio": verdict["ntk_ratio"],
                       "nngp_ratio": verdict["nngp_ratio"], "reason": verdict["reason"]})
        for m in cfg.regime_members:
            r = ctx.try_train(ensemble="batch", members=m, modulation=f"shifted-normal:{p:g}")
            rows.append({"p": p, "members": m, **_row_metrics(r)})
    trained = _ok(rows)
    big = max((r["members"] for r in trained), default=1)
    at_big = {r["p"]: r for r in trained if r["members"] == big}
    ps = sorted(at_big)
    reading = []
    if big > 1 and ps:
        corr = [at_big[p]["correlation"] for p in ps]
        jumps = [(corr[i + 1] - corr[i], ps[i], ps[i + 1]) for i in range(len(ps) - 1)]
        reading.append(
            f"At M = {big}, the correlation of the members' correct/wrong outputs rises from {corr[0]:.2f} at p = "
            f"{ps[0]:g} to {corr[-1]:.2f} at p = {ps[-1]:g}" + (
                f"; the largest step is between p = {max(jumps)[1]:g} and {max(jumps)[2]:g} (+{max(jumps)[0]:.2f})."
                if jumps else "."))
        gain = {p: at_big[p]["gain"] for p in ps}
        reading.append(
            "The ensemble's gain over its mean member is " + ", ".join(f"{gain[p]:+.3f} (p = {p:g})" for p in ps)
            + "; the ensemble accuracy is " + ", ".join(f"{at_big[p]['accuracy']:.3f}" for p in ps) + ".")
        best = max(ps, key=lambda p: at_big[p]["accuracy"])
        reading.append(f"The most accurate M = {big} ensemble uses p = {best:g}.")
    diverged = [f"p = {r['p']:g}, M = {r['members']}" for r in rows if r["diverged"]]
    if diverged:
        reading.append("Diverged (no numbers; γ = M multiplies the shared weights' step by M): "
                       + "; ".join(diverged) + ".")
    reading.append(
        "Analytically (infinite width) only p = 0 is independent; the cross/same ratios of the output covariance "
        "(NNGP) and of the NTK grow with p: " + ", ".join(
            f"{t['nngp_ratio']:.2f} / {t['ntk_ratio']:.2f} (p = {t['p']:g})" for t in theory) + ".")
    headline = reading[0] if reading else ""
    return {"results": {"rows": rows, "theory": theory}, "tables": {"regime": rows, "regime_theory": theory},
            "reading": reading, "headline": headline}


def _regime_plot(record: dict, folder: Path) -> list[Path]:
    rows, theory = record["results"]["rows"], {t["p"]: t for t in record["results"]["theory"]}
    fig, axes = _axes(4)
    keys = [("accuracy", "ensemble test accuracy"), ("member_accuracy", "mean member test accuracy"),
            ("train_member_accuracy", "mean member train accuracy"), ("correlation", "member correlation (test)")]
    cmap = pyplot().get_cmap("viridis")
    ps = sorted(theory)
    for i, p in enumerate(ps):
        pts = sorted((r for r in rows if r["p"] == p), key=lambda r: r["members"])
        t = theory[p]
        label = f"p = {p:g}: {t['verdict']}, cross/same NNGP {t['nngp_ratio']:.2f}, NTK {t['ntk_ratio']:.2f}"
        for ax, (key, _) in zip(axes, keys, strict=True):
            xs = [r["members"] for r in pts if r[key] is not None]
            ys = [r[key] for r in pts if r[key] is not None]
            ax.plot(xs, ys, "o-", color=cmap(i / max(1, len(ps) - 1)), label=label if ax is axes[0] else None)
    for ax, (_, title) in zip(axes, keys, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ensemble size M")
        ax.set_title(title, fontsize=10)
    return [_finish(fig, axes, folder / "regime.png")]


# --------------------------------------------------------------------------------------------------
# 2. Width scaling (EE Fig. 3)

def _width_run(cfg: StudyConfig, ctx) -> dict:
    from ..training import classification_metrics, predict_logits

    rows = []
    big = max(cfg.width_members)
    for k in cfg.width_multipliers:
        r = ctx.try_train(ensemble="deep", members=big, width=k)
        if r is not None:
            logits, labels = predict_logits(r.model, r.data.test), r.data.test.y
            per_member = r.metrics["params"]["total"] / big
        for m in cfg.width_members:
            test = None if r is None else classification_metrics(logits[:m], labels, curve=False)
            rows.append({"kind": "deep", "width": k, "members": m,
                         "params": None if r is None else int(round(per_member * m)),
                         **_row_metrics(None, test=test)})
        for m in cfg.width_members:
            r = ctx.try_train(ensemble="batch", members=m, width=k)
            rows.append({"kind": "batch", "width": k, "members": m,
                         "params": None if r is None else r.metrics["params"]["total"], **_row_metrics(r)})
    best = []
    for kind in ("batch", "deep"):
        for k in cfg.width_multipliers:
            pts = _ok([r for r in rows if r["kind"] == kind and r["width"] == k])
            if not pts:
                continue
            top = max(pts, key=lambda r: (r["accuracy"], -r["nll"]))
            best.append({"kind": kind, "width": k, "best_members": top["members"], "accuracy": top["accuracy"],
                         "params": top["params"]})
    # at matched parameters: for each BatchEnsemble, the best deep ensemble with no more parameters
    matched = []
    for r in _ok([r for r in rows if r["kind"] == "batch"]):
        rivals = [d for d in _ok(rows) if d["kind"] == "deep" and d["params"] <= r["params"]]
        if rivals:
            d = max(rivals, key=lambda d: d["accuracy"])
            matched.append({"width": r["width"], "members": r["members"], "params": r["params"],
                            "batch_accuracy": r["accuracy"], "deep_accuracy": d["accuracy"],
                            "deep_width": d["width"], "deep_members": d["members"], "deep_params": d["params"]})
    be_best = [b for b in best if b["kind"] == "batch"]
    reading = [
        "The best BatchEnsemble size per width: " + ", ".join(f"{b['best_members']} at {b['width']:g}×"
                                                                for b in be_best) + "; deep ensembles: "
        + ", ".join(f"{b['best_members']} at {b['width']:g}×" for b in best if b["kind"] == "deep") + ".",
    ]
    sizes = [b["best_members"] for b in be_best]
    grows = all(a <= b for a, b in zip(sizes, sizes[1:], strict=False))
    reading.append("The BatchEnsembles' best M " + ("never decreases" if grows else "does not grow monotonically")
                   + " with width.")
    if matched:
        wins = sum(m["batch_accuracy"] >= m["deep_accuracy"] for m in matched)
        reading.append(f"At matched parameter counts, a BatchEnsemble is at least as accurate as the best deep "
                       f"ensemble with no more parameters in {wins} of {len(matched)} cases.")
    return {"results": {"rows": rows, "best": best, "matched": matched},
            "tables": {"width": rows, "width_best": best, "width_matched": matched},
            "reading": reading, "headline": reading[0]}


def _width_plot(record: dict, folder: Path) -> list[Path]:
    rows = record["results"]["rows"]
    widths = sorted({r["width"] for r in rows})
    cmap = pyplot().get_cmap("plasma")
    fig, axes = _axes(4)
    for i, k in enumerate(widths):
        color = cmap(i / max(1, len(widths)))
        for kind, style in (("batch", "o-"), ("deep", "s--")):
            pts = sorted(_ok([r for r in rows if r["kind"] == kind and r["width"] == k]), key=lambda r: r["members"])
            label = f"{'BE' if kind == 'batch' else 'DE'} {k:g}×"
            for ax, key in zip(axes[:3], ("accuracy", "member_accuracy", "correlation"), strict=True):
                xs = [r["members"] for r in pts if r[key] is not None]
                ax.plot(xs, [r[key] for r in pts if r[key] is not None], style, color=color, ms=4,
                        label=label if ax is axes[0] else None)
            axes[3].plot([r["params"] for r in pts], [r["accuracy"] for r in pts], style, color=color, ms=4)
    for ax, title in zip(axes[:3], ("ensemble test accuracy", "mean member test accuracy", "member correlation"),
                         strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ensemble size M")
        ax.set_title(title, fontsize=10)
    axes[3].set_xscale("log")
    axes[3].set_xlabel("parameters")
    axes[3].set_title("accuracy against parameters (BE ●, DE ■)", fontsize=10)
    return [_finish(fig, axes, folder / "width.png")]


# --------------------------------------------------------------------------------------------------
# 3. Gradient scaling (EE Fig. 4)

def _spread(curves: list[list[float]], epoch: int) -> float:
    values = [c[epoch - 1] for c in curves if len(c) >= epoch and c[epoch - 1] is not None]
    return float(max(values) - min(values)) if len(values) > 1 else 0.0


def _gradient_run(cfg: StudyConfig, ctx) -> dict:
    arms = {}
    common = dict(ensemble="batch", lr=cfg.gradient_lr, schedule="constant", eval_every=1)
    for label, gamma, width in (("γ = 1", "1", 1.0), ("γ = M", "M", 1.0),
                                (f"γ = M, width ×{cfg.gradient_wide:g}", "M", cfg.gradient_wide)):
        curves = []
        for m in cfg.gradient_members:
            if m == 1 and gamma == "M" and width == 1.0 and "γ = 1" in arms:
                curve = dict(arms["γ = 1"]["curves"][0])  # γ(1) = 1: the same training
            else:
                r = ctx.try_train(members=m, gamma=gamma, width=width, **common)
                curve = {"members": m, "diverged": r is None,
                         "val_member_accuracy": [] if r is None else [h.get("val_member_accuracy") for h in r.history],
                         "train_loss": [] if r is None else [h["train_loss"] for h in r.history]}
            curves.append(curve)
        arms[label] = {"gamma": gamma, "width": width, "curves": curves}
    early = max(1, cfg.epochs // 6)
    spreads = {label: {"early_epoch": early,
                       "val_member_accuracy": _spread([c["val_member_accuracy"] for c in a["curves"]], early),
                       "final": _spread([c["val_member_accuracy"] for c in a["curves"]], cfg.epochs)}
               for label, a in arms.items()}
    labels = list(arms)
    reading = [
        f"At epoch {early}, the members' validation accuracy differs across M = "
        f"{', '.join(map(str, cfg.gradient_members))} by " + ", ".join(
            f"{spreads[lab]['val_member_accuracy']:.3f} with {lab}" for lab in labels) + ".",
    ]
    if len(cfg.gradient_members) > 1:
        smaller = spreads[labels[1]]["val_member_accuracy"] < spreads[labels[0]]["val_member_accuracy"]
        reading.append("With γ = M the early trajectories are " + ("closer together" if smaller else
                                                                   "not closer together") + " than with γ = 1.")
    rows = [{"arm": lab, "members": c["members"], "epoch": e + 1, "val_member_accuracy": c["val_member_accuracy"][e],
             "train_loss": c["train_loss"][e]} for lab, a in arms.items() for c in a["curves"]
            for e in range(len(c["train_loss"]))]
    return {"results": {"arms": arms, "spreads": spreads}, "tables": {"gradient_curves": rows},
            "reading": reading, "headline": reading[-1]}


def _gradient_plot(record: dict, folder: Path) -> list[Path]:
    arms = record["results"]["arms"]
    fig, axes = _axes(len(arms), height=3.4)
    cmap = pyplot().get_cmap("viridis")
    for ax, (label, arm) in zip(axes, arms.items(), strict=True):
        n = len(arm["curves"])
        for i, c in enumerate(arm["curves"]):
            ys = c["val_member_accuracy"]
            ax.plot(range(1, len(ys) + 1), ys, "-", color=cmap(i / max(1, n - 1)), label=f"M = {c['members']}")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean member validation accuracy")
    return [_finish(fig, axes, folder / "gradient.png")]


# --------------------------------------------------------------------------------------------------
# 4. LLD learning rates and the effective γ(M) (EE Fig. 5)

CRITERIA = (("test accuracy", "accuracy", max), ("train accuracy", "train_accuracy", max),
            ("early train loss", "early_loss", min))


def _lld_run(cfg: StudyConfig, ctx) -> dict:
    early = max(1, cfg.epochs // 3)
    rows = []
    for m in cfg.lld_members:
        for lr in cfg.lld_lrs:
            r = ctx.try_train(ensemble="lld", members=m, lr=lr)
            rows.append({"members": m, "lr": lr, **_row_metrics(r),
                         "early_loss": None if r is None else _finite(r.history[early - 1]["train_loss"]),
                         "train_loss": None if r is None else r.metrics["train"]["nll"]})
    optimum = []
    for m in cfg.lld_members:
        pts = [r for r in rows if r["members"] == m and not r["diverged"]]
        entry = {"members": m}
        for name, key, pick in CRITERIA:
            usable = [r for r in pts if r[key] is not None]
            if not usable:
                entry[name] = None
                continue
            tie = "nll" if key == "accuracy" else "train_loss"
            sign = 1 if pick is max else -1
            top = max(usable, key=lambda r, k=key, t=tie, s=sign: (s * r[k], -r[t]))
            entry[name] = top["lr"]
        optimum.append(entry)
    base = next((o for o in optimum if o["members"] == 1), None)
    gammas = []
    for o in optimum:
        g = {"members": o["members"]}
        for name, _, _ in CRITERIA:
            ok = base is not None and base.get(name) and o.get(name)
            g[name] = o["members"] * o[name] / base[name] if ok else None
        gammas.append(g)
    reading = ["Optimal learning rate per M (" + ", ".join(n for n, _, _ in CRITERIA) + "): " + "; ".join(
        f"M = {o['members']}: " + " / ".join(_fmt(o[n], "g") for n, _, _ in CRITERIA) for o in optimum) + "."]
    factors = {}
    for name, _, _ in CRITERIA:
        dev = [abs(math.log(g[name] / g["members"])) for g in gammas if g[name]]
        if dev:
            factors[name] = math.exp(max(dev))
    if factors:
        lrs = cfg.lld_lrs
        step = max(b / a for a, b in zip(lrs, lrs[1:], strict=False)) if len(lrs) > 1 else float("nan")
        reading.append("The effective γ(M) = M·η(M)/η(1) stays within a factor " + ", ".join(
            f"{f:.1f} of M ({n})" for n, f in factors.items()) + f" (the paper: within a factor 3 for M < 50); the "
            f"learning-rate grid moves in steps of up to ×{step:.1f}, so one grid step is the resolution.")
    diverged = sum(r["diverged"] for r in rows)
    if diverged:
        reading.append(f"{diverged} of {len(rows)} trainings diverged (large learning rates); they count as failed.")
    return {"results": {"rows": rows, "optimum": optimum, "gamma": gammas, "early_epoch": early},
            "tables": {"lld": rows, "lld_optimum": optimum, "lld_gamma": gammas},
            "reading": reading, "headline": reading[1] if len(reading) > 1 else reading[0]}


def _lld_plot(record: dict, folder: Path) -> list[Path]:
    res = record["results"]
    fig, axes = _axes(2, width=4.6)
    cmap = pyplot().get_cmap("viridis")
    ms = sorted({r["members"] for r in res["rows"]})
    for i, m in enumerate(ms):
        pts = sorted((r for r in res["rows"] if r["members"] == m and not r["diverged"]), key=lambda r: r["lr"])
        axes[0].plot([r["lr"] for r in pts], [r["accuracy"] for r in pts], "o-", ms=3,
                     color=cmap(i / max(1, len(ms) - 1)), label=f"M = {m}")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("learning rate η")
    axes[0].set_title("LLD ensemble test accuracy", fontsize=10)
    for name, _, _ in CRITERIA:
        pts = [g for g in res["gamma"] if g[name]]
        axes[1].plot([g["members"] for g in pts], [g[name] for g in pts], "o-", label=name)
    axes[1].plot(ms, ms, "k--", lw=1, label="γ(M) = M")
    axes[1].set_xscale("log", base=2)
    axes[1].set_yscale("log", base=2)
    axes[1].set_xlabel("ensemble size M")
    axes[1].set_title("effective γ(M) = M·η(M)/η(1)", fontsize=10)
    return [_finish(fig, axes, folder / "lld.png")]


# --------------------------------------------------------------------------------------------------
# 5. MC dropout: fixed centred masks vs resampled masks (EE App. D.3)

def _mcd_arms(cfg: StudyConfig) -> list[tuple[str, str, bool]]:
    """(label, mask distribution, resampled). Fixed masks train like a BatchEnsemble with frozen modulations
    (γ = M: each member its own step); resampled masks are classic dropout training, the mean loss over the M
    masks drawn at each step (γ = 1: every parameter is shared, γ = M would multiply the step by M)."""
    return [("centred N(0, 1), fixed masks", "normal:0,1", False),
            (f"shifted N(1, {cfg.mcd_sigma:g}²), resampled", f"normal:1,{cfg.mcd_sigma:g}", True),
            ("centred N(0, 1), resampled", "normal:0,1", True)]


def _mcd_run(cfg: StudyConfig, ctx) -> dict:
    rows = []
    for label, spec, resample in _mcd_arms(cfg):
        for m in cfg.mcd_members:
            r = ctx.try_train(ensemble="mc-dropout", members=m, modulation=spec, resample=resample,
                              gamma="1" if resample else "M")
            rows.append({"arm": label, "members": m, "resample": resample, **_row_metrics(r)})
    big = max(cfg.mcd_members)
    by = {(r["arm"], r["members"]): r for r in rows}
    labels = [a for a, _, _ in _mcd_arms(cfg)]
    reading = []
    if big > 1:
        reading.append("Member correlation at M = " + f"{big}: " + ", ".join(
            f"{_fmt(by[(a, big)]['correlation'], '.2f')} ({a})" for a in labels) + ".")
    fixed = _ok([by[(labels[0], m)] for m in cfg.mcd_members])
    if fixed:
        best = max(fixed, key=lambda r: (r["accuracy"], -r["nll"]))
        reading.append(f"Fixed centred masks: the best ensemble has M = {best['members']} (accuracy "
                       f"{best['accuracy']:.3f}; mean member {best['member_accuracy']:.3f}).")
    shifted = [by[(labels[1], m)]["member_accuracy"] for m in cfg.mcd_members]
    reading.append(f"Resampled shifted masks: mean member accuracy {_fmt(shifted[0])} at M = {cfg.mcd_members[0]} "
                   f"and {_fmt(shifted[-1])} at M = {big}.")
    last = by[(labels[2], big)]
    reading.append("Resampled centred masks: " + ("training diverged" if last["diverged"] else
                                                    f"test accuracy {last['accuracy']:.3f}") + f" at M = {big}.")
    diverged = [f"{r['arm']} at M = {r['members']}" for r in rows if r["diverged"]]
    if diverged:
        reading.append("Diverged (no numbers): " + "; ".join(diverged) + ".")
    return {"results": {"rows": rows}, "tables": {"mcdropout": rows}, "reading": reading,
            "headline": reading[0]}


def _mcd_plot(record: dict, folder: Path) -> list[Path]:
    rows = record["results"]["rows"]
    fig, axes = _axes(3)
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    for arm in arms:
        pts = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["members"])
        for ax, key in zip(axes, ("accuracy", "member_accuracy", "correlation"), strict=True):
            xs = [r["members"] for r in pts if r[key] is not None]
            ax.plot(xs, [r[key] for r in pts if r[key] is not None], "o-", ms=4, label=arm if ax is axes[0] else None)
    for ax, title in zip(axes, ("ensemble test accuracy", "mean member test accuracy", "member correlation"),
                         strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ensemble size M")
        ax.set_title(title, fontsize=10)
    return [_finish(fig, axes, folder / "mcdropout.png")]


# --------------------------------------------------------------------------------------------------
# 6. Gradient orthogonality (EE Fig. 6)

def _ortho_run(cfg: StudyConfig, ctx) -> dict:
    from ..kernels import gradient_cosine_vs_width
    from ..training import TrainConfig, build_ensemble

    data = ctx.data(flatten=True)
    x, y = data.train.x[: cfg.ortho_samples], data.train.y[: cfg.ortho_samples]
    depth = len(cfg.widths)
    arms = {"centred N(0, 1)": "normal:0,1", "shifted N(1/√2, 1/2)": f"shifted-normal:{1 / math.sqrt(2):.6f}"}
    results = {}
    for label, spec in arms.items():
        def build(width, seed, spec=spec):
            config = TrainConfig(dataset=cfg.dataset, ensemble="batch", members=cfg.ortho_members,
                                 widths=[int(width)] * depth, modulation=spec, seed=cfg.seed + 1000 * seed)
            model = build_ensemble(config, data)  # seeded by config.seed
            ctx.tick()
            return model.to(x.device)

        results[label] = gradient_cosine_vs_width(build, [float(w) for w in cfg.ortho_widths], x, y,
                                                  seeds=cfg.ortho_seeds)
    (centred, c), (shifted, s) = results.items()
    reading = [
        f"Mean |cos| between members' gradients of the shared weights at initialisation falls from "
        f"{c['rows'][0]['mean']:.3f} to {c['rows'][-1]['mean']:.3f} over widths {cfg.ortho_widths[0]}–"
        f"{cfg.ortho_widths[-1]} with centred modulations (fitted exponent {c['fit']['slope']:.2f}), and stays at "
        f"{s['rows'][0]['mean']:.3f}–{s['rows'][-1]['mean']:.3f} with shifted ones (exponent {s['fit']['slope']:.2f}).",
    ]
    rows = [{"modulation": label, **row} for label, res in results.items() for row in res["rows"]]
    return {"results": results, "tables": {"orthogonality": rows}, "reading": reading, "headline": reading[0]}


def _ortho_plot(record: dict, folder: Path) -> list[Path]:
    fig, axes = _axes(1, width=5.0)
    ax = axes[0]
    for label, res in record["results"].items():
        ws = np.array([r["width"] for r in res["rows"]])
        line = ax.errorbar(ws, [r["mean"] for r in res["rows"]], yerr=[r["std"] for r in res["rows"]], fmt="o",
                           capsize=2, label=label)
        fit = res["fit"]
        if fit["slope"] == fit["slope"]:
            grid = np.geomspace(ws.min(), ws.max(), 50)
            ax.plot(grid, np.exp(fit["intercept"]) * grid ** fit["slope"], "-", color=line[0].get_color(), lw=1,
                    label=f"fit ∝ width^{fit['slope']:.2f}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hidden width")
    ax.set_ylabel("mean |cos| between members' gradients")
    ax.set_title("gradient orthogonality at initialisation", fontsize=10)
    return [_finish(fig, axes, folder / "orthogonality.png")]


# --------------------------------------------------------------------------------------------------
# 7. Power laws of a deep-ensemble pool (power-laws paper §3-7)

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


def _scaling_run(cfg: StudyConfig, ctx) -> dict:
    from ..scaling import (
        WidthFamily,
        budget_envelope,
        fit_pool_curve,
        memory_split_table,
        pool_curve,
        predict_memory_split,
    )
    from ..training import predict_logits

    curves, fits, sizes, problems = {}, {}, {}, []
    cv = cfg.scaling_cv
    for i, k in enumerate(cfg.scaling_multipliers):
        r = ctx.train(ensemble="deep", members=cfg.scaling_pool, width=k, seed=cfg.seed + 101 * (i + 1))
        logits, y = predict_logits(r.model, r.data.test), r.data.test.y
        if cv == "auto":
            cv = "halves" if len(y) >= 1000 else "none"
        size = float(r.metrics["params"]["total"] / cfg.scaling_pool)
        sizes[k] = size
        curves[size] = _partition_mean([
            pool_curve(logits, y, sizes=range(1, cfg.scaling_pool // 2 + 1), seed=cfg.seed + 7919 * j, cv=cv)
            for j in range(cfg.scaling_partitions)])
        try:
            fits[size] = fit_pool_curve(curves[size], predict_k=cfg.scaling_predict_k)
        except DeepensError as exc:
            fits[size] = {"fit": None, "prediction": None, "error": str(exc)}
            problems.append(f"{k:g}×: no power law could be fitted ({str(exc).split(': ', 1)[-1]})")
    try:
        envelope = budget_envelope(curves)
    except DeepensError as exc:
        envelope = None
        problems.append(f"budget envelope: {exc}")
    largest = max(curves)
    budgets = [largest, 2 * largest, 4 * largest]
    tables = [memory_split_table(curves, b, tolerance=0.15) for b in budgets]
    predictions = []
    lawful = {size: rows for size, rows in curves.items()  # physical laws only: an NLL's asymptote c >= 0
              if fits[size]["fit"] is not None and fits[size]["fit"]["c"] >= 0}
    if cfg.model == "mlp" and len(lawful) >= 2:
        data = ctx.data(flatten=True)
        family = WidthFamily.mlp(data.input_shape[0], cfg.widths, data.num_classes)
        for b in budgets:
            try:
                predictions.append(predict_memory_split(lawful, b, family, max_members=cfg.scaling_pool // 2))
            except DeepensError as exc:
                problems.append(f"no predicted split of {int(b):,} parameters ({exc})")
    elif cfg.model == "mlp":
        problems.append("no predicted memory split: it interpolates physical power laws (c ≥ 0) of at least 2 "
                        f"widths, and {len(lawful)} width(s) have one")
    laws = []
    for k in cfg.scaling_multipliers:
        f = fits[sizes[k]]
        laws.append({"width": k, "params": int(sizes[k]), **(f["fit"] or {}), "error": f.get("error"),
                     "prediction_rmse": (f.get("prediction") or {}).get("rmse")})
    fitted = [law for law in laws if law.get("a") is not None]
    calibration = ("τ fitted by test-time cross-validation (2 halves × 5)" if cv == "halves" else
                   "τ fitted on the whole test set: with fewer than 1000 test points the halves of test-time "
                   "cross-validation often hold no error, τ → 0 and the other half's NLL explodes")
    calibration += f"; each point averages {cfg.scaling_partitions} random partitions of the pool"
    headline = "Power laws CNLL_n = c + b·n^a: " + ("; ".join(
        f"{law['width']:g}× ({law['params']:,} params) a = {law['a']:.2f}, c = {law['c']:.3f}" for law in fitted)
        if fitted else "none could be fitted") + "."
    reading = [f"CNLL: {calibration}.", headline]
    if any(law["c"] < 0 for law in fitted):
        reading.append("A negative asymptote c is unphysical (an NLL is ≥ 0): over these n the decay is still "
                       "nearly logarithmic, so c is not identifiable from it; more test points, larger pools or "
                       "larger n are needed (the fits remain useful as interpolants).")
    rmses = [law["prediction_rmse"] for law in fitted if law["prediction_rmse"] is not None]
    if rmses:
        reading.append(f"Fitted on n ≤ {cfg.scaling_predict_k} only, the laws predict the larger ensembles with RMSE "
                       + ", ".join(f"{v:.4f}" for v in rmses) + " (CNLL units).")
    for table, budget in zip(tables, budgets, strict=True):
        if table["best"]:
            reading.append(f"Budget {int(budget):,} parameters: the best measured split is {table['best']['n']} × "
                           f"{int(table['best']['size']):,} (CNLL {table['best']['value']:.4f})"
                           + ("" if table["msa"] is None else
                              ("; splitting beats one network of the whole budget" if table["msa"]
                               else "; one network of the whole budget is best")) + ".")
    for pred in predictions:
        if pred.get("best"):
            b = pred["best"]
            reading.append(f"Predicted from n ≤ {cfg.scaling_predict_k}, budget {int(pred['budget']):,}: "
                           f"{b['n']} networks of width {b['width_multiplier']:.2f}× (CNLL {b['predicted']:.4f}).")
    reading += problems
    curve_rows = [{"params": int(size), **row} for size, rows in curves.items() for row in rows]
    return {"results": {"cv": cv, "curves": {str(int(s)): v for s, v in curves.items()},
                        "fits": {str(int(s)): v for s, v in fits.items()}, "laws": laws, "envelope": envelope,
                        "msa": tables, "predicted_splits": predictions, "problems": problems},
            "tables": {"scaling_curves": curve_rows, "scaling_laws": laws},
            "reading": reading, "headline": headline}


def _scaling_plot(record: dict, folder: Path) -> list[Path]:
    from ..scaling.plots import plot_budget, plot_power_law

    res = record["results"]
    curves = {}
    for law in res["laws"]:
        rows = [r for r in res["curves"][str(law["params"])] if r["reliable"]]
        curves[f"{law['width']:g}× ({law['params']:,} params)"] = ([r["n"] for r in rows],
                                                                  [r["cnll_mean"] for r in rows],
                                                                  res["fits"][str(law["params"])]["fit"])
    paths = [plot_power_law(curves, folder / "scaling_powerlaw.png")]
    if res["envelope"]:
        paths.append(plot_budget(res["envelope"], folder / "scaling_budget.png"))
    return paths


# --------------------------------------------------------------------------------------------------

def _count(*lists) -> int:
    return math.prod(len(x) for x in lists)


PARTS: dict[str, Part] = {p.name: p for p in (
    Part("regime", "Regime transition", "regime",
         "EE §5, Fig. 2: with all modulations N(p, 1 − p²), \"we observe a transition point at p ≈ 0.6, with "
         "ensembles below/above this point being in the independent/collective regime\": above it members are "
         "highly correlated and the ensemble gains little; at infinite width only centred post-activation "
         "modulations (p = 0) give independent members (Theorems 1–2).",
         lambda c: _count(c.regime_p, c.regime_members), _regime_run, _regime_plot),
    Part("width", "Width scaling", "width",
         "EE §5, Fig. 3: \"the optimal ensemble size maximizing ensemble accuracy increases with network width\"; "
         "\"BatchEnsembles with the optimal number of models slightly outperform independent ensembles at any "
         "fixed number of parameters\".",
         lambda c: len(c.width_multipliers) * (1 + len(c.width_members)), _width_run, _width_plot),
    Part("gradient", "Gradient scaling γ(M)", "gradient",
         "EE §5, Fig. 4: with γ(M) = M \"learning trajectories are almost identical in the early epochs for all M, "
         "implying that models train independently\"; with γ(M) = 1 they are not; the independent period lasts "
         "longer for wider networks.",
         lambda c: 3 * len(c.gradient_members) - (1 in c.gradient_members), _gradient_run, _gradient_plot),
    Part("lld", "Last-layer dropout: learning rate and effective γ(M)", "lld",
         "EE §5, Fig. 5: optimal learning rates η(M) of LLD ensembles give an effective γ(M) = M·η(M)/η(1) with "
         "\"moderate\" corrections to γ(M) = M: |log(γ(M)/M)| < log 3 for M < 50.",
         lambda c: _count(c.lld_members, c.lld_lrs), _lld_run, _lld_plot),
    Part("mcdropout", "MC dropout: fixed vs resampled masks", "mcd",
         "EE App. D.3: shifted Gaussian masks resampled at every step are in the collective regime (well-trained, "
         "highly correlated members, no decrease of member accuracy with M, Fig. 9); centred masks resampled at "
         "every step hardly learn (Fig. 10); a fixed set of centred masks is in the independent regime, with low "
         "correlation and an optimal finite M (Fig. 11).",
         lambda c: 3 * len(c.mcd_members), _mcd_run, _mcd_plot),
    Part("orthogonality", "Gradient orthogonality", "ortho",
         "EE §5, Fig. 6: the members' loss gradients w.r.t. the shared weights are orthogonal \"if the network is "
         "wide enough and the post-activation modulations are centred\" (mean |cos| falls with width), \"otherwise "
         "the gradients are not orthogonal\"; App. D.2, Fig. 8: off-diagonal NTK entries decay as ~1/width in the "
         "independent regime.",
         lambda c: 2 * len(c.ortho_widths) * c.ortho_seeds, _ortho_run, _ortho_plot),
    Part("scaling", "Power laws and the memory split", "scaling",
         "Power-laws paper §4–7: the calibrated NLL of a deep ensemble follows CNLL_n = c + b·n^a (a < 0) in the "
         "ensemble size; fitted on n ≤ 4 it predicts larger ensembles; for a fixed memory budget several medium "
         "networks beat one large network (the Memory Split Advantage), and the optimal split is predictable.",
         lambda c: len(c.scaling_multipliers), _scaling_run, _scaling_plot),
)}


def part_names(only: str | list[str] | None) -> list[str]:
    """The parts ``--only`` selects (comma-separated names), in the study's order."""
    if only is None:
        return list(PARTS)
    names = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown or not names:
        raise DeepensError(f"only: expected comma-separated parts from {', '.join(PARTS)}, got {only!r}")
    return [n for n in PARTS if n in names]
