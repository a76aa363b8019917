"""``deepens equivariance ising | crossproduct | digits | so2``: thin entry points into the study's emergent-
equivariance parts (the same as ``deepens study --only NAME``, with the part's settings as options)."""

from __future__ import annotations

import argparse
import sys

from .common import print_json, split_ints
from .main import COMMAND_HELP
from .study import add_preset_options, preset_of, print_study

# option name → study config field, per experiment (the study part of the same name)
OPTIONS = {
    "ising": {"size": "ising_size", "samples": "ising_samples", "widths": "ising_widths", "members": "ising_members",
              "steps": "ising_steps", "lr": "ising_lr", "test": "ising_test"},
    "crossproduct": {"groups": "cross_groups", "samples": "cross_samples", "width": "cross_width",
                     "members": "cross_members", "steps": "cross_steps", "lr": "cross_lr", "test": "cross_test",
                     "rotations": "cross_rotations", "ood_scale": "cross_ood_scale"},
    "digits": {"groups": "digits_groups", "members": "digits_members", "steps": "digits_steps",
               "batch_size": "digits_batch_size", "lr": "digits_lr", "channels": "digits_channels",
               "evals": "digits_evals", "ood": "digits_ood", "test": "digits_test"},
    "so2": {"rotations": "so2_rotations", "members": "so2_members", "steps": "so2_steps",
            "batch_size": "so2_batch_size", "lr": "so2_lr", "channels": "so2_channels", "test": "so2_test",
            "test_rotations": "so2_test_rotations"},
}
LISTS = {"ising_widths", "digits_groups", "digits_channels", "so2_rotations", "so2_channels"}


def cmd_equivariance(args: argparse.Namespace) -> int:
    from ..study import StudyConfig, run_study

    name = args.experiment
    overrides = {"seed": args.seed, "seeds": args.seeds}
    for option, field in OPTIONS[name].items():
        value = getattr(args, option)
        if value is None:
            continue
        if field in LISTS:
            value = split_ints(option, value)
        elif field == "cross_groups":
            value = [g.strip().lower() for g in value.split(",") if g.strip()]
        overrides[field] = value
    config = StudyConfig.preset_config(preset_of(args), **overrides)
    log = None if args.json else (lambda msg: sys.stderr.write(msg + "\n"))
    result = run_study(config, args.out, only=name, resume=True, progress=False if args.json else None, log=log)
    if args.json:
        print_json({**result["parts"][name], "report": result["report"]})
        return 0
    print_study(result, [name])
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    add_preset_options(p)
    p.add_argument("--seed", type=int, help="seed of every random choice (default 0)")
    p.add_argument("--seeds", type=int, help="disjoint member groups measured as separate ensembles (preset default)")
    p.add_argument("--out", default="runs/equivariance",
                   help="study folder (default runs/equivariance; resumed: a finished experiment with the same "
                        "settings is not rerun)")
    p.add_argument("--json", action="store_true", help="print the part's record (results, claims) as JSON")
    p.set_defaults(func=cmd_equivariance)


def add_equivariance(sub) -> None:
    parser = sub.add_parser(
        "equivariance",
        help=COMMAND_HELP["equivariance"],
        description="Train augmented deep ensembles and measure how equivariant their members, the ensemble and the "
                    "infinite-width (NTK) prediction are, in and out of distribution. Each experiment is the study "
                    "part of the same name (deepens study --only NAME) with its settings as options; unset options "
                    "take the preset's values.",
    )
    exp = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=type(parser))
    exp.required = True
    p = exp.add_parser("ising", help="C4 on a periodic Ising lattice: local energies (equivariant), total energy "
                                     "(invariant); one-hidden-layer MLPs against the NTK prediction")
    p.add_argument("--size", type=int, help="lattice side L")
    p.add_argument("--samples", type=int, help="training configurations before augmentation")
    p.add_argument("--widths", help="hidden widths, comma-separated")
    p.add_argument("--members", type=int, help="ensemble members per seed")
    p.add_argument("--steps", type=int, help="full-batch gradient-descent steps")
    p.add_argument("--lr", type=float, help="learning rate (NTK parameterization)")
    p.add_argument("--test", type=int, help="test inputs per set")
    _common(p)
    p = exp.add_parser("crossproduct", help="x × y with two-hidden-layer MLPs augmented by finite rotation groups; "
                                            "equivariance error under random SO(3) rotations")
    p.add_argument("--groups", help="augmenting groups: c1, c2, c4 (about z), t (12), o (24), i (60)")
    p.add_argument("--samples", type=int, help="training pairs before augmentation")
    p.add_argument("--width", type=int, help="hidden width")
    p.add_argument("--members", type=int, help="ensemble members per seed")
    p.add_argument("--steps", type=int, help="full-batch gradient-descent steps")
    p.add_argument("--lr", type=float, help="learning rate (NTK parameterization)")
    p.add_argument("--test", type=int, help="test pairs per set")
    p.add_argument("--rotations", type=int, help="random SO(3) rotations at test time")
    p.add_argument("--ood-scale", type=float, help="out of distribution: x scaled by s and y by 1/s")
    _common(p)
    p = exp.add_parser("digits", help="ConvNet ensembles on rotated digits: OSP on test digits, photo patches and "
                                      "noise images during training")
    p.add_argument("--groups", help="k of the augmenting C_k, comma-separated")
    p.add_argument("--members", type=int, help="ensemble members per seed")
    p.add_argument("--steps", type=int, help="Adam steps per group")
    p.add_argument("--batch-size", type=int, help="batch size")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--channels", help="ConvNet channels, comma-separated")
    p.add_argument("--evals", type=int, help="OSP measurements during training")
    p.add_argument("--ood", type=int, help="out-of-distribution images per kind")
    p.add_argument("--test", type=int, help="test digits to measure on")
    _common(p)
    p = exp.add_parser("so2", help="ConvNet ensembles trained with k random SO(2) rotations per image and step: "
                                   "predictions under random rotations against k")
    p.add_argument("--rotations", help="rotations per image and step, comma-separated")
    p.add_argument("--members", type=int, help="ensemble members per seed")
    p.add_argument("--steps", type=int, help="Adam steps per setting")
    p.add_argument("--batch-size", type=int, help="images per step (before the rotations)")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--channels", help="ConvNet channels, comma-separated")
    p.add_argument("--test", type=int, help="test digits to measure on")
    p.add_argument("--test-rotations", type=int, help="random rotations per test digit")
    _common(p)
