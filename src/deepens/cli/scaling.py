"""``deepens calibrate`` and ``deepens powerlaw fit | pool | split``."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from ..errors import DeepensError, check_int
from ..runs.rundir import RunDir
from ..scaling import (
    WidthFamily,
    budget_envelope,
    calibrated_nll,
    fit_pool_curve,
    fit_power_law,
    memory_split_table,
    pool_curve,
    predict_from_prefix,
    predict_memory_split,
)
from .common import print_json, print_table, split_ints
from .main import COMMAND_HELP

LOGIT_HELP = ".npy or .safetensors array (members, samples, classes), or a run directory"


def _read_array(path: Path, what: str, key: str | None = None) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)  # never unpickle user files
        except (OSError, ValueError) as exc:
            raise DeepensError(f"{what}: cannot read {path} as a numeric .npy array ({exc})") from None
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise DeepensError(f"{what}: cannot read {path} ({exc})") from None
        for name in ([key] if key else []) + [what, "logits" if what == "logits" else "labels"]:
            if name in tensors:
                return tensors[name]
        if len(tensors) == 1:
            return next(iter(tensors.values()))
        raise DeepensError(f"{what}: {path} holds {sorted(tensors)}; expected a tensor named {what!r}")
    raise DeepensError(f"{what}: expected a .npy or .safetensors file, got {path.name}")


def load_logits(source: Path, labels: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Member logits (M, N, C) and labels (N,) from a run directory or array files."""
    if source.is_dir():
        tensors = RunDir(source).read_logits()
        if f"{split}.logits" not in tensors:
            raise DeepensError(f"split: run {source} has no {split} logits (it has {sorted(tensors)})")
        z, y = tensors[f"{split}.logits"].numpy(), tensors[f"{split}.labels"].numpy()
        if labels is not None:
            y = _read_array(labels, "labels")
    else:
        if not source.exists():
            raise DeepensError(f"logits: {source} does not exist")
        z = _read_array(source, "logits", f"{split}.logits")
        if labels is None:
            if source.suffix == ".safetensors":
                y = _read_array(source, "labels", f"{split}.labels")
            else:
                raise DeepensError("labels: pass --labels LABELS.npy with the class of every sample")
        else:
            y = _read_array(labels, "labels")
    if z.ndim == 2:
        z = z[None]
    if not np.issubdtype(np.asarray(z).dtype, np.floating):
        raise DeepensError(f"logits: expected floating-point values, got {np.asarray(z).dtype}")
    z = np.asarray(z)
    bad = np.argwhere(~np.isfinite(z))
    if bad.size:
        member, sample = int(bad[0][0]), int(bad[0][1])
        raise DeepensError(f"logits: {source} holds non-finite values ({int(len(bad))} of them), the first at member "
                           f"{member}, sample {sample}: {z[member, sample, int(bad[0][2])]}")
    return z, np.asarray(y)


def run_calibrate(args: argparse.Namespace) -> int:
    z, y = load_logits(args.logits, args.labels, args.split)
    result = calibrated_nll(z, y, temperature=args.temperature, cv=args.cv, repeats=args.repeats, seed=args.seed)
    result.update({"members": int(z.shape[0]), "samples": int(z.shape[1]), "classes": int(z.shape[2])})
    if args.json:
        print_json(result)
    else:
        print(f"{result['members']} member(s), {result['samples']} samples, {result['classes']} classes; temperature "
              f"{args.temperature} averaging, cross-validation {args.cv}")
        for key in ("nll", "cnll", "temperature", "accuracy_uncalibrated", "accuracy", "brier", "ece"):
            print(f"  {key:22s} {result[key]:.6f}")
        if result["temperature_at_bound"] or result["folds_at_bound"]:
            whole = "yes" if result["temperature_at_bound"] else "no"
            print(f"  on a bound of τ ∈ [0.01, 100]: the whole-set temperature {whole}, {result['folds_at_bound']} "
                  f"of {len(result['cnll_folds'])} folds (a half without errors fits τ → 0)")
    return 0


