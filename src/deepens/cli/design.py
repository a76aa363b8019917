"""``deepens design collegial | alpha``: collegial ensemble design (CE Algorithms 1-2)."""

from __future__ import annotations

import argparse
import sys

from ..design import TERMS, collegial_design, family_from_name, fit_alpha, plot_alpha_fit, plot_design
from ..design.search import EFFICIENCIES, OBJECTIVES
from ..design.statistics import ENTRIES
from ..errors import DeepensError, check_int
from .common import print_json, print_table, split_ints
from .main import COMMAND_HELP

BLOCKS = ("mlp", "resnext-bottleneck", "resnext29")


def _family_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--block", choices=BLOCKS, default="mlp",
                   help="mlp: fully connected members (block-diagonal layers); resnext-bottleneck: the C×dd "
                        "bottleneck block; resnext29: whole CIFAR ResNeXt-29 networks counted (variance from "
                        "its first-stage block)")
    p.add_argument("--in", dest="in_features", type=int, default=784, help="mlp: input features (default 784)")
    p.add_argument("--out", dest="out_features", type=int, default=10,
                   help="mlp: outputs; resnext29: classes (default 10)")
    p.add_argument("--depth", type=int, default=6, help="mlp: dense layers, depth − 1 hidden (default 6)")
    p.add_argument("--channels", type=int, default=256, help="resnext-bottleneck: input/output channels (256)")
    p.add_argument("--image-size", type=int, default=32,
                   help="resolution for FLOPs (bottleneck: its feature map; resnext29: the image), default 32")
    p.add_argument("--terms", choices=TERMS, default="fan-in",
                   help="layers in S(n) = Σ 1/fan_in: fan-in (width-dependent layers, default), all (also the "
                        "first layer), widths (Σ 1/n_l over hidden widths, CE Eq. 9 literally)")


def _fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fit-widths", help="widths for Algorithm 1 (default: 8..128 for mlp, 1..256 for bottlenecks)")
    p.add_argument("--draws", type=int, default=1000, help="initialisations per width (default 1000)")
    p.add_argument("--entry", choices=ENTRIES, default="diagonal", help="the NTK entry whose moments are fitted")
    p.add_argument("--intercept", action="store_true", help="fit log r = α S + c instead of through the origin")
    p.add_argument("--seed", type=int, default=0)


def _family(args: argparse.Namespace):
    for name in ("in_features", "out_features", "depth", "channels", "image_size"):
        check_int(name.replace("_", "-"), getattr(args, name), minimum=1)
    return family_from_name(args.block, in_features=args.in_features, out_features=args.out_features,
                            depth=args.depth, channels=args.channels, image_size=args.image_size)


def _progress(args: argparse.Namespace):
    if args.json or not sys.stderr.isatty():
        return None
    return lambda width: sys.stderr.write(f"  Monte Carlo NTK statistics at width {width}...\n")


def _fit(args: argparse.Namespace, family):
    widths = split_ints("fit-widths", args.fit_widths) if args.fit_widths else None
    return fit_alpha(family, widths, draws=args.draws, entry=args.entry, terms=args.terms,
                     intercept=args.intercept, seed=args.seed, progress=_progress(args))


def _print_fit(fit) -> None:
    d = fit.to_dict()
    print(f"α = {fit.alpha:.4g} ± {fit.stderr:.2g} (terms {fit.terms}, {fit.entry} entry, {fit.draws} draws per "
          f"width, weighted R² {fit.r2:.4f})")
    print_table(d["points"], [("width", "width", "d"), ("exponent", "S(n)", ".4g"), ("ratio", "E[K²]/E[K]²", ".4f"),
                              ("log_ratio_stderr", "se(log)", ".2g"), ("local_alpha", "log r / S", ".3f")])


