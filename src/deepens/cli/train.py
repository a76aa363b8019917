"""``deepens train`` and ``deepens evaluate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..errors import DeepensError
from ..models.convnet import POOLS
from ..runs.rundir import RunDir
from ..training.config import ENSEMBLES, FAMILIES, FAMILY_WIDTH, MODELS, SCHEDULES, TrainConfig
from ..training.recipes import RECIPES, recipe_options
from ..training.trainer import Trainer, evaluate_run
from .common import print_json, print_table, split_ints
from .main import COMMAND_HELP

S = argparse.SUPPRESS

# (flags, config field, argparse keyword arguments)
OPTIONS: list[tuple[tuple[str, ...], str, dict]] = [
    (("--dataset",), "dataset", dict(help="digits | mnist1d | cifar10 | cifar100 | mnist | fashion-mnist | "
                                "gaussians (default digits; CIFAR and MNIST from --data-dir)")),
    (("--data-dir",), "data_dir", dict(help="directory with the official CIFAR python files (no download)")),
    (("--num-samples",), "num_samples", dict(type=int, help="size of mnist1d (5000) / gaussians (2000)")),
    (("--val",), "val", dict(type=float, help="validation split held out from train: fraction, or a count >= 1 "
                                               "(default 0.1)")),
    (("--flatten",), "flatten", dict(action=argparse.BooleanOptionalAction, help="images as vectors "
                                                                                   "(default: for an MLP)")),
    (("--augment",), "augment", dict(help="augment the training images: cK (full C_K rotation orbits, e.g. c4), "
                                          "so2 (a random rotation per sample and batch), crop-flip (random crop from "
                                          "a 4-pixel zero padding + horizontal flip, per member), crop-flip,c4")),
    (("--model",), "model", dict(choices=MODELS, help="reference network: mlp (default), convnet (EE App. C), "
                                "vgg16 or wrn (PL App. A, per-member batch norm in every ensemble)")),
    (("--widths",), "widths", dict(help="MLP hidden widths, e.g. 128,128 (default)")),
    (("--pool",), "pool", dict(choices=POOLS, help="convnet pooling: max (EE App. C, default) or avg "
                                "(closed-form infinite-width kernel)")),
    (("--width",), "width", dict(type=float, help="mlp / convnet: multiplier of the widths / channels (default 1); "
                                "vgg16 / wrn: the paper's w (default 64 / 160)")),
    (("--depth",), "depth", dict(type=int, help="wrn depth 6n + 4 (default 28)")),
    (("--amp",), "amp", dict(choices=("bf16", "fp16"), help="mixed precision: autocast the forward in bf16 or fp16 "
                                "(fp16 with a gradient scaler)")),
    (("--channels-last",), "channels_last", dict(action="store_true", help="channels-last memory format (conv nets)")),
    (("--compile",), "compile", dict(action="store_true", help="torch.compile the ensemble (eager where unsupported)")),
    (("--cardinality",), "cardinality", dict(type=int, help="resnext29 groups C (default 8; --width is d)")),
    (("--activation",), "activation", dict(help="relu (default), erf, tanh, gelu, sigmoid, ...")),
    (("--bias",), "bias", dict(action=argparse.BooleanOptionalAction, help="biases in the MLP (default off)")),
    (("--parameterization",), "parameterization", dict(choices=("standard", "ntk"))),
    (("--ensemble",), "ensemble", dict(choices=ENSEMBLES, help="ensemble kind (default deep)")),
    (("--members", "-M"), "members", dict(type=int, help="number of members M (default 8)")),
    (("--multiplicity",), "multiplicity", dict(type=int, help="collegial: networks summed with m^{-1/2} in each "
                                                           "member (CE Eq. 4, default 1)")),
    (("--modulation",), "modulation", dict(help="one distribution for every modulation (shifted-normal:0.3, "
                                                 "normal:0,1, bernoulli:0.9, ternary:0.25,0.5,0.25, sign, "
                                                 "constant:1) or one per kind: u=DIST,v=DIST")),
    (("--layers",), "layers", dict(help="hidden layers carrying modulations, e.g. -1 for the last (default all)")),
    (("--frozen",), "trainable", dict(action="store_false", help="freeze the BatchEnsemble modulations")),
    (("--resample",), "resample", dict(action="store_true", help="MC dropout: new masks at every forward")),
    (("--modulate-input",), "modulate_input", dict(action="store_true", help="modulate the first layer's input")),
    (("--modulate-output",), "modulate_output", dict(action="store_true", help="modulate the readout's output")),
    (("--epochs",), "epochs", dict(type=int, help="default 40")),
    (("--batch-size",), "batch_size", dict(type=int, help="default 128")),
    (("--batches",), "batches", dict(choices=("shared", "independent"),
                                     help="one batch for all members (default) or one per member")),
    (("--optimizer",), "optimizer", dict(choices=("sgd", "adam"))),
    (("--lr",), "lr", dict(type=float, help="learning rate of shared parameters η_w (default 0.05)")),
    (("--lr-individual",), "lr_individual", dict(type=float, help="learning rate of individual parameters η_u "
                                                                   "(default: --lr)")),
    (("--momentum",), "momentum", dict(type=float, help="SGD momentum (default 0.9)")),
    (("--nesterov",), "nesterov", dict(action="store_true")),
    (("--weight-decay",), "weight_decay", dict(type=float, help="L2 of shared parameters (default 0)")),
    (("--weight-decay-individual",), "weight_decay_individual", dict(type=float)),
    (("--gamma",), "gamma", dict(help="gradient scaling γ(M) of EE Eq. 4: 1, M (default) or a number")),
    (("--schedule",), "schedule", dict(choices=SCHEDULES, help="lr schedule (default constant; ee = constant "
                                                               "then linear decay to --final-lr)")),
    (("--step-size",), "step_size", dict(type=int)),
    (("--step-factor",), "step_factor", dict(type=float)),
    (("--decay-start",), "decay_start", dict(type=float, help="ee schedule: fraction before the decay (0.5)")),
    (("--final-lr",), "final_lr", dict(type=float, help="ee / cosine schedule: final lr (1e-4)")),
    (("--loss",), "loss", dict(choices=("ce", "mse"))),
    (("--seed",), "seed", dict(type=int, help="every random choice derives from it (default 0)")),
    (("--data-seed",), "data_seed", dict(type=int, help="seed of the train / val / test split only (default: "
                                                        "--seed); fix it to pool networks of several seeds")),
    (("--device",), "device", dict(help="cpu (default), cuda or auto")),
    (("--eval-every",), "eval_every", dict(type=int, help="epochs between validation evaluations (1)")),
    (("--checkpoint-seconds",), "checkpoint_seconds", dict(type=float, help="checkpoint at an epoch's end once "
                                                                            "this long since the last (30; 0: every "
                                                                            "epoch)")),
]


def add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help=COMMAND_HELP["train"],
        description="Train a deep ensemble, BatchEnsemble, MC-dropout, LLD or collegial ensemble (EE Eqs. 2-4, "
        "CE Eq. 4) and write a run directory (config, metrics, logits, weights, checkpoints).",
    )
    for flags, dest, kwargs in OPTIONS:
        p.add_argument(*flags, dest=dest, default=S, **kwargs)
    p.add_argument("--config", type=Path, help="JSON file of options (e.g. a run's config.json); flags override it")
    p.add_argument("--recipe", choices=sorted(RECIPES), help="a paper's training recipe as defaults (EE App. C, PL §5, "
                   "CE §4.2 via ResNeXt); --config and flags override it")
    p.add_argument("--milestones", help="multistep schedule: epochs of the lr decays, e.g. 150,225")
    p.add_argument("--out", type=Path, help="run directory to write (required unless --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="build the ensemble on the data and print its parameter "
                   "counts and forward FLOPs per sample without training or writing anything")
    p.add_argument("--threads", default="auto", help="torch threads: a number, or auto (default): the usable cores "
                   "(affinity mask, OMP_NUM_THREADS) minus the machine's load, so a shared machine is not "
                   "oversubscribed; the count changes the last bits of CPU results, so pass a number to reproduce "
                   "a run bit for bit elsewhere")
    p.add_argument("--max-memory", help="memory budget of the training, e.g. 8GiB (default: what the device has "
                   "free); a training estimated above it is refused before anything is allocated")
    p.add_argument("--estimate", type=int, nargs="?", const=3, metavar="STEPS",
                   help="with --dry-run: time STEPS (default 3) real optimizer steps on --device after one warm-up "
                        "step and estimate the whole training's wall time")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint (the "
                   "same options; --lr / --lr-individual / --final-lr may change, e.g. after a divergence)")
    p.add_argument("--overwrite", action="store_true", help="delete the run in --out (its files only) and train "
                   "again from scratch")
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def _load_config_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise DeepensError(f"config: cannot read {path} ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise DeepensError(f"config: {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DeepensError(f"config: {path} must hold a JSON object")
    return data.get("train", data)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    options: dict = recipe_options(args.recipe) if getattr(args, "recipe", None) else {}
    if args.config is not None:
        options.update(_load_config_file(args.config))
    run = RunDir(args.out)
    if args.resume and run.exists():
        stored = run.read_config().get("train", {})
        options = {**stored, **options}
    for _, dest, _ in OPTIONS:
        if hasattr(args, dest):
            options[dest] = getattr(args, dest)
    if isinstance(options.get("widths"), str):
        options["widths"] = split_ints("widths", options["widths"])
    if getattr(args, "milestones", None):
        options["milestones"] = split_ints("milestones", args.milestones)
    if isinstance(options.get("layers"), str):
        options["layers"] = split_ints("layers", options["layers"])
    val = options.get("val")
    if isinstance(val, float) and val >= 1 and val.is_integer():
        options["val"] = int(val)
    return TrainConfig.from_dict(options)


SPLIT_COLUMNS = [
    ("split", "split", ""),
    ("accuracy", "accuracy", ".4f"),
    ("member_accuracy", "member acc", ".4f"),
    ("gain", "gain", "+.4f"),
    ("nll", "NLL", ".4f"),
    ("brier", "Brier", ".4f"),
    ("ece", "ECE", ".4f"),
    ("correlation", "correlation", ".3f"),
    ("disagreement", "disagreement", ".3f"),
]


def summary(metrics: dict) -> dict:
    keep = [k for k, _, _ in SPLIT_COLUMNS if k != "split"] + ["curve"]
    out = {name: {k: metrics[name][k] for k in keep if k in metrics[name]}
           for name in ("train", "val", "test") if name in metrics}
    for key in ("params", "seconds", "threads", "epochs", "members", "ensemble", "gamma", "run"):
        if key in metrics:
            out[key] = metrics[key]
    return out


def print_metrics(metrics: dict) -> None:
    rows = [{"split": name, **metrics[name]} for name in ("train", "val", "test") if name in metrics]
    print_table(rows, SPLIT_COLUMNS)
    test = metrics.get("test")
    if test and "curve" in test:
        ks = [p["k"] for p in test["curve"]]
        accs = " ".join(f"{p['accuracy']:.3f}" for p in test["curve"])
        print(f"test accuracy of the first k members, k = {ks[0]}..{ks[-1]}: {accs}")


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 600 else f"{seconds / 3600:.2f} h"


def dry_run(config: TrainConfig, max_memory=None) -> dict:
    """Parameters (total, shared, individual, one reference network), forward FLOPs per sample (one member,
    the whole ensemble) and the memory estimate of the ensemble ``config`` builds, on its data's input shape; an
    ensemble that would not fit in memory is refused (with the estimate) before it is built."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..training.build import build_ensemble, build_reference
    from ..training.memory import check_training_memory
    from ..training.trainer import load_data

    config.validate()
    data = load_data(config, torch.device("cpu"))
    memory = check_training_memory(config, data, "cpu", max_memory)
    model = build_ensemble(config, data)
    reference = build_reference(config, data)
    x = data.train.x[:1]

    def flops(module) -> int:
        module.eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            module(x)
        return int(counter.get_total_flops())

    count = lambda params: sum(p.numel() for p in params)  # noqa: E731
    return {
        "model": config.model, "ensemble": config.ensemble, "members": config.members,
        "input_shape": list(data.input_shape), "classes": data.num_classes,
        "parameters": {"total": count(model.parameters()), "shared": count(model.shared_parameters()),
                       "individual": count(model.individual_parameters()),
                       "reference_network": count(reference.parameters())},
        "flops_per_sample": {"reference_network": flops(reference), "ensemble": flops(model)},
        "memory": memory,
    }


