"""``deepens ntk kernel | regime | empirical``: infinite-width kernels, regime verdicts, empirical NTKs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ..errors import DeepensError, check_choice, check_int
from ..kernels import (
    Network,
    cross_to_same_ratio,
    ensemble_ntk,
    gradient_cosines,
    infinite_width_kernels,
    interaction_ratio,
    loss_ntk,
    regime,
)
from ..training.config import TrainConfig, parse_modulation
from .common import print_json, print_table, split_ints
from .main import COMMAND_HELP


def _load_inputs(path: Path) -> np.ndarray:
    if path.suffix != ".npy":
        raise DeepensError(f"inputs: expected a .npy file of shape (N, d), (N, C, L) or (N, C, H, W), got {path.name}")
    try:
        x = np.load(path, allow_pickle=False)  # never unpickle user files
    except (OSError, ValueError) as exc:
        raise DeepensError(f"inputs: cannot read {path} as a numeric .npy array ({exc})") from None
    if x.ndim not in (2, 3, 4) or not np.issubdtype(x.dtype, np.number):
        raise DeepensError(f"inputs: expected a numeric array of shape (N, d), (N, C, L) or (N, C, H, W), got "
                           f"{x.dtype} {x.shape}")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(1)
    if bad.any():
        raise DeepensError(f"inputs: {path} has non-finite values (NaN or inf), first in row {int(np.argmax(bad))}")
    return x


def _network_args(p: argparse.ArgumentParser, depth_default: int | None) -> None:
    p.add_argument("--depth", type=int, default=depth_default,
                   help="an MLP written by hand: number of hidden layers (dense + activation), then a dense readout")
    p.add_argument("--model", help="the network as deepens trains it: training options as JSON or a .json file, e.g. "
                   "'{\"model\": \"convnet\", \"pool\": \"avg\", \"width\": 0.25, \"ensemble\": \"batch\"}' "
                   "(its kernels are read from the very module)")
    p.add_argument("--run", type=Path, help="a run directory written by deepens train: the kernels of its module")
    p.add_argument("--activation", default="relu", help="relu, erf, identity (closed form); tanh, gelu, "
                   "sigmoid, silu, softplus, elu, leaky_relu (quadrature)")
    p.add_argument("--weight-std", type=float, default=2**0.5, help="σ_w of hidden layers (default √2)")
    p.add_argument("--bias-std", type=float, default=0.0, help="σ_b of hidden layers (default 0)")
    p.add_argument("--readout-std", type=float, default=1.0)
    p.add_argument("--readout-bias-std", type=float, default=0.0)
    p.add_argument("--modulation", help="modulations present: u=DIST,v=DIST (u post-, v pre-activation; a kind "
                   "not named is absent); one DIST sets both")
    p.add_argument("--layers", help="hidden layers carrying the modulations (0-based, negative from the end; "
                   "default all)")
    p.add_argument("--frozen", action="store_true", help="modulations are not trained (no individual NTK part)")
    p.add_argument("--members", type=int, default=None, help="M, for the γ(M)/M weight of the common part")
    p.add_argument("--gamma", default="M", help="γ(M): M (default, weight 1), 1 or a number")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _module_from_args(args: argparse.Namespace):
    """(the ensemble module, its data) for --model / --run, else None."""
    from ..training.build import build_ensemble
    from ..training.trainer import load_data, load_run, resolve_device

    if args.run is None and args.model is None:
        return None
    if args.run is not None and args.model is not None:
        raise DeepensError("model: give --model or --run, not both")
    if args.depth is not None:
        raise DeepensError("depth: --depth writes an MLP by hand; drop it with --model / --run")
    if args.run is not None:
        _, data, model = load_run(args.run, "cpu")
        return model, data
    config = _model_from_spec(args.model)
    config.device = "cpu"
    config.validate()
    data = load_data(config, resolve_device("cpu"))
    return build_ensemble(config, data), data


def network_from_args(args: argparse.Namespace) -> Network:
    built = _module_from_args(args)
    if built is not None:
        return Network.from_module(built[0])
    if args.depth is None:
        raise DeepensError("depth: give --depth (an MLP written by hand), --model or --run")
    spec = parse_modulation(args.modulation) if args.modulation else None
    if isinstance(spec, dict):
        u, v = spec.get("u"), spec.get("v")
    else:
        u = v = spec
    layers = split_ints("layers", args.layers) if args.layers else None
    return Network.mlp(check_int("depth", args.depth, minimum=1), args.activation, args.weight_std, args.bias_std,
                       args.readout_std, args.readout_bias_std, u=u, v=v, layers=layers, trainable=not args.frozen)


def _gamma(args: argparse.Namespace):
    if str(args.gamma).strip().upper() == "M":
        return "M"
    try:
        value = float(args.gamma)
    except ValueError:
        raise DeepensError(f"gamma: expected a number, 1 or M, got {args.gamma!r}") from None
    if args.members is None:
        raise DeepensError("members: --gamma other than M needs --members to form γ(M)/M")
    return value


def run_kernel(args: argparse.Namespace) -> int:
    check_choice("members-kernel", args.members_kernel, ("same", "cross"))
    x1 = _load_inputs(args.inputs)
    x2 = _load_inputs(args.inputs2) if args.inputs2 else None
    network = network_from_args(args)
    k = infinite_width_kernels(x1, x2, network, members=args.members, gamma=_gamma(args), memory=args.memory)
    modulated = network.modulated
    if args.members_kernel == "same":
        result = {"nngp": k.nngp_same, "ntk": k.ntk_same}
        if modulated:
            result.update({"ntk_common": k.ntk_same_weighted_common, "ntk_individual": k.ntk_same_individual})
    else:
        result = {"nngp": k.nngp_cross, "ntk": k.ntk_cross}
        if modulated:
            result.update({"ntk_common": k.ntk_cross, "ntk_individual": np.zeros_like(k.ntk_cross)})
    if args.out:
        np.savez(args.out, **result)
    if args.json:
        print_json({key: value.tolist() for key, value in result.items()})
    else:
        print(f"{args.members_kernel}-member kernels, {result['nngp'].shape[0]}×{result['nngp'].shape[1]} inputs")
        for key, value in result.items():
            print(f"{key}:\n{np.array2string(value, precision=5, max_line_width=120, threshold=200)}")
    return 0


def run_regime(args: argparse.Namespace) -> int:
    x = _load_inputs(args.inputs) if args.inputs else None
    built = _module_from_args(args)
    if built is not None:
        network = Network.from_module(built[0])
        if x is None and network.spatial_dims is not None:  # probe images: the first validation images
            split = built[1].val if len(built[1].val) >= 2 else built[1].test
            x = split.x[:4].double().numpy()
    else:
        network = network_from_args(args)
    report = regime(network, x, members=args.members, gamma=_gamma(args))
    if args.json:
        print_json(report)
        return 0
    print_table(report["layers"], [
        ("layer", "layer", ""), ("where", "kernel of", ""), ("nngp_same", "NNGP same", ".5g"),
        ("nngp_cross", "NNGP cross", ".5g"), ("nngp_ratio", "ratio", ".4f"), ("ntk_same", "NTK same", ".5g"),
        ("ntk_cross", "NTK cross", ".5g"), ("ntk_ratio", "ratio", ".4f"),
    ])
    print(f"verdict: {report['verdict']} — {report['reason']}")
    return 0


def _model_from_spec(spec: str) -> TrainConfig:
    text = Path(spec).read_text() if spec.endswith(".json") and Path(spec).exists() else spec
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeepensError(f"model: expected training options as JSON (e.g. '{{\"ensemble\": \"batch\", "
                           f"\"members\": 8}}') or a .json file, got {spec!r} ({exc.msg})") from None
    return TrainConfig.from_dict(options)


def empirical_report(model, x: torch.Tensor, y: torch.Tensor, max_m: int = 8) -> dict:
    """Interaction metrics (EE App. D.2) and gradient cosines (EE Fig. 6) of an ensemble on a batch."""
    from ..ensembles.base import Ensemble

    if not isinstance(model, Ensemble):
        raise DeepensError("model: expected a deepens ensemble")
    m = model.members
    out: dict = {"members": m, "inputs": int(x.shape[0]), "kind": type(model).__name__}
    trace = ensemble_ntk(model, x).total()
    eye = torch.eye(m, dtype=torch.bool)
    out["ntk"] = {"same_mean_abs": float(trace[eye].abs().mean()),
                  "cross_mean_abs": float(trace[~eye].abs().mean()) if m > 1 else None,
                  "cross_to_same": cross_to_same_ratio(trace)}
    for kind in ("nll", "target"):
        k = loss_ntk(model, x, y, kind=kind).total()
        out[kind] = {"cross_to_same": cross_to_same_ratio(k),
                     "eq62": {str(s): interaction_ratio(k, s) for s in range(1, min(m - 1, max_m) + 1)}}
    if any(True for _ in model.shared_parameters()) and m > 1:
        cos = gradient_cosines(model, x, y)
        off = cos[~eye]
        out["gradient_cosine"] = {"mean": float(off.mean()), "std": float(off.std()) if off.numel() > 1 else 0.0}
    else:
        out["gradient_cosine"] = None
    return out


def run_empirical(args: argparse.Namespace) -> int:
    from ..training.build import build_ensemble
    from ..training.trainer import load_data, load_run, resolve_device

    if (args.run is None) == (args.model is None):
        raise DeepensError("run: give a run directory or --model SPEC (one of them)")
    n = check_int("inputs", args.inputs, minimum=2)
    if args.run is not None:
        config, data, model = load_run(args.run, args.device)
    else:
        config = _model_from_spec(args.model)
        config.device = args.device
        config.validate()
        data = load_data(config, resolve_device(args.device))
        model = build_ensemble(config, data).to(resolve_device(args.device))
    split = data.val if len(data.val) >= n else data.test
    x, y = split.x[:n], split.y[:n]
    if args.float64:
        model = model.double()
        x = x.double()
    report = empirical_report(model, x, y)
    report["source"] = str(args.run) if args.run else "initialised from --model"
    if args.json:
        print_json(report)
        return 0
    print(f"{report['kind']} with M = {report['members']} on {report['inputs']} inputs ({report['source']})")
    print(f"NTK (traced): mean |same| {report['ntk']['same_mean_abs']:.5g}, mean |cross| "
          f"{report['ntk']['cross_mean_abs'] if report['ntk']['cross_mean_abs'] is not None else float('nan'):.5g},"
          f" cross²/same² {report['ntk']['cross_to_same']:.4g}")
    for kind in ("nll", "target"):
        eq62 = ", ".join(f"m={k}: {v:.4g}" for k, v in report[kind]["eq62"].items())
        print(f"{kind} NTK: cross²/same² {report[kind]['cross_to_same']:.4g}; EE Eq. (62): {eq62}")
    gc = report["gradient_cosine"]
    print("gradient cosine (shared parameters): " + (f"{gc['mean']:.4g} ± {gc['std']:.2g}" if gc else "—"))
    return 0


def add_ntk(sub) -> None:
    p = sub.add_parser("ntk", help=COMMAND_HELP["ntk"],
                       description="Infinite-width kernels of (embedded-ensemble) MLPs and CNNs, the independent / "
                       "collective regime verdict, and empirical NTK metrics of an initialised or trained ensemble.")
    inner = p.add_subparsers(dest="ntk_command", metavar="KERNEL_COMMAND", parser_class=type(p))
    inner.required = True

    k = inner.add_parser("kernel", help="analytic NNGP and NTK on given inputs",
                         description="Analytic infinite-width NNGP and NTK (the conventions of neural-tangents' stax) "
                         "of an MLP written by hand (--depth, optionally with EE modulations), or of a dense or "
                         "convolutional ensemble as deepens trains it (--model, --run), modulations included.")
    k.add_argument("--inputs", type=Path, required=True, help="inputs X.npy: (N, d) vectors, (N, C, L) or (N, C, H, W)")
    k.add_argument("--inputs2", type=Path, help="second inputs X2.npy (M, ...): kernels between X and X2")
    k.add_argument("--memory", default="2GiB", help="working-memory budget of the kernel computation (default 2GiB)")
    k.add_argument("--members-kernel", default="same", help="same (α = β, default) or cross (α ≠ β)")
    k.add_argument("--out", type=Path, help="also save the arrays to this .npz file")
    _network_args(k, None)
    k.set_defaults(func=run_kernel)

    r = inner.add_parser("regime", help="independent or collective, with per-layer cross/same ratios",
                         description="The regime of an embedded ensemble in the infinite-width limit (EE Theorems "
                         "1-2): per layer, the same- and cross-member NNGP and NTK and their ratio, and the verdict.")
    r.add_argument("--inputs", type=Path, help="probe inputs X.npy (default: two unit-norm inputs at 60°)")
    _network_args(r, None)
    r.set_defaults(func=run_regime)

    e = inner.add_parser("empirical", help="interaction metrics and gradient cosines of an ensemble",
                         description="Empirical NTK metrics of EE App. D.2 (cross²/same² of the traced, nll and "
                         "target NTKs; Eq. 62) and the gradient cosines of EE Fig. 6, for a trained run directory or "
                         "a freshly initialised ensemble (--model).")
    e.add_argument("run", nargs="?", type=Path, help="run directory written by deepens train")
    e.add_argument("--model", help="training options as JSON, e.g. '{\"ensemble\": \"batch\", \"members\": 8}'")
    e.add_argument("--inputs", type=int, default=32, help="number of validation inputs (default 32)")
    e.add_argument("--float64", action="store_true", help="compute in float64")
    e.add_argument("--device", default="cpu")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=run_empirical)
