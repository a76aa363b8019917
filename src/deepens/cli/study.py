"""``deepens study``: every experiment of the four papers with a verdict per claim and an HTML report (the main
job; ``make demo``)."""

from __future__ import annotations

import argparse
import sys

from .common import print_json, split_ints
from .main import COMMAND_HELP

PRESET_HELP = ("tiny (seconds; tests), quick (default; make demo, < 10 min on 2 CPU cores), full (hours on a CPU), "
               "paper (each paper's data, networks and recipes: CIFAR-100, MNIST, FashionMNIST from --data-dir; GPU "
               "days — see --plan)")


def preset_of(args: argparse.Namespace) -> str:
    """The preset from ``--preset`` or its aliases ``--tiny`` / ``--quick`` / ``--full`` (default quick)."""
    from ..errors import DeepensError

    aliases = [name for name in ("tiny", "quick", "full") if getattr(args, name, False)]
    if args.preset and aliases and aliases != [args.preset]:
        raise DeepensError(f"preset: --preset {args.preset} contradicts --{aliases[0]}")
    return args.preset or (aliases[0] if aliases else "quick")


def print_study(result: dict, parts: list[str] | None = None) -> None:
    """The human-readable summary: per part its claims (verdict and generated sentence) and numbers."""
    from collections import Counter

    from ..study import PARTS
    from ..study.claims import claim_sentence

    names = parts if parts is not None else list(result["parts"])
    for name in names:
        p = result["parts"].get(name)
        if p is None:
            continue
        print(f"{PARTS[name].paper}.{name} — {p['title']} ({p['seconds']:.0f} s)")
        for c in p.get("claims", []):
            print(f"  [{c['verdict']}] {claim_sentence(c)}")
        for line in p.get("reading", []):
            print(f"  - {line}")
    counts = Counter(c["verdict"] for n in names if n in result["parts"] for c in result["parts"][n].get("claims", []))
    if counts:
        print("\nverdicts: " + ", ".join(f"{v} {counts[v]}" for v in ("reproduced", "partly", "not reproduced",
                                                                     "not identifiable") if counts[v]))
    print(f"report: {result['report']}")


def add_preset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=("tiny", "quick", "full", "paper"), help=PRESET_HELP)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="alias of --preset quick")
    size.add_argument("--full", action="store_true", help="alias of --preset full")
    size.add_argument("--tiny", action="store_true", help="alias of --preset tiny")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f}" if seconds >= 36 else f"{seconds / 3600:.1e}"


def print_plan(plan: dict) -> None:
    """The human-readable plan: per part its trainings and estimated hours, then the totals."""
    unit = "GPU" if plan["gpu_hours"] is not None else plan["device"].upper()
    for p in plan["parts"]:
        if p["trains"]:
            shared = f", {p['shared']} shared with an earlier part" if p["shared"] else ""
            done = f", {p['done']} done in the store" if p["done"] else ""
            print(f"{p['paper']}.{p['name']}: {p['trainings']} trainings{shared}{done} — "
                  f"{_hours(p['seconds'])} {unit}-hours")
        else:
            print(f"{p['paper']}.{p['name']}: no trainings ({p['units']} units of kernel / Monte Carlo / own loops, "
                  "not timed)")
    print(f"\n{plan['trainings']} distinct trainings ({plan['done']} done), estimated {_hours(plan['seconds'])} "
          f"{unit}-hours on {plan['device']}" + (f", about {plan['wall_hours']:.2f} h of wall time with "
                                                 f"{plan['workers']} workers" if plan["gpu_hours"] is None else "")
          + f"; from {len(plan['calibrations'])} calibration runs of {plan['timed_steps']} steps each.")