def run_train(args: argparse.Namespace) -> int:
    if args.dry_run:
        if args.resume:
            raise DeepensError("dry-run: nothing is trained; drop --resume")
        if args.estimate is not None and args.estimate < 1:
            raise DeepensError(f"estimate: expected a number of steps >= 1, got {args.estimate}")
        args.out = args.out or Path(".")
        config = config_from_args(args)
        report = dry_run(config, args.max_memory)
        if args.estimate is not None:
            report["estimate"] = Trainer(config, progress=False).estimate(steps=args.estimate)
        if args.json:
            print_json(report)
        else:
            p = report["parameters"]
            print(f"{report['model']} {report['ensemble']} ensemble of {report['members']} on "
                  f"{tuple(report['input_shape'])}: {p['total']:,} parameters ({p['shared']:,} shared, "
                  f"{p['individual']:,} individual; one network {p['reference_network']:,}); forward FLOPs per "
                  f"sample {report['flops_per_sample']['ensemble']:,} "
                  f"(one network {report['flops_per_sample']['reference_network']:,})")
            mem = report["memory"]
            print(f"memory: about {mem['total'] / 2**20:,.1f} MiB (parameters {mem['parameters'] / 2**20:,.1f}, "
                  f"gradients + optimizer {(mem['gradients'] + mem['optimizer']) / 2**20:,.1f}, activations "
                  f"{mem['activations'] / 2**20:,.1f}, data {mem['data'] / 2**20:,.1f} MiB)")
            if "estimate" in report:
                e = report["estimate"]
                print(f"timed {e['timed_steps']} steps on {e['device']}: {e['seconds_per_step'] * 1e3:.1f} ms per "
                      "step, "
                      f"{e['steps']:,} steps; estimated {_duration(e['seconds'])} for the whole training "
                      "(evaluations included)")
        return 0
    if args.estimate is not None:
        raise DeepensError("estimate: only with --dry-run (nothing is timed while training)")
    if args.out is None:
        raise DeepensError("out: give the run directory to write (--out DIR)")
    config = config_from_args(args)
    result = Trainer(config, args.out, progress=False if args.no_progress or args.json else None,
                     max_memory=args.max_memory, threads=args.threads).fit(resume=args.resume,
                                                                           overwrite=args.overwrite)
    metrics = {**result.metrics, "run": str(args.out)}
    if args.json:
        print_json(summary(metrics))
    else:
        print_metrics(metrics)
        print(f"run directory: {args.out} ({metrics.get('seconds', 0):.1f} s)")
    return 0


