"""Run the benchmarks and record them: ``make bench`` (or ``python -m benchmarks.run [--device cuda]``).

Writes ``docs/benchmarks.json`` (every number) and the generated section of ``docs/benchmarks.md``
(between the ``BEGIN GENERATED`` / ``END GENERATED`` markers; the prose around it is kept). Ratios
are measured within one run; targets are checked and reported, never asserted in unit tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import deepens
from deepens.io import atomic_write_text

from . import (
    bench_design,
    bench_ensembles,
    bench_kernels,
    bench_metrics,
    bench_ntk_peers,
    bench_peers,
    bench_scaling,
    bench_training,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BEGIN = "<!-- BEGIN GENERATED (benchmarks/run.py) -->"
END = "<!-- END GENERATED -->"


def _environment(device: str) -> dict:
    env = {
        "date": time.strftime("%Y-%m-%d"),
        "deepens": deepens.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def _check(value: float, target: float, kind: str) -> str:
    ok = value >= target if kind == ">=" else value <= target
    return f"{'met' if ok else 'NOT met'} ({kind} {target:g})"


def render(results: dict) -> str:
    env = results["environment"]
    lines = [
        f"Measured {env['date']} with deepens {env['deepens']}, torch {env['torch']}, Python {env['python']}, "
        f"device `{env['device']}`{' (' + env['gpu'] + ')' if 'gpu' in env else ''}, "
        f"{env['cpu_threads']} CPU threads.",
        "",
    ]
    deep = results.get("deep_train_step")
    if deep:
        ms = deep["ms"]
        lines += [
            f"### {deep['name']}",
            "",
            "| implementation | ms / step | deepens speed-up |",
            "| --- | ---: | ---: |",
        ]
        for name in ("loop", "torch.func", "vectorize", "deepens"):
            lines.append(f"| {name} | {ms[name]:.3f} | {ms[name] / ms['deepens']:.2f}× |")
        lines += [
            "",
            f"- vs the Python loop: **{deep['speedup_vs_loop']:.2f}×**, target "
            f"{_check(deep['speedup_vs_loop'], 2.0, '>=')}",
            f"- vs torch.func `stack_module_state` + `vmap`: **{deep['speedup_vs_torch_func']:.2f}×**, target "
            f"{_check(deep['speedup_vs_torch_func'], 1.2, '>=')}",
            "",
        ]
    lld = results.get("lld_overhead")
    if lld:
        lines += [
            f"### {lld['name']}",
            "",
            "| network | single train (ms) | LLD train (ms) | train ratio | single infer (ms) | LLD infer (ms) | "
            "infer ratio |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key, label in (("convnet", "ConvNet 3×32×32 → 100, batch 64"), ("mlp", "MLP 3072-512-512-100, batch 128")):
            r = lld[key]
            lines.append(
                f"| {label} | {r['train_ms']['single']:.1f} | {r['train_ms']['lld']:.1f} | {r['train_ratio']:.3f} | "
                f"{r['infer_ms']['single']:.2f} | {r['infer_ms']['lld']:.2f} | {r['infer_ratio']:.3f} |"
            )
        lines += [
            "",
            f"- ConvNet train ratio {lld['convnet']['train_ratio']:.3f}: target "
            f"{_check(lld['convnet']['train_ratio'], 1.10, '<=')}",
            f"- ConvNet inference ratio {lld['convnet']['infer_ratio']:.3f}: target "
            f"{_check(lld['convnet']['infer_ratio'], 1.05, '<=')}",
            f"- MLP inference ratio {lld['mlp']['infer_ratio']:.3f}: target "
            f"{_check(lld['mlp']['infer_ratio'], 1.05, '<=')}; MLP train ratio {lld['mlp']['train_ratio']:.2f} "
            "(reported: the M·B×N×C heads are a large share of an MLP's work)",
            "",
        ]
    acc = results.get("digits_acceptance")
    if acc:
        rows = acc["rows"]
        deep = rows["deep"]
        lines += [
            f"### {acc['name']}",
            "",
            "| run | command (s) | training (s) | test accuracy | member accuracy | gain | correlation |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key, label in (("deep", "deep ensemble"), ("batch_p0", "BatchEnsemble ShiftedNormal(0)"),
                           ("batch_p0.9", "BatchEnsemble ShiftedNormal(0.9)")):
            r = rows[key]
            gain = r.get("gain", r["test_accuracy"] - r["member_accuracy"])
            corr = r.get("correlation")
            lines.append(
                f"| {label} | {r['seconds']:.1f} | {r['train_seconds']:.1f} | {r['test_accuracy']:.4f} | "
                f"{r['member_accuracy']:.4f} | {gain:+.4f} | {'—' if corr is None else format(corr, '.3f')} |"
            )
        lines += [
            "",
            f"- deep ensemble: {deep['test_accuracy']:.2%} test accuracy in {deep['seconds']:.1f} s for the whole "
            f"command: accuracy target {_check(deep['test_accuracy'], 0.97, '>=')}, time target "
            f"{_check(deep['seconds'], 120.0, '<=')}",
            "",
        ]
    ntk = results.get("empirical_ntk")
    if ntk:
        sec = ntk["seconds"]
        lines += [
            f"### {ntk['name']}",
            "",
            "| implementation | seconds | speed-up vs loop | max relative difference |",
            "| --- | ---: | ---: | ---: |",
            f"| per-sample explicit-Jacobian loop | {sec['explicit_loop']:.2f} | 1.00× | — |",
            f"| deepens, Jacobian method (torch.func) | {sec['deepens_jacobian']:.2f} | "
            f"{ntk['speedup_jacobian']:.2f}× | {ntk['max_rel_diff_jacobian']:.1e} |",
            f"| deepens, structured method (default here) | {sec['deepens_structured']:.3f} | "
            f"{ntk['speedup_structured']:.0f}× | {ntk['max_rel_diff_structured']:.1e} |",
            "",
            f"- default (auto → structured) speed-up {ntk['speedup_structured']:.0f}×: target "
            f"{_check(ntk['speedup_structured'], 5.0, '>=')}",
            "",
        ]
    thr = results.get("cifar_throughput")
    if thr:
        lines += [f"### {thr['name']} ({thr['device']})", "",
                  "| network | M | deepens img/s | deepens bf16 img/s | loop over members img/s | M processes img/s "
                  "| BatchEnsemble img/s | deepens / loop | deepens / processes |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in thr["rows"]:
            be = f"{r['batch_ensemble_images_per_s']:.0f}" if "batch_ensemble_images_per_s" in r else "—"
            procs = f"{r['processes_images_per_s']:.0f}" if "processes_images_per_s" in r else "—"
            vs_procs = f"{r['speedup_vs_processes']:.2f}×" if "speedup_vs_processes" in r else "—"
            lines.append(f"| {r['family']} | {r['members']} | {r['deepens_images_per_s']:.0f} | "
                         f"{r['deepens_bf16_images_per_s']:.0f} | {r['loop_images_per_s']:.0f} | {procs} | {be} | "
                         f"{r['speedup_vs_loop']:.2f}× | {vs_procs} |")
        many = [r["speedup_vs_loop"] for r in thr["rows"] if r["members"] > 1]
        lines += ["", "M processes: M copies of a one-network training started at once (spawned interpreters, the "
                  "cores split between them), timed from a common start barrier to the last one's end. Target on a "
                  "GPU: a DeepEnsemble of M small CIFAR networks ≥ 3× the loop (not measured: no GPU lent). On the "
                  "CPU a convolutional DeepEnsemble runs its members one at a time (`conv_strategy` auto): "
                  + (f"{min(many):.2f}–{max(many):.2f}× the loop for M > 1 here." if many else ""), ""]
    cnn = results.get("cnn_kernels")
    if cnn:
        lines += [f"### {cnn['name']}", "",
                  f"Memory budget {cnn['memory_budget']}, {cnn['threads']} threads, each size in a fresh process "
                  "(peak resident memory of that process; neural-tangents in its own interpreter, `nt.batch` blocks "
                  "of 64, compilation excluded).", "",
                  "| N | deepens s | deepens peak GiB | neural-tangents s | NT peak GiB | NT / deepens time "
                  "| max rel diff |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in cnn["rows"]:
            mine, theirs = row["deepens"], row.get("neural_tangents") or {}
            nt_s = f"{theirs['seconds']:.1f}" if "seconds" in theirs else "—"
            nt_m = f"{theirs['peak_rss_gib']:.2f}" if "seconds" in theirs else "—"
            ratio = f"{row['speedup_vs_nt']:.2f}×" if "speedup_vs_nt" in row else "—"
            diff = f"{row['max_rel_diff']:.1e}" if "max_rel_diff" in row else "—"
            lines.append(f"| {row['n']} | {mine['seconds']:.1f} | {mine['peak_rss_gib']:.2f} | {nt_s} | {nt_m} | "
                         f"{ratio} | {diff} |")
        lines += ["", "Targets: not slower than neural-tangents on CPU; N = 512 within 8 GiB. The max rel diff is on "
                  "the diagonal x = x′ of NT's batched blocks (its arccos rounding at ρ = 1 − 1e-16, see "
                  "docs/kernels.md): off the diagonal the two agree to 3.2e-15 (N = 128, batched), and everywhere to "
                  "3.8e-15 unbatched (N = 32).", ""]
    ana = results.get("analytic_kernels")
    if ana:
        sec = ana["seconds"]
        lines += [
            f"### {ana['name']}",
            "",
            "| case | seconds | target |",
            "| --- | ---: | --- |",
            f"| ReLU, u = ShiftedNormal(0.3), v = N(0, 1), 2000 inputs | {sec['relu_modulated_2000']:.2f} | "
            f"{_check(sec['relu_modulated_2000'], 2.0, '<=')} |",
            f"| tanh (quadrature), 500 inputs | {sec['tanh_500']:.2f} | {_check(sec['tanh_500'], 5.0, '<=')} |",
            f"| tanh with u = ShiftedNormal(0.3), v = ShiftedNormal(0.5), 200 inputs | "
            f"{sec['tanh_modulated_200']:.2f} | (reported) |",
            "",
        ]
    thr_policy = results.get("thread_policy")
    if thr_policy:
        lines += [f"### {thr_policy['name']}", "",
                  f"{thr_policy['cores']} usable cores; the loaded runs compete with "
                  f"{thr_policy['competing_processes']} busy processes (1-minute load average "
                  f"{thr_policy['load_average']:.1f} when they start).", "",
                  "| --threads | idle: s (threads used) | loaded: s (threads used) |", "| --- | ---: | ---: |"]
        for label in thr_policy["idle"]:
            i, b = thr_policy["idle"][label], thr_policy["loaded"][label]
            lines.append(f"| {label} | {i['seconds']:.1f} ({i['threads']}) | {b['seconds']:.1f} ({b['threads']}) |")
        lines.append("")
    met = results.get("metrics_speed")
    if met:
        lines += [f"### {met['name']}", "",
                  "| points (OOD) | shared metrics: deepens s | torchmetrics loop s | deepens / loop speed | with the"
                  " probabilities (s) | largest difference | all metrics of `ensemble_metrics` (count): deepens s |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for c in met["cases"]:
            with_p = c.get("speedup_shared_with_probabilities")
            lines.append(f"| {c['points']:,} ({c['ood_points']:,}) | {c['seconds_shared_deepens']:.2f} | "
                         f"{c['seconds_shared_torchmetrics_loop']:.2f} | {c['speedup_shared']:.2f}× | "
                         + (f"{with_p:.2f}× ({c['seconds_probabilities']:.2f}) | " if with_p else "— | ")
                         + f"{c['max_abs_diff']:.1e} | {c['seconds_all_deepens']:.1f} ({c['metrics_all']}) |")
        big = max(met["cases"], key=lambda c: c["points"])
        lines += ["", f"- target ≥ 10× at {big['points']:,} points: {big['speedup_shared']:.1f}×, "
                  f"{_check(big['speedup_shared'], 10.0, '>=')} ({met['threads']} threads; median of alternating "
                  "repeats after a warm-up). The shared metrics are accuracy, ECE, MCE and the max-probability "
                  "score's AUROC, AUPR-in, AUPR-out and FPR95 (the loop: `multiclass_accuracy`, "
                  "`multiclass_calibration_error` l1 and max, `binary_auroc`, `binary_average_precision` twice, "
                  "`binary_roc`). Both sides start from the same ensemble probabilities (the members' softmax and "
                  "mean, computed once, timed apart: the 'with the probabilities' column adds it to both). deepens "
                  "sorts the in- and out-of-distribution scores of each row apart (NumPy's sort, one block of rows "
                  "per thread), reads the curves off binary-search counts with closed-form sums over untied scores "
                  "and corrections on the tied ones, and takes one maximum for the top-1 metrics. The largest "
                  "difference is torchmetrics' float32 accumulation (deepens sums in float64; it matches "
                  "scikit-learn to 1e-12 in the tests). deepens' `ensemble_metrics` computes 60 metrics (ensemble "
                  "and mean member, five OOD scores, adaptive and classwise ECE, AURC, the decomposition) in "
                  "float64.", ""]
    cal = results.get("cnll_speed")
    if cal:
        sec = cal["seconds_per_ensemble"]
        lines += [
            f"### {cal['name']}",
            "",
            "| implementation | s / ensemble | total for all ensembles (s) |",
            "| --- | ---: | ---: |",
            f"| SciPy per fold: 9-point grid + bounded Brent (reference, {cal['reference_sample']} ensembles timed) | "
            f"{sec['scipy_reference']:.3f} | {cal['seconds_total']['scipy_reference_extrapolated']:.0f} "
            "(extrapolated) |",
            f"| deepens `calibrated_nll` (all ensembles at once) | {sec['deepens']:.4f} | "
            f"{cal['seconds_total']['deepens']:.1f} |",
            "",
            f"- speed-up **{cal['speedup']:.1f}×**: target {_check(cal['speedup'], 20.0, '>=')}; largest difference "
            f"from the reference {cal['max_abs_diff']:.1e}: target {_check(cal['max_abs_diff'], 1e-4, '<=')}",
            "",
        ]
    mem = results.get("batch_memory")
    if mem:
        rows = mem["rows"]
        lines += [
            f"### {mem['name']}",
            "",
            "| model | parameters | × single | parameter MiB | peak extra MiB during one train step |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for key, label in (("single", "single ConvNet"), ("batch", "BatchEnsemble"), ("deep", "DeepEnsemble")):
            r = rows[key]
            lines.append(
                f"| {label} | {r['params']:,} | {r['params'] / rows['single']['params']:.3f} | "
                f"{r['param_mib']:.1f} | {r['step_peak_mib']:.0f} |"
            )
        lines.append("")
    col = results.get("collegial_step")
    if col:
        ms = col["ms"]
        lines += [
            f"### {col['name']}",
            "",
            "| implementation | ms / step | deepens speed-up |",
            "| --- | ---: | ---: |",
            f"| Python loop over the m networks | {ms['loop']:.1f} | {col['speedup_vs_loop']:.2f}× |",
            f"| block-diagonal layers as grouped 1×1 convolutions | {ms['grouped_conv']:.1f} | "
            f"{col['speedup_vs_grouped_conv']:.2f}× |",
            f"| deepens `CollegialMLP` (batched matmuls) | {ms['deepens']:.1f} | 1.00× |",
            "",
            f"- vs the loop: **{col['speedup_vs_loop']:.1f}×**, target {_check(col['speedup_vs_loop'], 2.0, '>=')}; "
            f"same outputs to {col['max_abs_diff_vs_loop']:.1e}",
            "",
        ]
    st = results.get("ntk_statistics")
    if st:
        lines += [
            f"### {st['name']}",
            "",
            "| member | width | draws | deepens (s) | one network per draw (s / draw) | speed-up |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key, label in (("mlp", "MLP 784 → 6 layers"), ("bottleneck", "bottleneck 256 → n → n → 256")):
            r = st["rows"][key]
            lines.append(f"| {label} | {r['width']} | {r['draws']} | {r['seconds']:.2f} | "
                         f"{r['loop_seconds_per_draw'] * 1000:.1f} ms | {r['speedup']:.0f}× |")
        mlp = st["rows"]["mlp"]
        lines += [
            "",
            f"- {mlp['draws']} MLP draws in {mlp['seconds']:.1f} s: target {_check(mlp['seconds'], 10.0, '<=')}",
            "",
        ]
    peers = results.get("peers")
    if peers:
        lines += bench_peers.render(peers)
    if results.get("ntk_peers"):
        lines += bench_ntk_peers.render(results["ntk_peers"])
    return "\n".join(lines)


def write_docs(results: dict) -> None:
    DOCS.mkdir(exist_ok=True)
    atomic_write_text(DOCS / "benchmarks.json", json.dumps(results, indent=2) + "\n")
    path = DOCS / "benchmarks.md"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    atomic_write_text(path, f"{head}{BEGIN}\n{render(results)}\n{END}{tail}")


def _sections(device: str) -> list[tuple[str, str, object]]:
    """(--only name, progress label, a function returning the results it records) for every benchmark."""
    cpu = device == "cpu"
    table = [
        ("deep", "DeepEnsemble train step", lambda: {"deep_train_step": bench_ensembles.deep_train_step(device)}),
        ("lld", "LastLayerDropout overhead", lambda: {"lld_overhead": bench_ensembles.lld_overhead(device)}),
        ("ntk", "empirical NTK", lambda: {"empirical_ntk": bench_kernels.empirical_ntk()}),
        ("analytic", "analytic kernels", lambda: {"analytic_kernels": bench_kernels.analytic_kernels()}),
        ("cnn", "CNN infinite-width kernels (NT_PYTHON=... adds neural-tangents)",
         lambda: {"cnn_kernels": bench_kernels.cnn_kernels()}),
        ("throughput", "CIFAR network training throughput",
         lambda: {"cifar_throughput": bench_training.cifar_throughput(device)}),
        ("cnll", "CNLL speed", lambda: {"cnll_speed": bench_scaling.cnll_speed()}),
        ("metrics", "uncertainty metrics", lambda: {"metrics_speed": bench_metrics.metrics_speed()}),
        ("training", "deepens train on digits",
         lambda: {"digits_acceptance": bench_training.digits_acceptance(device)}),
        ("threads", "thread policy under a competing load", lambda: {"thread_policy": bench_training.thread_policy()}),
        ("memory", "BatchEnsemble memory", lambda: {"batch_memory": bench_ensembles.batch_memory()}),
        ("peers", "against torch-uncertainty, torchensemble, torch.func (in .venv-peers or PEERS_PYTHON)",
         lambda: {k: v for k, v in {"peers": bench_peers.run_in_peers_env()}.items() if v is not None}),
        ("ntk-peers", "empirical NTK against neural-tangents (NT_PYTHON=... adds it)",
         lambda: {"ntk_peers": bench_ntk_peers.ntk_peers()}),
        ("collegial", "collegial ensembles", lambda: {"collegial_step": bench_design.collegial_train_step(device),
                                                     "ntk_statistics": bench_design.ntk_statistics_speed()}),
    ]
    return [row for row in table if cpu or row[0] != "memory"]  # peak-memory tracing is CPU only


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--only", default="", help="comma-separated subset: deep,lld,ntk,analytic,cnn,throughput,cnll,"
                        "training,threads,metrics,memory,peers,ntk-peers,collegial (others: as recorded)")
    parser.add_argument("--no-write", action="store_true", help="print results without updating docs/")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    results: dict = {"environment": _environment(args.device)}
    for name, label, run in _sections(args.device):
        if not only or name in only:
            print(f"{label} ...", flush=True)
            results.update(run())
    recorded = DOCS / "benchmarks.json"
    if only and args.device == "cpu" and recorded.exists():  # a subset refreshes its sections only
        results = {**json.loads(recorded.read_text()), **results}
    print(render(results))
    if not args.no_write:
        if args.device != "cpu":
            out = DOCS / f"benchmarks-{args.device.replace(':', '')}.json"
            atomic_write_text(out, json.dumps(results, indent=2) + "\n")
            print(f"wrote {out}")
        else:
            write_docs(results)
            print(f"wrote {DOCS / 'benchmarks.md'} and {DOCS / 'benchmarks.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