def cmd_study(args: argparse.Namespace) -> int:
    from ..study import StudyConfig, run_study
    from ..study.runner import default_workers

    overrides = dict(dataset=args.dataset, data_dir=args.data_dir, num_samples=args.num_samples, model=args.model,
                     pool=args.pool, epochs=args.epochs, seed=args.seed, seeds=args.seeds, device=args.device,
                     widths=split_ints("widths", args.widths) if args.widths else None)
    config = StudyConfig.preset_config(preset_of(args), **overrides)
    import torch

    from ..training.threads import resolve_threads

    torch.set_num_threads(resolve_threads(args.threads))  # this process's analyses; every training takes one
    if args.plan:
        from ..study.plan import plan_study

        log = None if args.json else (lambda msg: sys.stderr.write(msg + "\n"))
        plan = plan_study(config, only=args.only, paper=args.paper, out=args.out, store=args.store,
                          workers=args.workers, steps=args.plan_steps, log=log)
        if args.json:
            print_json(plan)
        else:
            print_plan(plan)
        return 0
    workers = default_workers(config.device) if args.workers is None else args.workers
    log = None if args.json else (lambda msg: sys.stderr.write(msg + "\n"))
    result = run_study(config, args.out, only=args.only, paper=args.paper, resume=args.resume,
                       progress=False if args.json or args.no_progress else None, log=log, store=args.store,
                       workers=workers)
    if args.json:
        print_json(result)
        return 0
    selected = set(result["ran"]) | set(result["skipped"])
    print_study(result, [n for n in result["parts"] if n in selected])
    return 0


def add_study(sub) -> None:
    from ..models.convnet import POOLS

    p = sub.add_parser(
        "study",
        help=COMMAND_HELP["study"],
        description="Run the experiments of the Embedded Ensembles (ee), Collegial Ensembles (ce), Emergent "
                    "Equivariance (eqe) and Power Laws (pl) papers at small scale. Every part declares the "
                    "papers' claims it tests with a criterion before it runs; the verdict (reproduced, partly, "
                    "not reproduced, not identifiable) is computed from the measured numbers. Writes "
                    "results.json, CSV tables, PNG figures, report.html and report.md into --out.",
    )
    add_preset_options(p)
    p.add_argument("--paper", help="comma-separated papers: ee, ce, eqe, pl (default all four)")
    p.add_argument("--only", help="comma-separated parts, e.g. regime,alpha,ising,pool (default every part of the "
                                  "selected papers)")
    p.add_argument("--out", default="runs/study", help="output folder (default runs/study)")
    p.add_argument("--resume", action="store_true",
                   help="continue a study in --out: skip parts finished with the same settings; finished trainings "
                        "are loaded from its store")
    p.add_argument("--store", help="a sweep store shared with sweeps and other studies (default OUT/store): "
                                   "trainings done there with the same options are loaded, not trained")
    p.add_argument("--dataset", help="dataset of the embedded-ensemble parts: digits (default), mnist1d, gaussians, "
                                     "cifar10, cifar100, mnist, fashion-mnist (with --data-dir)")
    p.add_argument("--data-dir", help="folder with the local datasets: CIFAR python batches (cifar-10-batches-py/, "
                                      "cifar-100-python/), (Fashion-)MNIST idx files (e.g. FashionMNIST/raw/)")
    p.add_argument("--num-samples", type=int, help="samples to generate (mnist1d, gaussians)")
    p.add_argument("--model", choices=("mlp", "convnet"), help="reference network of the EE parts (default mlp)")
    p.add_argument("--pool", choices=POOLS, help="convnet pooling: max (EE App. C, default) or avg (the "
                   "variant whose infinite-width kernels, and so the analytic regime columns, have a closed form)")
    p.add_argument("--widths", help="hidden widths of the reference MLP (default 128,128)")
    p.add_argument("--epochs", type=int, help="epochs per EE training (preset default)")
    p.add_argument("--seed", type=int, help="seed of every random choice (default 0)")
    p.add_argument("--seeds", type=int, help="seeds of every noisy measurement (preset default: 3 in quick)")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--workers", type=int,
                   help="worker processes training a part's networks at once (default: one per usable core on a CPU, "
                        "at most 8; 1 on a GPU); every training uses one thread, so the numbers do not depend on it")
    p.add_argument("--plan", action="store_true",
                   help="train nothing: list every part's trainings (new / done in the store) and estimate device-"
                        "hours from a short timed calibration run per network shape on --device")
    p.add_argument("--plan-steps", type=int, default=3, help="optimizer steps timed per calibration run (default 3)")
    p.add_argument("--threads", default="auto", help="torch threads of this process's analyses (kernels, Monte "
                   "Carlo): a number or auto (default: usable cores minus the machine's load); trainings always use "
                   "one thread each, in --workers processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print every result as JSON (no progress display)")
    p.set_defaults(func=cmd_study)