def add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help=COMMAND_HELP["evaluate"],
        description="Rebuild a run's ensemble from its config and weights and report accuracy, NLL, Brier, ECE, "
        "member correlation, disagreement and the ensemble's gain over its mean member on every split.",
    )
    p.add_argument("run", type=Path, help="run directory written by deepens train")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--ood", action="append", default=[], metavar="SET",
                   help="out-of-distribution inputs to detect (repeatable): noise, shuffled, photos (image data), or "
                        "an image dataset such as cifar10 (CIFAR-100 models) or mnist (FashionMNIST models)")
    p.add_argument("--data-dir", help="folder with the local OOD datasets (default: the run's)")
    p.add_argument("--calibrate", choices=("val", "train"),
                   help="fit a temperature on this split, save it as RUN/temperature.json and report the test "
                        "metrics before and after it")
    p.add_argument("--temperature", choices=("before", "after"), default="before",
                   help="temperature before (PL) or after (Ashukha et al.) averaging the members (default before)")
    p.add_argument("--report", type=Path, help="write report.html with its figures (reliability diagram, "
                   "risk-coverage, OOD score histograms) into this folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated OOD sets (default 0)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run_evaluate)


UNCERTAINTY_ROWS = ("accuracy", "nll", "ece", "adaptive_ece", "classwise_ece", "mce", "brier", "aurc",
                    "total_uncertainty", "aleatoric_uncertainty", "epistemic_uncertainty", "disagreement")


def run_evaluate(args: argparse.Namespace) -> int:
    from ..training.evaluation import evaluate_uncertainty
    from ..training.trainer import load_run

    loaded = load_run(args.run, args.device)  # once, for both evaluations
    metrics = evaluate_run(args.run, device=args.device, loaded=loaded)
    uncertainty = evaluate_uncertainty(args.run, ood=args.ood, calibrate=args.calibrate,
                                       temperature=args.temperature, data_dir=args.data_dir, device=args.device,
                                       seed=args.seed, report=args.report, loaded=loaded)
    if args.json:
        out = summary(metrics)
        if "checkpoint_epoch" in metrics:
            out["checkpoint_epoch"] = metrics["checkpoint_epoch"]
        out["uncertainty"] = {k: v for k, v in uncertainty.items() if k not in ("run", "checkpoint_epoch")}
        print_json(out)
        return 0
    if "checkpoint_epoch" in metrics:
        print(f"unfinished run: the weights of its last checkpoint (epoch {metrics['checkpoint_epoch']})")
    print_metrics(metrics)
    test = uncertainty["test"]
    print("\ntest split: ensemble vs mean member")
    print_table([{"metric": k, "ensemble": test[k], "member": test["member"].get(k)} for k in UNCERTAINTY_ROWS],
                [("metric", "metric", ""), ("ensemble", "ensemble", ".4f"), ("member", "mean member", ".4f")])
    for name, r in uncertainty["ood"].items():
        print(f"OOD {name} ({r['samples']} inputs): AUROC " + ", ".join(
            f"{s} {r[f'{s}_auroc']:.3f}" for s in ("max_probability", "neg_entropy", "neg_mutual_information",
                                                   "energy")) + f"; FPR95 (max probability) "
              f"{r['max_probability_fpr95']:.3f}; epistemic in {r['epistemic_in']:.4f} / out {r['epistemic_out']:.4f}")
    if "calibration" in uncertainty:
        c = uncertainty["calibration"]
        print(f"temperature {c['temperature']:.4g} ({c['mode']} averaging, fitted on {c['split']}; saved in "
              f"{c['saved']}): test NLL {c['nll_before']:.4f} → {c['nll_after']:.4f}, ECE {c['ece_before']:.4f} → "
              f"{c['ece_after']:.4f}")
    if "report" in uncertainty:
        print(f"report: {uncertainty['report']}")
    return 0


def model_families() -> list[dict]:
    """The network families with the meaning of --width, its default, and the parameter count at the default on
    CIFAR-100's shape (3×32×32, 100 classes; an MLP on the flattened image with widths 128, 128)."""
    from ..data.datasets import Dataset, Split
    from ..training.build import build_reference

    rows = []
    for name in MODELS:
        image = name != "mlp"
        shape = (3, 32, 32) if image else (3072,)
        empty = Split(torch.zeros((0,) + shape), torch.zeros(0, dtype=torch.long))
        data = Dataset("cifar100", empty, empty, empty, 100, shape, {})
        net = build_reference(TrainConfig(model=name), data)
        rows.append({"model": name, "description": FAMILIES[name], "default_width": FAMILY_WIDTH[name],
                     "parameters_cifar100": sum(p.numel() for p in net.parameters())})
    return rows


def add_models(sub) -> None:
    p = sub.add_parser("models", help=COMMAND_HELP["models"],
                       description="The reference-network families deepens trains, what --width means for each, "
                       "its default, and the parameter count at the default on CIFAR-100's shape.")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    rows = model_families()
    if args.json:
        print_json(rows)
        return 0
    print_table(rows, [("model", "model", ""), ("default_width", "default width", "g"),
                       ("parameters_cifar100", "parameters (CIFAR-100)", ",d"), ("description", "description", "")])
    return 0