def cmd_alpha(args: argparse.Namespace) -> int:
    family = _family(args)
    fit = _fit(args, family)
    if args.plot:
        plot_alpha_fit(fit, args.plot)
    if args.json:
        print_json(fit.to_dict())
    else:
        _print_fit(fit)
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def cmd_collegial(args: argparse.Namespace) -> int:
    family = _family(args)
    check_int("baseline-width", args.baseline_width, minimum=1)
    check_int("top", args.top, minimum=1)
    fit = None
    if args.fit_alpha:
        fit = _fit(args, family)
        alpha = fit.alpha
    else:
        if args.alpha is None:
            raise DeepensError("alpha: give --alpha A or --fit-alpha")
        alpha = args.alpha
    widths = split_ints("widths", args.widths) if args.widths else None
    kw = {"efficiency": args.efficiency, "terms": args.terms, "widths": widths, "tolerance": args.tolerance}
    result = collegial_design(family, args.baseline_width, alpha, objective=args.objective, **kw)
    if args.plot:
        other = collegial_design(family, args.baseline_width, alpha,
                                 objective="dual" if args.objective == "primal" else "primal", **kw)
        primal, dual = (result, other) if args.objective == "primal" else (other, result)
        plot_design(primal, dual, args.plot)
    out = result.to_dict(top=args.top)
    out["alpha_stderr"] = fit.stderr if fit is not None else None
    if fit is not None:
        out["alpha_fit"] = fit.to_dict()
    if args.json:
        print_json(out)
        return 0
    if fit is not None:
        _print_fit(fit)
    b, base = result.best, result.baseline
    metric = "parameters" if args.efficiency == "params" else "FLOPs"
    print(f"{args.objective} design for the {family.name} baseline 1×{args.baseline_width} (α = {alpha:.4g}, "
          f"terms {args.terms}, efficiency by {metric}):")
    print(f"  best: m = {b.m} members of width n = {b.n}  Var(K^e) = {b.variance:.4g} (baseline {base.variance:.4g})"
          f"  params {b.params:,} (baseline {base.params:,})  FLOPs {b.flops:,}  ρ = {b.efficiency:.3f}")
    c = result.continuous
    extra = f"variance {c['variance']:.4g}" if "variance" in c else f"ρ {c['efficiency']:.3f}"
    print(f"  continuous optimum: n = {c['n']}, m = {c['m']:.2f}, {extra}")
    print_table([x.to_dict() for x in result.candidates[: args.top]],
                [("label", "m×n", ""), ("variance", "Var(K^e)", ".4g"), ("params", "params", ","),
                 ("flops", "FLOPs", ","), ("params_efficiency", "ρ params", ".3f"),
                 ("flops_efficiency", "ρ FLOPs", ".3f")])
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def add_design(sub) -> None:
    p = sub.add_parser("design", help=COMMAND_HELP["design"],
                       description="Collegial ensemble design: fit α (Algorithm 1), then the primal or dual "
                                   "optimal (m, n) (Algorithm 2).")
    dsub = p.add_subparsers(dest="design_command", metavar="WHAT")
    dsub.required = True
    c = dsub.add_parser("collegial", help="the primal / dual optimal collegial ensemble for a baseline",
                        description="Primal: minimise Var(K^e) at the baseline's cost (CE Eq. 12). Dual: maximise "
                                    "the efficiency ρ at the baseline's variance (CE Eq. 14).")
    _family_args(c)
    c.add_argument("--baseline-width", type=int, required=True, help="ñ: the baseline's member width (m = 1)")
    c.add_argument("--objective", choices=OBJECTIVES, default="primal")
    c.add_argument("--efficiency", choices=EFFICIENCIES, default="params",
                   help="match / maximise parameters (CE Eq. 8) or FLOPs (CE App. C)")
    group = c.add_mutually_exclusive_group(required=True)
    group.add_argument("--alpha", type=float, help="α of Proposition 1 (for the chosen --terms)")
    group.add_argument("--fit-alpha", action="store_true", help="fit α first by Monte Carlo (Algorithm 1)")
    _fit_args(c)
    c.add_argument("--widths", help="member widths to search (default 1..baseline width)")
    c.add_argument("--tolerance", type=float, default=0.0,
                   help="relative slack on the budget (primal) or the variance (dual) when rounding m (default 0)")
    c.add_argument("--top", type=int, default=10, help="ranked candidates to report (default 10)")
    c.add_argument("--plot", help="write the primal and dual curves to this PNG")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=cmd_collegial)
    a = dsub.add_parser("alpha", help="fit α of Proposition 1 by Monte Carlo (Algorithm 1)",
                        description="E[K²]/E[K]² of one NTK entry over random initialisations at several widths, "
                                    "and the log-linear fit log r = α S(n).")
    _family_args(a)
    _fit_args(a)
    a.add_argument("--plot", help="write log r against S(n) with the fit to this PNG")
    a.add_argument("--json", action="store_true", help="print the result as JSON")
    a.set_defaults(func=cmd_alpha)
