"""``deepens study``: the embedded-ensemble study with its HTML report (the main job; ``make demo``)."""

from __future__ import annotations

import argparse
import sys

from .common import print_json, split_ints


def cmd_study(args: argparse.Namespace) -> int:
    from ..study import PARTS, StudyConfig, run_study

    preset = "full" if args.full else "tiny" if args.tiny else "quick"
    overrides = dict(dataset=args.dataset, data_dir=args.data_dir, num_samples=args.num_samples, model=args.model,
                     epochs=args.epochs, seed=args.seed, device=args.device,
                     widths=split_ints("widths", args.widths) if args.widths else None)
    config = StudyConfig.preset_config(preset, **overrides)
    log = None if args.json else (lambda msg: sys.stderr.write(msg + "\n"))
    result = run_study(config, args.out, only=args.only, resume=args.resume,
                       progress=False if args.json or args.no_progress else None, log=log, store=args.store)
    if args.json:
        print_json(result)
        return 0
    for name, p in result["parts"].items():
        print(f"{PARTS[name].title} ({p['seconds']:.0f} s)")
        for line in p.get("reading", []):
            print(f"  - {line}")
    print(f"\nreport: {result['report']}")
    return 0


def add_study(sub) -> None:
    p = sub.add_parser(
        "study",
        help="the embedded-ensemble study (EE §5, App. C–D, power laws) with an HTML report",
        description="Train the Embedded Ensembles paper's experiments at small scale next to the analytic "
                    "predictions — regime transition, width scaling, gradient scaling γ(M), LLD learning rates, "
                    "MC dropout, gradient orthogonality, power laws — and write results.json, CSV tables, PNG "
                    "figures and a self-contained report.html into --out.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the quick preset (default; < 10 min on 2 CPU cores)")
    size.add_argument("--full", action="store_true", help="the full preset (the paper's grids; hours on a CPU)")
    size.add_argument("--tiny", action="store_true", help="a seconds-long smoke preset (tests, CI)")
    p.add_argument("--out", default="runs/study", help="output folder (default runs/study)")
    p.add_argument("--only", help="comma-separated parts: regime, width, gradient, lld, mcdropout, orthogonality, "
                                  "scaling (default all)")
    p.add_argument("--resume", action="store_true",
                   help="continue a study in --out: skip parts already finished with the same settings")
    p.add_argument("--store", help="a sweep store: every training is looked up there (done by an earlier study or "
                                   "a sweep with the same options: loaded, not trained) and new ones are kept there")
    p.add_argument("--dataset", help="digits (default), mnist1d, gaussians, cifar10, cifar100 (with --data-dir)")
    p.add_argument("--data-dir", help="folder with the CIFAR python batches")
    p.add_argument("--num-samples", type=int, help="samples to generate (mnist1d, gaussians)")
    p.add_argument("--model", choices=("mlp", "convnet"), help="reference network (default mlp)")
    p.add_argument("--widths", help="hidden widths of the reference MLP (default 128,128)")
    p.add_argument("--epochs", type=int, help="epochs per training (preset default)")
    p.add_argument("--seed", type=int, help="seed of every random choice (default 0)")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print every result as JSON (no progress display)")
    p.set_defaults(func=cmd_study)