def _read_csv(path: Path) -> tuple[list[float], list[float]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise DeepensError(f"data: cannot read {path} ({exc.strerror or exc})") from None
    rows = [r for r in csv.reader(text.splitlines()) if r and any(cell.strip() for cell in r)]
    if rows and not _is_number(rows[0][0]):
        header = [h.strip().lower() for h in rows[0]]
        if header[:2] != ["n", "value"]:
            raise DeepensError(f"data: expected the columns n,value, got {','.join(rows[0])}")
        rows = rows[1:]
    try:
        m = [float(r[0]) for r in rows]
        y = [float(r[1]) for r in rows]
    except (ValueError, IndexError):
        raise DeepensError(f"data: every row of {path} must be two numbers n,value") from None
    return m, y


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def run_fit(args: argparse.Namespace) -> int:
    m, y = _read_csv(args.data)
    if args.predict_from is not None:
        result = predict_from_prefix(m, y, check_int("predict-from", args.predict_from, minimum=3))
        law = result["fit"]
    else:
        law = fit_power_law(m, y).to_dict()
        result = {"fit": law}
    if args.plot:
        from ..scaling.plots import plot_power_law

        plot_power_law({args.data.stem: (m, y, law)}, args.plot, ylabel="value", xlabel="m")
    if args.json:
        print_json({**law, **({k: v for k, v in result.items() if k != "fit"})})
    else:
        print(f"c + b·m^a with a = {law['a']:.6g}, b = {law['b']:.6g}, c = {law['c']:.6g}; RMSE log2 "
              f"{law['rmse_log2']:.3g}, RMSE {law['rmse']:.3g} ({law['points']} points)")
        for row in result.get("predictions", []):
            print(f"  m = {row['m']:g}: predicted {row['predicted']:.6g}, measured {row['measured']:.6g}, "
                  f"error {row['error']:+.3g}")
    return 0


def _network_size(train: dict, data: dict | None) -> tuple[int, dict]:
    """Parameters of one network of a run, from its config.json (no data needed)."""
    from ..training.build import build_reference
    from ..training.config import TrainConfig

    config = TrainConfig.from_dict(train)
    data = data or {}
    if "input_shape" not in data or "num_classes" not in data:
        raise DeepensError("run: config.json lacks the data summary (input_shape, num_classes)")

    class _Shape:  # what build_reference reads of a dataset
        input_shape = tuple(data["input_shape"])
        num_classes = int(data["num_classes"])

    net = build_reference(config, _Shape())
    return sum(p.numel() for p in net.parameters()), {"model": config.model, "widths": config.widths,
                                                        "width": config.width, "bias": config.bias,
                                                        "input_shape": list(data["input_shape"]),
                                                        "num_classes": int(data["num_classes"])}


def pools_from_runs(runs: list[Path], split: str, by: str) -> dict[float, dict]:
    """Networks of independently trained runs grouped by size (parameters per network)."""
    pools: dict[float, dict] = {}
    labels_ref = None
    for run in runs:
        record = RunDir(run).read_config()
        train = record.get("train", {})
        if train.get("ensemble") not in ("deep", "vectorized"):
            raise DeepensError(f"runs: {run} trained a {train.get('ensemble')} ensemble; a pool is made of "
                               "independently trained networks (deep or vectorized ensembles)")
        size, family = _network_size(train, record.get("data"))
        z, y = load_logits(run, None, split)
        if labels_ref is None:
            labels_ref = y
        elif y.shape != labels_ref.shape or not np.array_equal(y, labels_ref):
            raise DeepensError(f"runs: {run} was evaluated on other {split} samples than {runs[0]}; pools must "
                               "share the evaluation set (same dataset and data split: set data_seed)")
        key = float(size) if by == "width" else 0.0
        pool = pools.setdefault(key, {"size": float(size), "logits": [], "runs": [], "family": family})
        if pool["size"] != size:
            raise DeepensError(f"runs: --by none puts networks of different sizes ({int(pool['size'])} and {size}) "
                               "in one pool")
        pool["logits"].append(z)
        pool["runs"].append(str(run))
    for pool in pools.values():
        pool["logits"] = np.concatenate(pool["logits"])
        pool["labels"] = labels_ref
    return pools


def store_runs(store: Path, sweep: str | None = None) -> list[Path]:
    """The finished runs of a sweep store (one sweep or all) that a pool can take: deep and vectorized
    ensembles, whose members are independently trained networks."""
    from ..sweeps import Store

    index = Store(store)
    chosen = [index.run_dir(t.id) for t in index.tasks(sweep, statuses=("done",))
              if t.config.get("ensemble") in ("deep", "vectorized")]
    if not chosen:
        where = f"sweep {sweep!r} of {store}" if sweep else str(store)
        raise DeepensError(f"store: {where} has no finished deep or vectorized ensemble to pool")
    return chosen


def _curves(args: argparse.Namespace) -> tuple[dict[float, dict], dict[float, list[dict]]]:
    runs = list(args.runs)
    if args.store is not None:
        runs += store_runs(args.store, args.sweep)
    elif args.sweep is not None:
        raise DeepensError("sweep: --sweep selects a sweep of a store; add --store DIR")
    if not runs:
        raise DeepensError("runs: give run directories or --store DIR")
    pools = pools_from_runs(runs, args.split, args.by)
    sizes = split_ints("sizes", args.sizes) if args.sizes else None
    curves = {}
    for pool in pools.values():
        ell = pool["logits"].shape[0]
        chosen = [s for s in (sizes or range(1, ell + 1)) if s <= ell]
        curves[pool["size"]] = pool_curve(pool["logits"], pool["labels"], sizes=chosen, seed=args.seed,
                                          temperature=args.temperature, repeats=args.repeats,
                                          dtype=torch.float32)
    return pools, curves


def run_pool(args: argparse.Namespace) -> int:
    pools, curves = _curves(args)
    out = {"pools": []}
    for size, rows in sorted(curves.items()):
        entry = {"size": size, "networks": int(pools[size]["logits"].shape[0]), "runs": pools[size]["runs"],
                 "rows": rows}
        try:
            entry.update(fit_pool_curve(rows, predict_k=args.predict_from))
        except DeepensError as exc:
            entry["fit_error"] = str(exc)
        out["pools"].append(entry)
    if args.plot:
        from ..scaling.plots import plot_budget, plot_plane, plot_power_law

        args.plot.mkdir(parents=True, exist_ok=True)
        series = {f"{int(p['size']):,} params": ([r["n"] for r in p["rows"] if r["reliable"]],
                                                 [r["cnll_mean"] for r in p["rows"] if r["reliable"]], p.get("fit"))
                  for p in out["pools"]}
        out["plots"] = [str(plot_power_law(series, args.plot / "cnll_power_laws.png")),
                        str(plot_plane(curves, args.plot / "plane.png"))]
        if len(curves) > 1:
            out["plots"].append(str(plot_budget(budget_envelope(curves), args.plot / "budget.png")))
    if args.json:
        print_json(out)
        return 0
    for p in out["pools"]:
        print(f"\n{int(p['size']):,} parameters per network, {p['networks']} networks")
        print_table(p["rows"], [("n", "n", ""), ("ensembles", "ensembles", ""), ("cnll_mean", "CNLL", ".5f"),
                                ("cnll_std", "± std", ".5f"), ("nll_mean", "NLL", ".5f"),
                                ("accuracy_mean", "accuracy", ".4f"), ("reliable", "fit", "")])
        if "fit" in p:
            f = p["fit"]
            print(f"power law: a = {f['a']:.4f}, b = {f['b']:.4f}, c = {f['c']:.4f}; RMSE log2 {f['rmse_log2']:.3g}, "
                  f"RMSE {f['rmse']:.3g}")
            if p.get("prediction"):
                errs = ", ".join(f"n={r['m']:g}: {r['error']:+.4f}" for r in p["prediction"]["predictions"])
                print(f"prediction from n <= {args.predict_from}: {errs}")
        else:
            print(f"no power law: {p.get('fit_error')}")
    return 0


def _family(pools: dict[float, dict]) -> WidthFamily:
    info = next(iter(pools.values()))["family"]
    if info["model"] == "mlp":
        return WidthFamily.mlp(int(np.prod(info["input_shape"])), info["widths"], info["num_classes"], info["bias"])
    from ..models import ConvNet

    channels, classes = info["input_shape"][0], info["num_classes"]
    return WidthFamily(lambda k: float(sum(p.numel() for p in ConvNet(channels, classes, width=max(k, 1e-3))
                                           .parameters())))


def run_split(args: argparse.Namespace) -> int:
    pools, curves = _curves(args)
    family = _family(pools)
    result = {"budget": args.budget}
    try:
        result["predicted"] = predict_memory_split(curves, args.budget, family, fit_k=args.predict_from,
                                                   max_members=args.max_members)
    except DeepensError as exc:
        result["predicted"] = None
        result["prediction_error"] = str(exc)
    result["measured"] = memory_split_table(curves, args.budget, tolerance=args.tolerance)
    envelope = budget_envelope(curves)
    result["envelope"] = envelope
    if args.plot:
        from ..scaling.plots import plot_budget

        args.plot.mkdir(parents=True, exist_ok=True)
        result["plots"] = [str(plot_budget(envelope, args.plot / "budget.png"))]
    if args.json:
        print_json(result)
        return 0
    print(f"memory budget {args.budget:,.0f} parameters")
    pred = result["predicted"]
    if pred and pred["best"]:
        b, r = pred["best"], pred["runner_up"]
        print(f"predicted optimal split: n = {b['n']} networks of {b['size']:,.0f} parameters (width ×"
              f"{b['width_multiplier']:.3g}), CNLL {b['predicted']:.5f}")
        if r:
            print(f"runner-up: n = {r['n']} (width ×{r['width_multiplier']:.3g}), CNLL {r['predicted']:.5f}")
    else:
        print(f"no prediction: {result.get('prediction_error', 'no split inside the measured sizes')}")
    measured = result["measured"]
    if measured["splits"]:
        print_table(measured["splits"], [("n", "n", ""), ("size", "params/net", ",.0f"), ("budget", "n·s", ",.0f"),
                                         ("value", "CNLL", ".5f")])
        verdict = {True: "yes", False: "no", None: "undetermined (no single network of this budget measured)"}
        print(f"measured best: n = {measured['best']['n']}; Memory Split Advantage: {verdict[measured['msa']]}")
    else:
        print(f"no measured split within {args.tolerance:.0%} of the budget")
    return 0


def _pool_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", type=Path, help="run directories of deep (or vectorized) ensembles")
    p.add_argument("--store", type=Path, help="a sweep store: pool its finished deep / vectorized runs")
    p.add_argument("--sweep", help="with --store: only this sweep's runs (default every sweep of the store)")
    p.add_argument("--by", default="width", choices=("width", "none"),
                   help="group networks by size (width, default) or put all in one pool (none)")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--sizes", help="ensemble sizes n, e.g. 1,2,3,4,8 (default 1..ℓ)")
    p.add_argument("--temperature", default="before", choices=("before", "after"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--predict-from", type=int, default=4, help="fit on n <= K to predict larger n (default 4)")
    p.add_argument("--plot", type=Path, help="directory for PNG figures")
    p.add_argument("--json", action="store_true")


def add_scaling(sub) -> None:
    c = sub.add_parser("calibrate", help=COMMAND_HELP["calibrate"],
                       description="NLL, CNLL with test-time cross-validation, temperature, and calibrated accuracy, "
                       "Brier and ECE of an ensemble's member logits (power-laws paper §3-4).")
    c.add_argument("logits", type=Path, help=LOGIT_HELP)
    c.add_argument("--labels", type=Path, help="labels .npy (N,) (not needed for run directories)")
    c.add_argument("--split", default="test", choices=("val", "test"), help="which logits of a run directory")
    c.add_argument("--temperature", default="before", choices=("before", "after"),
                   help="apply τ to each member before averaging (default) or to the average")
    c.add_argument("--cv", default="halves", choices=("halves", "none"),
                   help="test-time cross-validation (halves, default) or fit and evaluate on the whole set")
    c.add_argument("--repeats", type=int, default=5, help="cross-validation repeats R (2R folds; default 5)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_calibrate)

    p = sub.add_parser("powerlaw", help=COMMAND_HELP["powerlaw"],
                       description="Power laws c + b·m^a (power-laws paper Eq. 6), pools of trained networks, and the "
                       "optimal memory split of a parameter budget.")
    inner = p.add_subparsers(dest="powerlaw_command", metavar="POWERLAW_COMMAND", parser_class=type(p))
    inner.required = True
    f = inner.add_parser("fit", help="fit c + b·m^a to a CSV of n,value",
                         description="Fit a power law to the points of a CSV file with columns n,value.")
    f.add_argument("data", type=Path, help="CSV with columns n,value (header optional)")
    f.add_argument("--predict-from", type=int, help="fit on n <= K only and predict the rest")
    f.add_argument("--plot", type=Path, help="PNG file for the fit")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=run_fit)
    pool = inner.add_parser("pool", help="CNLL_n tables, power laws and predictions of pools of networks",
                            description="Build ensembles of every size from pools of trained networks (one pool per "
                            "network size), fit CNLL_n with a power law and predict large n from n <= 4.")
    _pool_args(pool)
    pool.set_defaults(func=run_pool)
    split = inner.add_parser("split", help="predicted and measured optimal memory split of a budget",
                             description="The predicted optimal memory split of a parameter budget (power laws per "
                             "network size), the measured splits and the Memory Split Advantage verdict.")
    _pool_args(split)
    split.add_argument("--budget", type=float, required=True, help="total parameter count B")
    split.add_argument("--tolerance", type=float, default=0.1, help="measured splits with n·s within this "
                       "fraction of B (default 0.1)")
    split.add_argument("--max-members", type=int, default=64)
    split.set_defaults(func=run_split)
