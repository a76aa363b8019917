"""``deepens equivariance ising | crossproduct | digits``: emergent equivariance of augmented deep ensembles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import check_int
from ..io import atomic_write_json
from ..runs.rundir import jsonable
from .common import print_json, print_table, split_ints


def _progress(args: argparse.Namespace):
    if args.json:
        return None
    return lambda line: (sys.stderr.write(f"  {line}\n"), sys.stderr.flush())


def _finish(args: argparse.Namespace, result: dict, table) -> int:
    from ..symmetry.plots import plot_experiment

    out = Path(args.out or f"equivariance/{result['experiment']}")
    results_path = atomic_write_json(out / "results.json", jsonable(result))
    plot_path = plot_experiment(result, out / f"{result['experiment']}.png")
    result["files"] = {"results": str(results_path), "plot": str(plot_path)}
    if args.json:
        print_json(result)
        return 0
    table(result)
    print(f"\n{result['seconds']:.0f} s; results: {results_path}; plot: {plot_path}")
    return 0


def _ising_table(result: dict) -> None:
    rows = []
    for r in result["widths"]:
        for name in ("in", "ood"):
            s = r["sets"][name]
            rows.append({"width": r["width"], "set": name, "dist": s["distance"]["relative"],
                         "bias": s["distance"]["width_effect"], "eq_m": s["equivariance"]["member"]["mean"],
                         "eq_e": s["equivariance"]["ensemble"]["mean"], "sd_m": s["orbit_std"]["member"]["median"],
                         "sd_e": s["orbit_std"]["ensemble"]["median"]})
    for name in ("in", "ood"):
        n = result["ntk"][name]
        rows.append({"width": "∞ (NTK)", "set": name, "eq_e": n["equivariance"]["ensemble"]["mean"],
                     "sd_e": n["orbit_std"]["ensemble"]["median"]})
    cfg = result["config"]
    print(f"Ising {cfg['size']}×{cfg['size']}, {cfg['samples']} samples augmented by C4 to {cfg['augmented']}, "
          f"{cfg['members']} members, {cfg['steps']} GD steps (lr {cfg['lr']:g})")
    print_table(rows, [("width", "width", ""), ("set", "set", ""), ("dist", "‖f̄−μ‖/‖μ‖", ".4f"),
                       ("bias", "minus MC noise", ".4f"), ("eq_m", "equiv. err member", ".4f"),
                       ("eq_e", "ensemble", ".2e"), ("sd_m", "orbit std 𝓔 member", ".4f"),
                       ("sd_e", "ensemble", ".2e")])
    print("(equivariance error of the local energies E(i) and median relative orbit std of the total energy;"
          " ensemble = all members)")


def _cross_table(result: dict) -> None:
    rows = []
    for r in result["groups"]:
        for name in ("in", "ood"):
            s = r["sets"][name]
            rows.append({"group": f"{r['group']} ({r['order']})", "set": name,
                         "m": s["equivariance"]["member"]["mean"], "e": s["equivariance"]["ensemble"]["mean"],
                         "ntk": s["ntk"]["mean"], "grp": s["ntk_group"]["mean"] if s["ntk_group"] else None,
                         "err": s["median_relative_error"]})
    cfg = result["config"]
    print(f"Cross product, {cfg['samples']} pairs, width {cfg['width']}, {cfg['members']} members, "
          f"{cfg['steps']} GD steps; error under {cfg['rotations']} random SO(3) rotations")
    print_table(rows, [("group", "group (|G|)", ""), ("set", "set", ""), ("m", "member", ".4f"),
                       ("e", "ensemble", ".4f"), ("ntk", "NTK (SO(3))", ".4f"), ("grp", "NTK (own group)", ".1e"),
                       ("err", "median rel. error", ".3f")])


def _digits_table(result: dict) -> None:
    rows = []
    for r in result["groups"]:
        for p in r["history"]:
            row = {"k": f"C{r['k']}", "step": p["step"], "acc": p["accuracy"]}
            for name, s in p["sets"].items():
                row[f"{name}_m"] = s["member"]["mean"]
                row[f"{name}_e"] = s["ensemble"]["mean"]
            rows.append(row)
    cfg = result["config"]
    print(f"Rotated digits ({cfg['image_size']}×{cfg['image_size']}), ConvNet {cfg['channels']}, {cfg['members']} "
          f"members, {cfg['steps']} steps of batch {cfg['batch_size']}; OSP (max |G|), member mean vs ensemble")
    cols = [("k", "group", ""), ("step", "step", "d"), ("acc", "test acc", ".3f")]
    for name in result["groups"][0]["final"]["sets"]:
        cols += [(f"{name}_m", f"{name} member", ".2f"), (f"{name}_e", "ensemble", ".2f")]
    print_table(rows, cols)
    ref = result["reference"]["talk_fashionmnist_ood_osp"]
    print("talk (FashionMNIST deep ensembles, OOD): " + ", ".join(f"C{k} {v[0]} ± {v[1]}" for k, v in ref.items()))


def cmd_ising(args: argparse.Namespace) -> int:
    from ..symmetry.experiments import ising

    widths = split_ints("widths", args.widths)
    result = ising(size=args.size, samples=args.samples, widths=widths, members=args.members, steps=args.steps,
                   lr=args.lr, test=args.test, seed=args.seed, progress=_progress(args))
    return _finish(args, result, _ising_table)


def cmd_crossproduct(args: argparse.Namespace) -> int:
    from ..symmetry.experiments import crossproduct

    groups = [g.strip().lower() for g in args.groups.split(",") if g.strip()]
    result = crossproduct(groups=groups, samples=args.samples, width=args.width, members=args.members,
                          steps=args.steps, lr=args.lr, test=args.test, rotations=args.rotations,
                          ood_scale=args.ood_scale, seed=args.seed, progress=_progress(args))
    return _finish(args, result, _cross_table)


def cmd_digits(args: argparse.Namespace) -> int:
    from ..symmetry.experiments import digits

    groups = [check_int("groups", k, minimum=1) for k in split_ints("groups", args.groups)]
    result = digits(groups=groups, members=args.members, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    channels=split_ints("channels", args.channels), scale=args.scale, evals=args.evals,
                    noise=args.ood, test=args.test, seed=args.seed, progress=_progress(args))
    return _finish(args, result, _digits_table)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--out", help="directory for results.json and the plot (default equivariance/EXPERIMENT)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def add_equivariance(sub) -> None:
    parser = sub.add_parser(
        "equivariance",
        help="emergent equivariance of deep ensembles trained with data augmentation",
        description="Train augmented deep ensembles and measure how equivariant their members, the ensemble "
                    "and the infinite-width (NTK) prediction are, in and out of distribution.",
    )
    exp = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=type(parser))
    exp.required = True
    p = exp.add_parser("ising", help="C4 on a periodic Ising lattice: local energies (equivariant), total energy "
                                     "(invariant); one-hidden-layer MLPs against the NTK prediction")
    p.add_argument("--size", type=int, default=6, help="lattice side L (default 6)")
    p.add_argument("--samples", type=int, default=128, help="training configurations before augmentation (128)")
    p.add_argument("--widths", default="64,256,1024,2048", help="hidden widths (default 64,256,1024,2048)")
    p.add_argument("--members", type=int, default=32, help="ensemble members per width (default 32)")
    p.add_argument("--steps", type=int, default=200, help="full-batch gradient-descent steps (default 200)")
    p.add_argument("--lr", type=float, default=3.0, help="learning rate, NTK parameterization (default 3)")
    p.add_argument("--test", type=int, default=128, help="test inputs per set (default 128)")
    _common(p)
    p.set_defaults(func=cmd_ising)
    p = exp.add_parser("crossproduct", help="x × y with two-hidden-layer MLPs augmented by finite rotation groups; "
                                            "equivariance error under random SO(3) rotations")
    p.add_argument("--groups", default="c1,c4,t,o",
                   help="augmenting groups: c1, c2, c4 (about z), t (12), o (24), i (60); default c1,c4,t,o")
    p.add_argument("--samples", type=int, default=48, help="training pairs before augmentation (48)")
    p.add_argument("--width", type=int, default=128, help="hidden width (default 128)")
    p.add_argument("--members", type=int, default=32, help="ensemble members (default 32)")
    p.add_argument("--steps", type=int, default=300, help="full-batch gradient-descent steps (default 300)")
    p.add_argument("--lr", type=float, default=1.0, help="learning rate, NTK parameterization (default 1)")
    p.add_argument("--test", type=int, default=128, help="test pairs per set (default 128)")
    p.add_argument("--rotations", type=int, default=16, help="random SO(3) rotations at test time (default 16)")
    p.add_argument("--ood-scale", type=float, default=3.0,
                   help="out of distribution: x scaled by s and y by 1/s (default 3)")
    _common(p)
    p.set_defaults(func=cmd_crossproduct)
    p = exp.add_parser("digits", help="ConvNet ensembles on rotated digits: OSP on test digits, photo patches and "
                                      "noise images, through training and against ensemble size")
    p.add_argument("--groups", default="4,8,16", help="k of the augmenting C_k (default 4,8,16)")
    p.add_argument("--members", type=int, default=8, help="ensemble members (default 8)")
    p.add_argument("--steps", type=int, default=300, help="Adam steps per group (default 300)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 2e-3)")
    p.add_argument("--channels", default="8,16,32,64", help="ConvNet channels (default 8,16,32,64)")
    p.add_argument("--scale", type=int, default=2, help="upsampling factor before padding (default 2: 23×23)")
    p.add_argument("--evals", type=int, default=4, help="OSP measurements during training (default 4)")
    p.add_argument("--ood", type=int, default=200, help="out-of-distribution images per kind (default 200)")
    p.add_argument("--test", type=int, help="test digits to measure on (default all)")
    _common(p)
    p.set_defaults(func=cmd_digits)
